"""Importance-sampled log-likelihoods of a trained model: ``log p(X)`` and ``log p(x_m | X_S)``.

For a non-empty subset S of the modalities, K latents ``z_k ~ q(z | X_S)`` (the model's subset
posterior: product or mixture of experts) weight the model's joint density
``p(X_S, z) = p(z) prod_{j in S} p(x_j | z)`` with ``p(z) = N(0, I)`` and the decoders'
likelihoods ``p(x_j | z)`` (without the training loss's modality weights)::

    log w_k = log p(z_k) + sum_{j in S} log p(x_j | z_k) - log q(z_k | X_S)
    log p(X_S) ~ log (1/K) sum_k w_k                                      (1)

(1) is the importance-weighted bound (Burda et al. 2016, eq. 8): its expectation never exceeds
``log p(X_S)`` and rises to it as K grows. The joint ``log p(X)`` is (1) with S = every modality.
The conditional of a target m not in S is the ratio of two such estimates over the same latents
(self-normalised importance sampling)::

    log p(x_m | X_S) = log p(x_m, X_S) - log p(X_S)
                     ~ log sum_k w_k p(x_m | z_k) - log sum_k w_k          (2)

(2) is consistent: it converges to the model's ``log p(x_m | X_S)`` as K grows (for finite K it
is biased, and not a bound). The plain mean ``log (1/K) sum_k p(x_m | z_k)`` would instead estimate
``log E_{q(z | X_S)} p(x_m | z)``, the likelihood under the encoder's posterior, which differs
from the model's conditional unless ``q(z | X_S)`` is exact.

Every figure is in nats per example. Latents are drawn from a caller's ``torch.Generator``, K in
chunks (``chunk`` latents per example and decoder call), so memory does not grow with K.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.base import Batch
from ..distributions import all_subsets, log_mixture_density, log_normal, log_standard_normal
from ..model import MultimodalVAE
from .latents import SubsetPosteriors, mean_by_size, subset_names, subset_posteriors


def sample_posterior(mu: Tensor, logvar: Tensor, weights: Tensor | None, k: int, generator: torch.Generator) -> Tensor:
    """K reparameterised draws ``[K, B, D]`` from ``q(z | X_S)``: ``z = mu + exp(logvar / 2) * eps``
    for a Gaussian (``mu``, ``logvar`` ``[B, D]``); a mixture of experts (``[M, B, D]``, weights
    ``[B, M]``, each row with a positive entry) first draws each latent's expert from the weights."""
    if weights is None:
        mu, logvar = mu.expand(k, *mu.shape), logvar.expand(k, *logvar.shape)
    else:
        expert = torch.multinomial(weights.float(), k, replacement=True, generator=generator).T  # [K, B]
        rows = torch.arange(mu.shape[1], device=mu.device)
        mu, logvar = mu[expert, rows], logvar[expert, rows]
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


def log_posterior(z: Tensor, mu: Tensor, logvar: Tensor, weights: Tensor | None) -> Tensor:
    """``log q(z | X_S)`` ``[K, B]`` of latents ``[K, B, D]``: ``log N(z; mu, var)`` for a Gaussian,
    ``log sum_m w_m N(z; mu_m, var_m)`` for a mixture of experts."""
    if weights is None:
        return log_normal(z, mu, logvar)
    return log_mixture_density(z, mu, logvar, weights)


def log_weight_sums(log_px: Tensor, log_prior: Tensor, log_q: Tensor, subset: Tensor) -> tuple[Tensor, Tensor]:
    """Sums over K latents of the importance weights of (1) and (2), in log space.

    Args:
        log_px: ``log p(x_j | z_k)`` ``[M, K, B]`` of every modality j.
        log_prior: ``log p(z_k)`` ``[K, B]``.
        log_q: ``log q(z_k | X_S)`` ``[K, B]``.
        subset: 0/1 ``[M]``, the modalities of S.
    Returns:
        ``log sum_k w_k`` ``[B]`` and ``log sum_k w_k p(x_m | z_k)`` ``[M, B]`` for every m.
    """
    log_w = log_px[subset.bool()].sum(0) + log_prior - log_q
    return torch.logsumexp(log_w, 0), torch.logsumexp(log_w + log_px, 1)


