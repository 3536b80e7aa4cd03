"""MoPoE-VAE: a mixture over all modality subsets of product-of-experts posteriors (Eq. 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..distributions import (
    all_subsets,
    gather_components,
    kl_standard_normal,
    reparameterize,
    stratified_choice,
    subset_poe,
)
from .base import (
    ObjectiveConfig,
    ObjectiveContext,
    ObjectiveOutput,
    combine,
    register_objective,
)


@dataclass
class MoPoEConfig(ObjectiveConfig):
    """Settings of MoPoE-VAE.

    Attributes:
        prior_expert: include ``p(z)`` in every subset's PoE (the reference code adds it to the
            full set only).
        estimator: ``"sampled"`` (reference): each example draws z from one subset, the batch
            split evenly over subsets, one decode per modality; ``"stratified"``: every subset's
            ELBO for every example, exact but ``2^M - 1`` times the decoding.
    """

    prior_expert: bool = True
    estimator: Literal["sampled", "stratified"] = "sampled"


@register_objective("mopoe", MoPoEConfig, "mixture of products of experts over all subsets")
def mopoe_loss(cfg: MoPoEConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    """Negative MoPoE objective (Eq. 3) with uniform weights over the non-empty subsets::

        L = mean_S [ E_{q_PoE(z|X_S)}[sum_m log p(x_m|z)] - beta * KL(q_PoE(z|X_S) || p(z)) ]

    Subsets are restricted to modalities present in the example. The KL is exact for every subset;
    the reconstruction uses one subset per example (``"sampled"``) or all (``"stratified"``).
    """
    subsets = all_subsets(ctx.num_modalities, device=ctx.mu.device)  # [K, M]
    valid = (subsets @ (1.0 - ctx.mask).T) == 0  # [K, B]: subset within the present modalities
    n_valid = valid.sum(0)
    mu, logvar = subset_poe(ctx.mu, ctx.logvar, subsets, ctx.mask, cfg.prior_weight)  # [K, B, D]
    kl = (kl_standard_normal(mu, logvar) * valid).sum(0) / n_valid
    weighted = {"kl/subsets||prior": (cfg.beta, kl)}
    if cfg.estimator == "sampled":
        chosen = stratified_choice(valid)
        z = reparameterize(gather_components(mu, chosen), gather_components(logvar, chosen))[None]
    else:
        z = reparameterize(mu, logvar)
    for m, name in enumerate(ctx.modality_names):
        log_lik = ctx.log_likelihood(m, z)
        if cfg.estimator == "stratified":
            log_lik = (log_lik * valid).sum(0, keepdim=True) / n_valid
        weighted[f"rec/subsets/{name}"] = (1.0, -log_lik[0])
    return combine(weighted)
