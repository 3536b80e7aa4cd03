"""MVAE (Wu & Goodman): PoE posterior, joint ELBO plus unimodal (and random-subset) ELBOs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributions import kl_standard_normal, reparameterize, subset_poe
from ..errors import ConfigError
from .base import (
    ObjectiveConfig,
    ObjectiveContext,
    ObjectiveOutput,
    combine,
    register_objective,
)


@dataclass
class MVAEConfig(ObjectiveConfig):
    """Settings of MVAE.

    Attributes:
        prior_expert: include ``p(z)`` in every PoE (as in the MVAE paper).
        num_random_subsets: k extra ELBOs per step on random subsets of size 2..M-1.
    """

    prior_expert: bool = True
    num_random_subsets: int = 0

    def validate(self, num_modalities: int) -> None:
        super().validate(num_modalities)
        if self.num_random_subsets < 0:
            raise ConfigError(f"mvae: num_random_subsets must be >= 0, got {self.num_random_subsets}")
        if self.num_random_subsets and num_modalities < 3:
            raise ConfigError("mvae: random subsets of size 2..M-1 need at least 3 modalities")


def random_subsets(num_modalities: int, count: int, device: torch.device) -> torch.Tensor:
    """``count`` random subsets ``[count, M]`` (0/1), each of a uniformly drawn size in 2..M-1."""
    sizes = torch.randint(2, num_modalities, (count,))
    order = torch.rand(count, num_modalities).argsort(dim=1)
    rows = (order < sizes[:, None]).float()
    return rows.to(device)


@register_objective("mvae", MVAEConfig, "product of experts, joint + unimodal ELBOs")
def mvae_loss(cfg: MVAEConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    """Negative MVAE objective (sub-sampled training)::

        L = ELBO(q(z|X)) + sum_m ELBO(q(z|x_m)) [+ sum_{k random S} ELBO(q(z|X_S))]
        ELBO(q(z|X_S)) = E_q[sum_{m in S} log p(x_m|z)] - beta * KL(q(z|X_S) || p)

    All posteriors are PoEs over the present experts; an ELBO whose subset has no present expert
    is dropped. No cross-modal reconstruction term.
    """
    m_count = ctx.num_modalities
    device = ctx.mu.device
    rows = [torch.ones(1, m_count, device=device), torch.eye(m_count, device=device)]
    if cfg.num_random_subsets:
        rows.append(random_subsets(m_count, cfg.num_random_subsets, device))
    subsets = torch.cat(rows)  # [R, M]: joint, unimodal, random
    mu, logvar = subset_poe(ctx.mu, ctx.logvar, subsets, ctx.mask, cfg.prior_weight)
    z = reparameterize(mu, logvar)
    present = (subsets @ ctx.mask.T) > 0  # [R, B]
    kl = kl_standard_normal(mu, logvar) * present
    weighted = {"kl/joint||prior": (cfg.beta, kl[0])}
    for m, name in enumerate(ctx.modality_names):
        weighted[f"kl/{name}||prior"] = (cfg.beta, kl[1 + m])
    if cfg.num_random_subsets:
        weighted["kl/subsets||prior"] = (cfg.beta, kl[1 + m_count :].sum(0))
    for m, name in enumerate(ctx.modality_names):
        rows_with_m = subsets[:, m].nonzero().squeeze(1)  # joint, own unimodal, random subsets with m
        log_lik = ctx.log_likelihood(m, z[rows_with_m])
        weighted[f"rec/joint/{name}"] = (1.0, -log_lik[0])
        weighted[f"rec/self/{name}"] = (1.0, -log_lik[1])
        if cfg.num_random_subsets:  # every step reports the same terms: 0 when no random subset holds m
            weighted[f"rec/subsets/{name}"] = (1.0, -log_lik[2:].sum(0))
    return combine(weighted)
