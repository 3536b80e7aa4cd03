"""Diagonal Gaussians, products and mixtures of experts: pure functions over tensors.

A diagonal Gaussian is a pair ``(mu, logvar)`` of tensors of the same shape whose last dimension
is the latent dimension D. Expert stacks have shape ``[M, B, D]`` (modality, example, latent);
expert weights/masks have shape ``[..., B, M]``. Every density and divergence is summed over D.
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_like(x: Tensor) -> Tensor:
    """``eps ~ N(0, I)`` of ``x``'s shape, dtype and device, always contiguous.

    Not ``torch.randn_like``: it keeps ``x``'s strides, so the draws depend on the memory layout,
    and filling a strided tensor takes a slow serial path (the ``[1 + M, B, D]`` posteriors of a
    CRMVAE step come out of the PoE transposed).
    """
    return torch.randn(x.shape, dtype=x.dtype, device=x.device)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """One reparameterised sample ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``."""
    return mu + standard_normal_like(mu) * torch.exp(0.5 * logvar)


def kl_diag_gaussians(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """Closed-form ``KL(N(mu_q, var_q) || N(mu_p, var_p))`` summed over the last dimension.

    ``0.5 * sum(logvar_p - logvar_q + (var_q + (mu_q - mu_p)^2) / var_p - 1)``.
    """
    return 0.5 * torch.sum(
        logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).square()) * torch.exp(-logvar_p) - 1.0,
        dim=-1,
    )


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Closed-form ``KL(N(mu, var) || N(0, I)) = 0.5 * sum(var + mu^2 - 1 - logvar)``."""
    return 0.5 * torch.sum(torch.exp(logvar) + mu.square() - 1.0 - logvar, dim=-1)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; mu, diag(exp(logvar)))`` summed over the last dimension."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu).square() * torch.exp(-logvar), dim=-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over the last dimension."""
    return -0.5 * torch.sum(LOG_2PI + z.square(), dim=-1)


def product_of_experts(
    mu: Tensor, logvar: Tensor, weights: Tensor, prior_weight: float = 1.0
) -> tuple[Tensor, Tensor]:
    """(Weighted) product of Gaussian experts, for any number of expert subsets at once.

    With expert precisions ``T_m = exp(-logvar_m)`` and weights ``w_m`` (a 0/1 presence or
    subset mask for a plain PoE, ``pi_m`` for MMJSD's dynamic prior)::

        T = prior_weight * 1 + sum_m w_m T_m
        mu_poe = (sum_m w_m T_m mu_m) / T,   logvar_poe = -log T

    ``prior_weight = 1`` includes the prior expert ``N(0, I)``; ``0`` omits it. A combination
    with zero total precision (no prior expert and no present expert) returns ``N(0, I)``.

    Args:
        mu: expert means ``[M, B, D]``.
        logvar: expert log-variances ``[M, B, D]``.
        weights: ``[..., B, M]``; e.g. ``[K, B, M]`` for K subsets (a (K x M) subset matrix times
            the presence mask), computed as one batched matmul over the experts.
    Returns:
        ``(mu, logvar)`` of shape ``[..., B, D]``.
    """
    # At least float32 even under autocast: precisions are sums of exponentials.
    dtype = torch.promote_types(mu.dtype, torch.float32)
    mu, logvar, weights = mu.to(dtype), logvar.to(dtype), weights.to(dtype)
    precision = torch.exp(-logvar)  # [M, B, D]
    weighted_precision = torch.einsum("...bm,mbd->...bd", weights, precision)
    weighted_mean = torch.einsum("...bm,mbd->...bd", weights, precision * mu)
    total = weighted_precision + prior_weight
    if prior_weight == 0.0:
        total = torch.where(total > 0, total, torch.ones_like(total))
    return weighted_mean / total, -torch.log(total)


@lru_cache(maxsize=16)
def _subset_rows(num_modalities: int) -> tuple[tuple[int, ...], ...]:
    return tuple(
        subset
        for size in range(1, num_modalities + 1)
        for subset in combinations(range(num_modalities), size)
    )


