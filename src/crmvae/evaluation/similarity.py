"""Latent cosine similarity between modalities, for paired data without labels (CUB, CelebA).

For each example, the posterior means ``m_i = E[q(z | x_i)]`` inferred from each single present
modality; the score is the mean over examples and over pairs ``i < j`` of present modalities of
``cos(m_i, m_j) = <m_i, m_j> / (|m_i| |m_j|)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.base import Batch
from ..model import MultimodalVAE
from .latents import subset_posteriors


def pairwise_cosine_sums(means: Tensor, mask: Tensor) -> tuple[float, int]:
    """Sum of ``cos(means[i, b], means[j, b])`` over examples b and pairs ``i < j`` present in b,
    and the number of such terms. ``means`` ``[M, B, D]``, ``mask`` ``[B, M]``."""
    unit = F.normalize(means.float(), dim=-1)
    cosine = torch.einsum("ibd,jbd->bij", unit, unit)  # [B, M, M]
    present = mask.bool()
    pairs = present[:, :, None] & present[:, None, :] & torch.ones_like(cosine, dtype=torch.bool).triu(1)
    return float(cosine[pairs].sum()), int(pairs.sum())


@torch.no_grad()
def latent_cosine_similarity(model: MultimodalVAE, batches: Iterable[Batch]) -> float:
    """Mean cosine similarity between the unimodal posterior means of the same example."""
    device = next(model.parameters()).device
    units = torch.eye(len(model.modality_names))
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        means = subset_posteriors(model, batch.data, batch.mask, units).mean()
        s, c = pairwise_cosine_sums(means, batch.mask)
        total, count = total + s, count + c
    return total / max(count, 1)
