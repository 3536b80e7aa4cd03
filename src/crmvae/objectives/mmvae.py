"""MMVAE: a mixture of the unimodal experts as the joint posterior."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..distributions import (
    kl_standard_normal,
    log_mixture_density,
    log_standard_normal,
    reparameterize,
)
from ..errors import ConfigError
from .base import (
    ObjectiveConfig,
    ObjectiveContext,
    ObjectiveOutput,
    combine,
    register_objective,
)


@dataclass
class MMVAEConfig(ObjectiveConfig):
    """Settings of MMVAE.

    Attributes:
        estimator: ``"elbo"`` (MoPoE reference code): stratified over components, every modality
            decoded from each component's sample; ``"dreg"`` (the original paper): K importance
            samples per component with the doubly reparameterised gradient.
        num_importance_samples: K for ``"dreg"`` (reference: 30).
    """

    aggregation = "mixture"
    estimator: Literal["elbo", "dreg"] = "elbo"
    num_importance_samples: int = 30

    def validate(self, num_modalities: int) -> None:
        super().validate(num_modalities)
        if self.num_importance_samples < 1:
            raise ConfigError(f"mmvae: num_importance_samples must be >= 1, got {self.num_importance_samples}")


@register_objective("mmvae", MMVAEConfig, "mixture of unimodal experts")
def mmvae_loss(cfg: MMVAEConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    """Negative MMVAE objective, stratified over the present components ``q_m``.

    ``"elbo"``: ``L = mean_m [ E_{q_m}[sum_n log p(x_n|z)] - beta * KL(q_m || p) ]``.

    ``"dreg"``: with ``z_mk ~ q_m`` (k = 1..K) and
    ``log w_mk = sum_n log p(x_n|z_mk) + beta * (log p(z_mk) - log q(z_mk|X))``, ``q(z|X)`` the
    mixture density, the surrogate ``-mean_m sum_k stopgrad(w~_mk) log w_mk`` where ``w~`` are the
    self-normalised weights; its gradient is DReG (``w~^2`` on the path through z, the posterior
    parameters stopped inside the densities). The IWAE bound is logged as ``iwae``.
    """
    mask = ctx.mask
    n_present = mask.sum(1)
    if cfg.estimator == "elbo":
        z = reparameterize(ctx.mu.float(), ctx.logvar.float())  # [M, B, D]
        kl = (kl_standard_normal(ctx.mu.float(), ctx.logvar.float()) * mask.T).sum(0) / n_present
        weighted = {"kl/experts||prior": (cfg.beta, kl)}
        for n, name in enumerate(ctx.modality_names):
            log_lik = (ctx.log_likelihood(n, z) * mask.T).sum(0) / n_present
            weighted[f"rec/mixture/{name}"] = (1.0, -log_lik)
        return combine(weighted)

    m_count, k = ctx.num_modalities, cfg.num_importance_samples
    mu, logvar = ctx.mu.float(), ctx.logvar.float()
    eps = torch.randn((m_count, k) + mu.shape[1:], device=mu.device)
    z = mu[:, None] + eps * torch.exp(0.5 * logvar)[:, None]  # [M, K, B, D]
    mixture_weights = mask / n_present[:, None]
    log_q = log_mixture_density(z, mu.detach(), logvar.detach(), mixture_weights)  # [M, K, B]
    log_w = cfg.beta * (log_standard_normal(z) - log_q)
    flat_z = z.reshape((m_count * k,) + mu.shape[1:])
    for n in range(m_count):
        log_w = log_w + ctx.log_likelihood(n, flat_z).reshape(m_count, k, -1)
    with torch.no_grad():
        norm_weights = torch.softmax(log_w, dim=1)
    if z.requires_grad:
        z.register_hook(lambda grad: grad * norm_weights.unsqueeze(-1))
    surrogate = ((norm_weights * log_w).sum(1) * mask.T).sum(0) / n_present
    iwae = ((torch.logsumexp(log_w, dim=1) - math.log(k)) * mask.T).sum(0) / n_present
    return combine({"dreg/surrogate": (1.0, -surrogate)}, logged={"iwae": -iwae})