def all_subsets(num_modalities: int, device: torch.device | str | None = None) -> Tensor:
    """The ``(2^M - 1) x M`` 0/1 matrix of non-empty subsets, by size then lexicographically."""
    rows = _subset_rows(num_modalities)
    matrix = torch.zeros(len(rows), num_modalities, device=device)
    for i, subset in enumerate(rows):
        matrix[i, list(subset)] = 1.0
    return matrix


def subset_poe(
    mu: Tensor, logvar: Tensor, subsets: Tensor, mask: Tensor, prior_weight: float = 1.0
) -> tuple[Tensor, Tensor]:
    """PoE posterior of every subset in ``subsets`` ``[K, M]`` for every example.

    Experts absent from an example (``mask[b, m] = 0``) contribute no precision, so the posterior of
    subset ``S`` for example ``b`` is the PoE over ``S ∩ present(b)``. Returns ``[K, B, D]``.
    """
    return product_of_experts(mu, logvar, subsets[:, None, :] * mask[None, :, :], prior_weight)


def stratified_choice(valid: Tensor) -> Tensor:
    """Split a batch evenly over components: example ``b`` takes its ``(b mod n_b)``-th valid one.

    Args:
        valid: ``[K, B]`` bool/0-1, which components are allowed for each example (at least one).
    Returns:
        ``[B]`` int64 component index per example.
    """
    valid = valid.bool()
    counts = valid.sum(0)
    target = torch.arange(valid.shape[1], device=valid.device) % counts.clamp_min(1)
    rank = valid.long().cumsum(0) - 1
    return (valid & (rank == target[None, :])).long().argmax(0)


def gather_components(x: Tensor, component: Tensor) -> Tensor:
    """``x[component[b], b]`` for every b: select one ``[K, B, D]`` component row per example."""
    return x[component, torch.arange(x.shape[1], device=x.device)]


def sample_component(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one component per example from unnormalised weights ``[B, M]``; returns ``[B]``."""
    return torch.multinomial(weights.float(), 1, generator=generator).squeeze(1)


def sample_mixture(mu: Tensor, logvar: Tensor, weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One reparameterised sample per row of a mixture of ``[M, B, D]`` Gaussian experts.

    ``weights`` ``[..., B, M]`` (unnormalised, 0 for absent experts; leading dims index several
    mixtures over the same experts). Each row draws its component ``m`` from its weights, then
    ``z = mu_m + exp(logvar_m / 2) * eps``; a row without any weight draws from the prior
    ``N(0, I)`` (``mu = 0``, ``logvar = 0``), with the same single noise draw. Returns ``[..., B, D]``.
    """
    m, b = mu.shape[:2]
    empty = weights.sum(-1) == 0
    weights = torch.where(empty[..., None], torch.ones_like(weights), weights)
    component = sample_component(weights.reshape(-1, m), generator).reshape(empty.shape)
    rows = torch.arange(b, device=mu.device).expand(empty.shape)
    keep = ~empty[..., None]
    return reparameterize(torch.where(keep, mu[component, rows], 0.0), torch.where(keep, logvar[component, rows], 0.0))


def log_mixture_density(z: Tensor, mu: Tensor, logvar: Tensor, weights: Tensor) -> Tensor:
    """``log sum_m w_m N(z; mu_m, var_m)`` for a mixture of ``[M, B, D]`` experts.

    Args:
        z: ``[..., B, D]`` points.
        weights: ``[B, M]`` mixture weights summing to 1 over present experts (0 for absent ones).
    Returns:
        ``[..., B]``.
    """
    lead = z.dim() - 2
    shape = (mu.shape[0],) + (1,) * lead + mu.shape[1:]
    comp = log_normal(z.unsqueeze(0), mu.reshape(shape), logvar.reshape(shape))  # [M, ..., B]
    log_w = torch.log(weights.T.clamp_min(1e-30)).reshape((mu.shape[0],) + (1,) * lead + (-1,))
    log_w = torch.where(weights.T.reshape(log_w.shape) > 0, log_w, torch.full_like(log_w, -math.inf))
    return torch.logsumexp(comp + log_w, dim=0)