@dataclass
class LogLikelihoods:
    """Per-example estimates for the non-empty subsets ``subsets`` ``[P, M]`` (rows of
    :func:`crmvae.distributions.all_subsets`, the last one every modality): ``marginal`` ``[P, N]``
    is (1), ``log p(X_S)``; ``conditional`` ``[P, M, N]`` is (2), ``log p(x_m | X_S)``, NaN where m
    is in S."""

    subsets: Tensor
    marginal: Tensor
    conditional: Tensor

    @property
    def joint(self) -> Tensor:
        """``log p(X)`` ``[N]``: the marginal of the full set."""
        return self.marginal[-1]


@torch.no_grad()
def importance_log_likelihoods(
    model: MultimodalVAE, batches: Iterable[Batch], k: int, chunk: int, generator: torch.Generator
) -> LogLikelihoods:
    """(1) and (2) with K = ``k`` latents from each subset posterior, for every example of
    ``batches`` (every modality present), decoding ``chunk`` latents per example at a time."""
    subsets = all_subsets(len(model.modality_names))
    device = next(model.parameters()).device
    marginal, conditional = [], []
    for batch in batches:
        batch = batch.to(device)
        posts = subset_posteriors(model, batch.data, batch.mask, subsets)
        per_subset = [_subset_estimates(model, batch.data, *_subset_posterior(posts, p), subset, k, chunk, generator)
                      for p, subset in enumerate(subsets.to(device))]
        marginal.append(torch.stack([m for m, _ in per_subset]).cpu())
        conditional.append(torch.stack([c for _, c in per_subset]).cpu())
    return LogLikelihoods(subsets, torch.cat(marginal, -1), torch.cat(conditional, -1))


def _subset_posterior(posts: SubsetPosteriors, p: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Subset p's ``q(z | X_S)``: a Gaussian ``[B, D]``, or the experts ``[M, B, D]`` and their weights ``[B, M]``."""
    if posts.weights is None:
        return posts.mu[p], posts.logvar[p], None
    return posts.mu, posts.logvar, posts.weights[p]


def _subset_estimates(
    model: MultimodalVAE, data: dict[str, Tensor], mu: Tensor, logvar: Tensor, weights: Tensor | None,
    subset: Tensor, k: int, chunk: int, generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """(1) ``[B]`` and (2) ``[M, B]`` (NaN for m in S) of one subset posterior, K in chunks."""
    sums = []
    for start in range(0, k, chunk):
        z = sample_posterior(mu, logvar, weights, min(chunk, k - start), generator)
        log_px = torch.stack([model.likelihoods[m].log_prob(model.decode_params(m, z), data[m]) for m in model.modality_names])
        sums.append(log_weight_sums(log_px, log_standard_normal(z), log_posterior(z, mu, logvar, weights), subset))
    log_sum = torch.logsumexp(torch.stack([s for s, _ in sums]), 0)
    given = torch.logsumexp(torch.stack([t for _, t in sums]), 0) - log_sum
    return log_sum - math.log(k), torch.where(subset.bool()[:, None], math.nan, given)


def likelihood_summary(estimates: LogLikelihoods, names: Sequence[str]) -> dict[str, Any]:
    """Means over examples, in nats: ``{"joint": log p(X), "conditional": {"table": {m: {S:
    log p(x_m | X_S)}}, "by_size": {|S|: mean over the subsets of that size and their targets}}}``,
    S over the non-empty proper subsets."""
    keys = subset_names(estimates.subsets, names)
    means = estimates.conditional.mean(-1)
    table = {
        m: {keys[p]: float(means[p, j]) for p in range(len(keys) - 1) if not estimates.subsets[p, j]}
        for j, m in enumerate(names)
    }
    return {
        "joint": float(estimates.joint.mean()),
        "conditional": {"table": table, "by_size": mean_by_size((s, v) for row in table.values() for s, v in row.items())},
    }
