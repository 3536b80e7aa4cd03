"""Attribute coherence: do generated texts state the example's attributes?

For a dataset whose text modality states attributes (the captioned scenes, CelebA's attribute
text), every text generated from a subset of the other modalities is decoded and read back by
the dataset's ``attribute_parsers``; an example's score is the fraction of its stated attributes
(true value >= 0) that the generated text gets right. No classifier is involved, so the figure
cannot be fooled by adversarial texts. ``majority_baseline`` is the same score for a generator
that always writes each attribute's most frequent value: the chance level to beat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .coherence import Scorer


def attribute_scorer(decode: Callable[[Tensor], list[str]], parse: Callable[[list[str]], Tensor]) -> Scorer:
    """Scorer of generated token ids ``[N, L]`` against attributes ``[N, A]``:
    ``{"attributes": fraction of each example's stated attributes the text gets right}``."""

    def score(generated: Tensor, truth: Tensor) -> dict[str, Tensor]:
        parsed = parse(decode(generated.cpu())).to(truth.device)
        return {"attributes": agreement(parsed, truth)}

    return score


def agreement(predicted: Tensor, truth: Tensor) -> Tensor:
    """Per example, the fraction of attributes with ``truth >= 0`` where ``predicted == truth``
    (0 for an example without any)."""
    truth = truth.long()
    stated = truth >= 0
    right = (predicted.long() == truth) & stated
    return right.sum(-1) / stated.sum(-1).clamp(min=1)


def majority_baseline(attributes: Tensor) -> float:
    """Mean :func:`agreement` of always predicting each attribute's most frequent stated value."""
    attributes = attributes.long()
    majority = torch.stack([
        column[column >= 0].mode().values if bool((column >= 0).any()) else torch.tensor(-1)
        for column in attributes.T
    ])
    return float(agreement(majority.expand_as(attributes), attributes).mean())
