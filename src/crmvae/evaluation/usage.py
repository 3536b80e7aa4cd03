"""How much of the latent space the posteriors use: the posterior-collapse diagnostics.

For each single modality m and for the set of all modalities X, over the test examples that have
them:

- ``kl_to_prior``: the mean of ``KL(q(z | x_S) || p(z))`` in nats. It is the mutual information
  between x_S and z under the encoder plus ``KL(q(z) || p(z))`` of the aggregate posterior, so an
  upper bound on what z carries about the input: a collapsed expert gives ``q(z | x_m) = p(z)``
  (PoE with the prior expert) and 0 nats, while a posterior that differs from the prior in the
  same way for every input has KL > 0 and no active unit. It is closed form for every PoE subset
  and for a single modality of a mixture model (its own expert); the mixture of all modalities
  has none and is left out.
- ``active_units``: the number of latent dimensions d with ``Var_x(E[z_d | x_S]) > 0.01`` (Burda
  et al. 2016, "Importance weighted autoencoders", section 5.2): the dimensions whose posterior mean
  moves with the input.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from ..data.base import Batch
from ..distributions import kl_standard_normal
from ..model import MultimodalVAE
from .latents import subset_posteriors

#: The variance of a posterior mean over examples above which a dimension counts as active.
ACTIVE_UNIT_THRESHOLD = 0.01


class LatentUsage(NamedTuple):
    """Per subset name (``"m0"``, ..., and the joint set ``"m0,...,m4"``): mean KL to the prior in
    nats (absent where not closed form), active units, and the number of examples behind them."""

    kl_to_prior: dict[str, float]
    active_units: dict[str, int]
    examples: dict[str, int]

    def as_result(self, joint: str) -> dict[str, object]:
        """The evaluation result's ``latent_usage`` entry: the per-subset figures, and the
        unimodal ones summarised (mean and least over modalities; the least shows a collapsed
        expert) beside the ``joint`` set's."""
        unimodal_kl = [v for k, v in self.kl_to_prior.items() if k != joint]
        unimodal_units = [v for k, v in self.active_units.items() if k != joint]
        summary: dict[str, float] = {}
        if unimodal_kl:
            summary |= {"kl_mean": sum(unimodal_kl) / len(unimodal_kl), "kl_min": min(unimodal_kl)}
        if unimodal_units:
            summary |= {"active_units_mean": sum(unimodal_units) / len(unimodal_units),
                        "active_units_min": float(min(unimodal_units))}
        joint_entry = {k: float(v[joint]) for k, v in (("kl", self.kl_to_prior), ("active_units", self.active_units))
                       if joint in v}
        return {"kl_to_prior": self.kl_to_prior, "active_units": self.active_units, "unimodal": summary,
                "joint": joint_entry, "examples": self.examples}


def active_units(count: Tensor, total: Tensor, total_sq: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Dimensions whose sample variance over ``count`` examples, from the per-dimension sums
    ``total`` and ``total_sq`` of the posterior means, exceeds ``threshold``:
    ``var_d = (sum_sq_d - sum_d^2 / n) / (n - 1)``. 0 with fewer than two examples."""
    n = float(count)
    if n < 2:
        return 0
    variance = (total_sq - total.square() / n) / (n - 1)
    return int((variance > threshold).sum())


@torch.no_grad()
def latent_usage(model: MultimodalVAE, batches: Iterable[Batch]) -> LatentUsage:
    """The diagnostics of the module docstring for each single modality and the joint set."""
    device = next(model.parameters()).device
    names = list(model.modality_names)
    num = len(names)
    subsets = torch.cat([torch.eye(num), torch.ones(1, num)])
    labels = [*names, ",".join(names)]
    mixture = model.objective_config.inference == "mixture"
    dim = model.latent_dim
    count = torch.zeros(len(labels), dtype=torch.float64)
    total = torch.zeros(len(labels), dim, dtype=torch.float64)
    total_sq = torch.zeros(len(labels), dim, dtype=torch.float64)
    kl_sum = torch.zeros(len(labels), dtype=torch.float64)
    for batch in batches:
        batch = batch.to(device)
        posteriors = subset_posteriors(model, batch.data, batch.mask, subsets)
        means = posteriors.mean().double().cpu()  # [K, B, D]
        has = (batch.mask.float().cpu() @ subsets.T == subsets.sum(1)).T  # [K, B]: the example has all of S
        weights = has.double()
        count += weights.sum(1)
        total += torch.einsum("kb,kbd->kd", weights, means)
        total_sq += torch.einsum("kb,kbd->kd", weights, means.square())
        if mixture:  # a single modality's posterior is its expert; the joint mixture has no closed form
            kl = kl_standard_normal(posteriors.mu, posteriors.logvar).double().cpu()  # [M, B]
            kl = torch.cat([kl, torch.zeros(1, kl.shape[1], dtype=kl.dtype)])
        else:
            kl = kl_standard_normal(posteriors.mu, posteriors.logvar).double().cpu()  # [K, B]
        kl_sum += (kl * weights).sum(1)
    usable = [k for k in range(len(labels)) if count[k] > 0 and not (mixture and k == num)]
    return LatentUsage(
        kl_to_prior={labels[k]: float(kl_sum[k] / count[k]) for k in usable},
        active_units={labels[k]: active_units(count[k], total[k], total_sq[k]) for k in range(len(labels)) if count[k] > 0},
        examples={labels[k]: int(count[k]) for k in range(len(labels))},
    )
