"""Posteriors ``q(z | X_S)`` of many subsets S at once, from one encoder pass per modality.

Every metric that needs latents of several subsets (coherence, FID, probes, similarity) encodes
each modality of a batch once with :meth:`MultimodalVAE.encode` and forms all subset posteriors
from the experts ``[M, B, D]``: one batched product of experts for PoE models, per-subset mixture
weights for mixture models (``objective_config.inference == "mixture"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..distributions import (
    all_subsets,
    reparameterize,
    sample_mixture,
    subset_poe,
)
from ..data.base import BatchSource
from ..errors import ConfigError
from ..model import MultimodalVAE


@dataclass
class SubsetPosteriors:
    """``q(z | X_S)`` of K subsets for a batch of B examples.

    PoE: ``mu``, ``logvar`` ``[K, B, D]`` and ``weights`` None. Mixture: the experts ``mu``,
    ``logvar`` ``[M, B, D]`` and ``weights`` ``[K, B, M]``, uniform over ``S ∩ present(b)``; a row
    with no expert stands for the prior ``N(0, I)`` (as :class:`crmvae.model.Posterior`).
    """

    mu: Tensor
    logvar: Tensor
    weights: Tensor | None = None

    def mean(self) -> Tensor:
        """Posterior means ``[K, B, D]``: ``mu`` (PoE) or ``sum_m w_kbm mu_mb`` (mixture)."""
        if self.weights is None:
            return self.mu
        return torch.einsum("kbm,mbd->kbd", self.weights, self.mu)

    def sample(self) -> Tensor:
        """One reparameterised sample ``[K, B, D]`` per subset and example (a mixture first draws
        its component from the weights; an empty row draws from the prior)."""
        if self.weights is None:
            return reparameterize(self.mu, self.logvar)
        return sample_mixture(self.mu, self.logvar, self.weights)


def subset_posteriors(
    model: MultimodalVAE, data: Mapping[str, Tensor], mask: Tensor | None, subsets: Tensor
) -> SubsetPosteriors:
    """``q(z | X_S)`` for every row S of the 0/1 matrix ``subsets`` ``[K, M]`` (modality order of
    the model); modalities absent from an example (``mask``) contribute no expert."""
    mu, logvar, present = model.encode(data, mask)
    rows = subsets.to(mu)
    if model.objective_config.inference == "mixture":
        weights = rows[:, None, :] * present[None]
        return SubsetPosteriors(mu, logvar, weights / weights.sum(-1, keepdim=True).clamp_min(1.0))
    return SubsetPosteriors(*subset_poe(mu, logvar, rows, present, model.objective_config.prior_weight))


def proper_subsets(num_modalities: int) -> Tensor:
    """The ``(2^M - 2) x M`` non-empty proper subsets, by size then lexicographically."""
    return all_subsets(num_modalities)[:-1]


def subset_names(subsets: Tensor, names: Sequence[str]) -> list[str]:
    """``"m0,m2"`` for each row of a 0/1 subset matrix."""
    return [",".join(names[i] for i in row.nonzero().flatten().tolist()) for row in subsets]


def mean_by_size(entries: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Mean of ``("m0,m1", value)`` entries grouped by subset size: ``{"1": mean, "2": mean, ...}``."""
    groups: dict[int, list[float]] = {}
    for key, value in entries:
        groups.setdefault(len(key.split(",")), []).append(value)
    return {str(k): sum(v) / len(v) for k, v in sorted(groups.items())}


def subset_matrix(subsets: Sequence[Sequence[str]], names: Sequence[str]) -> Tensor:
    """The 0/1 matrix ``[K, M]`` of named subsets (modality order ``names``); an empty subset or
    an unknown name is a :class:`ConfigError`."""
    rows = torch.zeros(len(subsets), len(names))
    for k, subset in enumerate(subsets):
        unknown = sorted(set(subset) - set(names))
        if not subset or unknown:
            what = f"unknown modalities {unknown}" if subset else "an empty subset"
            raise ConfigError(f"subset {','.join(subset)!r}: {what}; the model has {list(names)}")
        rows[k, [names.index(name) for name in subset]] = 1.0
    return rows


@torch.no_grad()
def encode_dataset(
    model: MultimodalVAE, dataset: BatchSource, subsets: Sequence[Sequence[str]], batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """The posterior means of ``q(z | X_S)`` for every example of ``dataset`` and each subset S,
    from one encoder pass per modality and batch.

    Returns ``{"mean:<S>": [N, D]}`` (``<S>`` as ``"m0,m2"``), ``{"logvar:<S>": [N, D]}`` for
    product-of-experts models, ``"present"`` ``[N, M]`` (an example whose modalities of S are all
    absent gets the prior's mean, 0), ``"modalities"`` and, when the dataset has them, ``"labels"``.
    """
    device = next(model.parameters()).device
    rows = subset_matrix(subsets, model.modality_names)
    keys = subset_names(rows, model.modality_names)
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigError(f"subsets repeated: {repeated}")
    parts: dict[str, list[Tensor]] = {}
    for batch in dataset.batches(batch_size):
        batch = batch.to(device)
        posterior = subset_posteriors(model, batch.data, batch.mask, rows)
        values = {"mean": posterior.mean(), **({"logvar": posterior.logvar} if posterior.weights is None else {})}
        for kind, tensor in values.items():
            for key, rows_of_subset in zip(keys, tensor):
                parts.setdefault(f"{kind}:{key}", []).append(rows_of_subset.float().cpu())
        parts.setdefault("present", []).append(batch.mask.cpu())
        if batch.labels is not None:
            parts.setdefault("labels", []).append(batch.labels.cpu())
    arrays = {name: torch.cat(chunks).numpy() for name, chunks in parts.items()}
    return {**arrays, "modalities": np.array(model.modality_names)}
