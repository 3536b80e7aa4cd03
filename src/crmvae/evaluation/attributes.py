"""Attribute coherence: do generated texts state the example's attributes?

For a dataset whose text modality states attributes (the captioned scenes, CelebA's attribute
text), every text generated from a subset of the other modalities is decoded and read back by
the dataset's ``attribute_parsers``; an example's score is the fraction of its stated attributes
(true value >= 0) that the generated text gets right. No classifier is involved, so the figure
cannot be fooled by adversarial texts. ``majority_baseline`` is the same score for a generator
that always writes each attribute's most frequent value: the chance level to beat. Per
attribute, accuracy over the examples that state it is reported beside its own majority rate,
because the mean over attributes hides which ones a model has learned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from .coherence import Scorer


def attribute_scorer(
    decode: Callable[[Tensor], list[str]], parse: Callable[[list[str]], Tensor], names: Sequence[str]
) -> Scorer:
    """Scorer of generated token ids ``[N, L]`` against attributes ``[N, A]`` named ``names``:
    ``{"attributes": fraction of each example's stated attributes the text gets right}``, and per
    attribute ``a``: ``"right/a"`` (1 where the text states the true value) and ``"stated/a"``
    (1 where the example has a value, ``truth >= 0``)."""

    def score(generated: Tensor, truth: Tensor) -> dict[str, Tensor]:
        right, stated = matches(parse(decode(generated.cpu())).to(truth.device), truth)
        per_attribute = {f"{kind}/{name}": flags[:, i] for kind, flags in (("right", right), ("stated", stated))
                         for i, name in enumerate(names)}
        return {"attributes": right.sum(-1) / stated.sum(-1).clamp(min=1), **per_attribute}

    return score


def matches(predicted: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """``(right, stated)``, boolean ``[N, A]``: ``stated = truth >= 0`` and
    ``right = stated & (predicted == truth)``."""
    truth = truth.long()
    stated = truth >= 0
    return (predicted.long() == truth) & stated, stated


def agreement(predicted: Tensor, truth: Tensor) -> Tensor:
    """Per example, the fraction of attributes with ``truth >= 0`` where ``predicted == truth``
    (0 for an example without any)."""
    right, stated = matches(predicted, truth)
    return right.sum(-1) / stated.sum(-1).clamp(min=1)


def per_attribute_accuracy(means: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Accuracy of each attribute over the examples that state it, ``mean(right/a) / mean(stated/a)``,
    from the mean scores of one (target, subset) of :func:`attribute_scorer`; attributes no
    example states are left out."""
    return {a: means[f"right/{a}"] / means[f"stated/{a}"] for a in names if means[f"stated/{a}"] > 0}


def majority_values(attributes: Tensor) -> Tensor:
    """Each attribute's most frequent stated value ``[A]`` (-1 where none is stated)."""
    attributes = attributes.long()
    return torch.stack([
        column[column >= 0].mode().values if bool((column >= 0).any()) else torch.tensor(-1)
        for column in attributes.T
    ])


def majority_baseline(attributes: Tensor) -> float:
    """Mean :func:`agreement` of always predicting each attribute's most frequent stated value."""
    return float(agreement(majority_values(attributes).expand_as(attributes), attributes).mean())


def majority_rates(attributes: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Per attribute, the share of the examples stating it whose value is the most frequent one."""
    right, stated = matches(majority_values(attributes).expand_as(attributes), attributes)
    return {a: float(right[:, i].sum() / stated[:, i].sum()) for i, a in enumerate(names) if bool(stated[:, i].any())}
