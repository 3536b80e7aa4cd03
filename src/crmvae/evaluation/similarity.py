"""Latent cosine similarity between modalities, for paired data without labels (CUB, CelebA).

For each example, the posterior means ``m_i = E[q(z | x_i)]`` inferred from each single present
modality; the score is the mean over examples and over pairs ``i < j`` of present modalities of
``cos(m_i, m_j) = <m_i, m_j> / (|m_i| |m_j|)``. The same score between *different* examples
(``m_j`` taken from the next example of the batch) is its chance level: a cosine similarity
means something only as far as it exceeds that mismatched baseline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.base import Batch
from ..model import MultimodalVAE
from .latents import subset_posteriors


def example_cosines(means: Tensor, mask: Tensor, shift: int = 0) -> tuple[Tensor, Tensor]:
    """Per example b: the sum of ``cos(means[i, b], means[j, b - shift])`` over modality pairs
    ``i < j`` present in both examples, and the number of such pairs, each ``[B]`` (``shift = 0``:
    the same example). ``means`` ``[M, B, D]``, ``mask`` ``[B, M]``."""
    unit = F.normalize(means.float(), dim=-1)
    cosine = torch.einsum("ibd,jbd->bij", unit, unit.roll(shift, 1))  # [B, M, M]
    present = mask.bool()
    pairs = present[:, :, None] & present.roll(shift, 0)[:, None, :] & torch.ones_like(cosine, dtype=torch.bool).triu(1)
    return (cosine * pairs).sum((1, 2)), pairs.sum((1, 2))


def pairwise_cosine_sums(means: Tensor, mask: Tensor, shift: int = 0) -> tuple[float, int]:
    """:func:`example_cosines` summed over the batch: the total cosine and the number of terms."""
    total, count = example_cosines(means, mask, shift)
    return float(total.sum()), int(count.sum())


class CosineSimilarity(NamedTuple):
    """Mean unimodal-posterior cosine similarity within examples (``matched``), its mismatched
    baseline, and the paired difference: per example, its mean matched cosine minus its mean
    cosine with its neighbour, averaged (``gap``) with the standard error ``gap_stderr`` =
    std / sqrt(n) over the ``n`` examples that have both. ``gap / gap_stderr`` > 3 is a
    difference from chance that sampling noise does not explain."""

    matched: float
    mismatched: float
    gap: float
    gap_stderr: float
    examples: int


@torch.no_grad()
def latent_cosine_similarity(model: MultimodalVAE, batches: Iterable[Batch]) -> CosineSimilarity:
    """Mean cosine similarity between the unimodal posterior means of the same example, and of
    neighbouring examples of each batch (the chance level; batches of one example add nothing)."""
    device = next(model.parameters()).device
    units = torch.eye(len(model.modality_names))
    sums = {0: [0.0, 0], 1: [0.0, 0]}
    gaps = []
    for batch in batches:
        batch = batch.to(device)
        means = subset_posteriors(model, batch.data, batch.mask, units).mean()
        per_example = {}
        for shift in (0, 1) if means.shape[1] > 1 else (0,):
            total, count = example_cosines(means, batch.mask, shift)
            sums[shift][0] += float(total.sum())
            sums[shift][1] += int(count.sum())
            per_example[shift] = (total, count)
        if 1 in per_example:
            (same, n_same), (other, n_other) = per_example[0], per_example[1]
            both = (n_same > 0) & (n_other > 0)
            gaps.append((same[both] / n_same[both] - other[both] / n_other[both]).cpu())
    gap = torch.cat(gaps) if gaps else torch.zeros(0)
    n = int(gap.numel())
    return CosineSimilarity(
        *(total / max(count, 1) for total, count in sums.values()),
        gap=float(gap.mean()) if n else 0.0,
        gap_stderr=float(gap.std() / n**0.5) if n > 1 else float("nan"),
        examples=n,
    )
