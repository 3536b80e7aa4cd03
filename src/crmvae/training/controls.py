"""Training controls as pure functions of the configuration and the global step.

The learning rate and the KL (beta) multiplier of every update follow from ``train.*`` and the
0-based global step alone, so a resumed run needs no schedule state beyond the step it stored.
Early stopping's counters live in the trainer's state and are checkpointed with it.
"""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig
from ..data.base import BatchSource
from ..errors import ConfigError


def learning_rate(tc: TrainConfig, step: int, planned_steps: int) -> float:
    """The learning rate of the update at global ``step`` (0-based) of a run of ``planned_steps``.

    A linear warm-up to ``lr`` over ``lr_warmup_steps``, then ``lr_schedule``: constant; cosine to
    0 at ``lr_horizon_steps`` (default ``planned_steps``); or ``lr_decay_factor`` applied every
    ``lr_decay_every`` steps after the warm-up.
    """
    warmup = tc.lr_warmup_steps
    if step < warmup:
        return tc.lr * (step + 1) / warmup
    if tc.lr_schedule == "cosine":
        span = max((tc.lr_horizon_steps or planned_steps) - warmup, 1)
        return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / span, 1.0)))
    if tc.lr_schedule == "step":
        return tc.lr * tc.lr_decay_factor ** ((step - warmup) // tc.lr_decay_every)
    return tc.lr


def beta_scale(tc: TrainConfig, step: int) -> float:
    """The multiplier on the objective's ``beta`` at global ``step``: ``step / kl_warmup_steps``
    up to 1 (KL warm-up), always 1 without a warm-up."""
    return min(step / tc.kl_warmup_steps, 1.0) if tc.kl_warmup_steps else 1.0


def schedule_depends_on_epochs(tc: TrainConfig) -> bool:
    """Whether the learning-rate trajectory depends on ``train.epochs``: a cosine schedule without
    ``lr_horizon_steps`` spans the planned run, so a run continued to more epochs differs from an
    uninterrupted one.

    Early stopping does not count: each epoch's stop decision uses only the validation losses so
    far, and a run that stopped stays stopped when resumed with more epochs, so the state at any
    epoch is that of an uninterrupted run.
    """
    return tc.lr_schedule == "cosine" and tc.lr_horizon_steps is None


def validation_split(dataset: BatchSource, size: int, seed: int) -> tuple[BatchSource, BatchSource | None]:
    """``(train, validation)``: ``size`` examples drawn by a permutation seeded with ``seed`` are
    held out (both keep the dataset's order); ``(dataset, None)`` when ``size`` is 0."""
    if not size:
        return dataset, None
    if size >= len(dataset):
        raise ConfigError(
            f"train.validation_size={size} leaves no training example of the {len(dataset)} in {dataset.name}"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    held_out = order[:size].sort().values
    kept = order[size:].sort().values
    return dataset.subset(kept), dataset.subset(held_out, name=f"{dataset.name} (validation)")
