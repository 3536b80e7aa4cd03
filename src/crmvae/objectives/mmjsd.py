"""MMJSD and MMJSD-PoE: the multimodal Jensen-Shannon divergence with a dynamic prior."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..distributions import (
    gather_components,
    kl_diag_gaussians,
    product_of_experts,
    reparameterize,
    stratified_choice,
    subset_poe,
)
from .base import (
    Aggregation,
    ObjectiveConfig,
    ObjectiveContext,
    ObjectiveOutput,
    combine,
    register_objective,
)


@dataclass
class MMJSDConfig(ObjectiveConfig):
    """Settings of MMJSD.

    Attributes:
        joint: ``"moe"``: ``q(z|X)`` is the mixture of the unimodal experts (MMJSD), sampled
            stratified (the batch split evenly over the present experts); ``"poe"``: the PoE
            (MMJSD-PoE, the paper's coordination-based variant).
        prior_expert: include ``p(z)`` in the PoE joint (``joint="poe"`` only).
    """

    joint: Literal["moe", "poe"] = "moe"
    prior_expert: bool = True

    @property
    def inference(self) -> Aggregation:
        return "mixture" if self.joint == "moe" else "poe"


@dataclass
class MMJSDPoEConfig(MMJSDConfig):
    """MMJSD-PoE: :class:`MMJSDConfig` with a product-of-experts joint posterior."""

    joint: Literal["moe", "poe"] = "poe"


def mmjsd_loss(cfg: MMJSDConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    """Negative MMJSD objective::

        L = E_{q(z|X)}[sum_m log p(x_m|z)] - beta * sum_{m=0..M} pi * KL(q_m(z|x_m) || f(z|X))

    with ``q_0 = p(z)``, ``pi = 1/(M+1)`` and the dynamic prior ``f`` the weighted PoE of
    ``{p(z), q_1..q_M}`` with weights pi (absent experts get weight 0).
    """
    m_count = ctx.num_modalities
    pi = 1.0 / (m_count + 1)
    mu, logvar = ctx.mu.float(), ctx.logvar.float()
    f_mu, f_logvar = product_of_experts(mu, logvar, pi * ctx.mask, prior_weight=pi)  # [B, D]
    if cfg.joint == "moe":
        component = stratified_choice(ctx.mask.T)
        z = reparameterize(gather_components(mu, component), gather_components(logvar, component))
    else:
        full = torch.ones(1, m_count, device=mu.device)
        joint_mu, joint_logvar = subset_poe(mu, logvar, full, ctx.mask, cfg.prior_weight)
        z = reparameterize(joint_mu[0], joint_logvar[0])
    zeros = torch.zeros_like(f_mu)
    weighted = {"kl/prior||dynamic": (cfg.beta * pi, kl_diag_gaussians(zeros, zeros, f_mu, f_logvar))}
    kl_experts = kl_diag_gaussians(mu, logvar, f_mu[None], f_logvar[None])  # [M, B]
    for m, name in enumerate(ctx.modality_names):
        weighted[f"rec/joint/{name}"] = (1.0, -ctx.log_likelihood(m, z[None])[0])
        weighted[f"kl/{name}||dynamic"] = (cfg.beta * pi, kl_experts[m] * ctx.mask[:, m])
    return combine(weighted)


register_objective("mmjsd", MMJSDConfig, "Jensen-Shannon divergence, mixture-of-experts joint")(mmjsd_loss)
register_objective("mmjsd_poe", MMJSDPoEConfig, "Jensen-Shannon divergence, product-of-experts joint")(mmjsd_loss)
