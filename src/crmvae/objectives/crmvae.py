"""CRMVAE: coordination-based multimodal ELBO with unimodal reconstructions (the paper's Eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..distributions import kl_diag_gaussians, kl_standard_normal, reparameterize
from .base import (
    ObjectiveConfig,
    ObjectiveContext,
    ObjectiveOutput,
    combine,
    register_objective,
)


@dataclass
class CRMVAEConfig(ObjectiveConfig):
    """Settings of CRMVAE.

    Attributes:
        prior_expert: include ``p(z)`` as an expert in every PoE (paper); False as in MultiVae.
        recon_coef: ``"pi"`` weighs both reconstruction halves by ``pi = 1/(M+1)`` (Appendix H,
            the experiments); ``"half"`` by 1/2 (Eq. 8 as printed). MultiVae's 1/(2(M+1)) is
            ``"pi"`` with ``beta`` doubled, up to an overall factor 1/2.
        kl_target: KL towards the unimodal ``"posterior"`` ``q(z|x_m)`` (the PoE with the prior
            expert when ``prior_expert``; paper) or the raw encoder ``"expert"`` ``q_m(z|x_m)``.
    """

    prior_expert: bool = True
    recon_coef: Literal["pi", "half"] = "pi"
    kl_target: Literal["posterior", "expert"] = "posterior"


@register_objective("crmvae", CRMVAEConfig, "coordination + unimodal reconstruction (the paper)")
def crmvae_loss(cfg: CRMVAEConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    """Negative CRMVAE objective (Eq. 8 with pi weights, Appendix H)::

        L = c * sum_m E_{q(z|X)}[log p(x_m|z)] + c * sum_m E_{q(z|x_m)}[log p(x_m|z)]
            - beta * sum_{m=0..M} pi * KL(q(z|X) || q_m),    q_0 = p(z),  pi = 1/(M+1)

    with ``c = pi`` or ``1/2``. Each modality is reconstructed from the joint sample and from its
    own unimodal sample only (never cross-modally); both are decoded in one call.
    """
    m_count = ctx.num_modalities
    pi = 1.0 / (m_count + 1)
    coef = pi if cfg.recon_coef == "pi" else 0.5
    mu, logvar = ctx.joint_and_unimodal(cfg.prior_weight)  # [1 + M, B, D]
    z = reparameterize(mu, logvar)
    if cfg.kl_target == "posterior":
        target_mu, target_logvar = mu[1:], logvar[1:]
    else:
        target_mu, target_logvar = ctx.mu.float(), ctx.logvar.float()
    kl_to_unimodal = kl_diag_gaussians(mu[:1], logvar[:1], target_mu, target_logvar)  # [M, B]

    weighted = {"kl/joint||prior": (cfg.beta * pi, kl_standard_normal(mu[0], logvar[0]))}
    for m, name in enumerate(ctx.modality_names):
        log_lik = ctx.log_likelihood(m, torch.stack([z[0], z[1 + m]]))  # [2, B]
        weighted[f"rec/joint/{name}"] = (coef, -log_lik[0])
        weighted[f"rec/self/{name}"] = (coef, -log_lik[1])
        weighted[f"kl/joint||{name}"] = (cfg.beta * pi, kl_to_unimodal[m] * ctx.mask[:, m])
    return combine(weighted)
