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


def pairwise_cosine_sums(means: Tensor, mask: Tensor, shift: int = 0) -> tuple[float, int]:
    """Sum of ``cos(means[i, b], means[j, b - shift])`` over examples b and modality pairs
    ``i < j`` present in both examples, and the number of such terms (``shift = 0``: the same
    example). ``means`` ``[M, B, D]``, ``mask`` ``[B, M]``."""
    unit = F.normalize(means.float(), dim=-1)
    cosine = torch.einsum("ibd,jbd->bij", unit, unit.roll(shift, 1))  # [B, M, M]
    present = mask.bool()
    pairs = present[:, :, None] & present.roll(shift, 0)[:, None, :] & torch.ones_like(cosine, dtype=torch.bool).triu(1)
    return float(cosine[pairs].sum()), int(pairs.sum())


class CosineSimilarity(NamedTuple):
    """Mean unimodal-posterior cosine similarity within examples, and its mismatched baseline."""

    matched: float
    mismatched: float


@torch.no_grad()
def latent_cosine_similarity(model: MultimodalVAE, batches: Iterable[Batch]) -> CosineSimilarity:
    """Mean cosine similarity between the unimodal posterior means of the same example, and of
    neighbouring examples of each batch (the chance level; batches of one example add nothing)."""
    device = next(model.parameters()).device
    units = torch.eye(len(model.modality_names))
    sums = {0: [0.0, 0], 1: [0.0, 0]}
    for batch in batches:
        batch = batch.to(device)
        means = subset_posteriors(model, batch.data, batch.mask, units).mean()
        for shift in (0, 1) if means.shape[1] > 1 else (0,):
            s, c = pairwise_cosine_sums(means, batch.mask, shift)
            sums[shift][0] += s
            sums[shift][1] += c
    return CosineSimilarity(*(total / max(count, 1) for total, count in sums.values()))
