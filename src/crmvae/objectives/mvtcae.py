"""MVTCAE: the coordination-based multimodal ELBO of Lemma 1 (Eq. 5) and its reference-code form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..distributions import kl_diag_gaussians, kl_standard_normal, reparameterize
from ..errors import ConfigError
from .base import (
    ObjectiveConfig,
    ObjectiveContext,
    ObjectiveOutput,
    combine,
    register_objective,
)


@dataclass
class MVTCAEConfig(ObjectiveConfig):
    """Settings of MVTCAE.

    Attributes:
        variant: ``"paper"`` (Eq. 5, every KL weighted pi = 1/(M+1)) or ``"original"`` (the
            reference code: reconstruction ``(M - alpha)/M``, KL to each expert ``alpha/M``, KL to
            the prior ``1 - alpha``).
        prior_expert: include ``p(z)`` in the PoEs; default True for ``"paper"``, False for
            ``"original"`` (the reference code omits it).
        alpha: the reference code's ``tc_ratio`` (``"original"`` only); default ``M/(M+1)``, which
            makes every KL weight ``1/(M+1)``.
        recon_scale: extra factor on the reconstruction (Appendix H's "MVTCAE (rescale)", whose
            printed factor reads as 2*pi or pi/2; give either value explicitly).
    """

    variant: Literal["paper", "original"] = "paper"
    prior_expert: bool | None = None
    alpha: float | None = None
    recon_scale: float = 1.0

    @property
    def prior_weight(self) -> float:
        use_prior = self.variant == "paper" if self.prior_expert is None else self.prior_expert
        return 1.0 if use_prior else 0.0

    def validate(self, num_modalities: int) -> None:
        super().validate(num_modalities)
        if self.alpha is not None and self.variant != "original":
            raise ConfigError("mvtcae: alpha applies to variant='original' only")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"mvtcae: alpha must lie in [0, 1], got {self.alpha}")


@register_objective("mvtcae", MVTCAEConfig, "coordination-based ELBO, joint reconstruction only")
def mvtcae_loss(cfg: MVTCAEConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    """Negative MVTCAE objective.

    ``"paper"`` (Eq. 5)::

        L = s * sum_m E_{q(z|X)}[log p(x_m|z)] - beta * sum_{m=0..M} pi * KL(q(z|X) || q_m)

    ``"original"``::

        L = s * (M - a)/M * sum_m E[log p(x_m|z)]
            - beta * [ a/M * sum_m KL(q(z|X) || q_m) + (1 - a) * KL(q(z|X) || p) ]

    with ``q_0 = p(z)``, ``pi = 1/(M+1)``, ``s = recon_scale``, ``a = alpha``.
    """
    m_count = ctx.num_modalities
    if cfg.variant == "paper":
        rec_coef, kl_expert_coef, kl_prior_coef = 1.0, 1.0 / (m_count + 1), 1.0 / (m_count + 1)
    else:
        alpha = m_count / (m_count + 1) if cfg.alpha is None else cfg.alpha
        rec_coef, kl_expert_coef, kl_prior_coef = (m_count - alpha) / m_count, alpha / m_count, 1.0 - alpha
    mu, logvar = ctx.joint_and_unimodal(cfg.prior_weight)
    z = reparameterize(mu[0], logvar[0])
    kl_to_unimodal = kl_diag_gaussians(mu[:1], logvar[:1], mu[1:], logvar[1:])  # [M, B]

    weighted = {"kl/joint||prior": (cfg.beta * kl_prior_coef, kl_standard_normal(mu[0], logvar[0]))}
    for m, name in enumerate(ctx.modality_names):
        weighted[f"rec/joint/{name}"] = (cfg.recon_scale * rec_coef, -ctx.log_likelihood(m, z[None])[0])
        weighted[f"kl/joint||{name}"] = (cfg.beta * kl_expert_coef, kl_to_unimodal[m] * ctx.mask[:, m])
    return combine(weighted)
