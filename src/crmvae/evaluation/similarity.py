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
    sums: dict[int, list[Tensor]] = {0: [], 1: []}  # per shift and batch: each example's cosine sum
    counts: dict[int, list[Tensor]] = {0: [], 1: []}  # and its number of modality pairs
    for batch in batches:
        batch = batch.to(device)
        means = subset_posteriors(model, batch.data, batch.mask, units).mean()
        for shift in (0, 1):
            total, count = example_cosines(means, batch.mask, shift)
            if shift and means.shape[1] == 1:  # an example is not its own neighbour
                total, count = torch.zeros_like(total), torch.zeros_like(count)
            sums[shift].append(total.cpu())
            counts[shift].append(count.cpu())
    same, other, n_same, n_other = (torch.cat(v) if v else torch.zeros(0) for v in (*sums.values(), *counts.values()))
    both = (n_same > 0) & (n_other > 0)
    gap = same[both] / n_same[both] - other[both] / n_other[both]
    n = int(gap.numel())
    return CosineSimilarity(
        float(same.sum() / n_same.sum().clamp(min=1)),
        float(other.sum() / n_other.sum().clamp(min=1)),
        gap=float(gap.mean()) if n else 0.0,
        gap_stderr=float(gap.std() / n**0.5) if n > 1 else float("nan"),
        examples=n,
    )
