"""Training controls as pure functions of the configuration and the global step: the optimizers
by name, the learning-rate schedules, the KL warm-up and the validation split.

The learning rate and the KL (beta) multiplier of every update follow from ``train.*`` and the
0-based global step alone (and, for the ``plateau`` schedule, the count of reductions so far), so
a resumed run needs no schedule state beyond the step and counters it stored. Early stopping's
and the plateau's counters live in the trainer's state and are checkpointed with it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ..config import TrainConfig
from ..data.base import BatchSource
from ..errors import ConfigError
from ..registry import Registry


#: Optimizers by name: each builds a ``torch.optim.Optimizer`` over the parameters from ``train.*``
#: (``train.optimizer_params`` as further keyword arguments) and the device (``lr`` is set again
#: before every step by :func:`learning_rate`). :func:`build_optimizer` builds one by name.
OPTIMIZERS: Registry[Callable[[Iterable[Tensor], TrainConfig, torch.device], torch.optim.Optimizer]] = Registry(
    "train/optimizer"
)


def _fused(device: torch.device) -> bool:
    """Whether to use the fused form (one kernel over all parameters: the same update, several
    times faster than the default foreach form on CPU)."""
    return device.type in ("cpu", "cuda")


@OPTIMIZERS.register("adam")
def adam(params: Iterable[Tensor], tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam (the paper's), with ``weight_decay`` as an L2 term of the gradient."""
    return torch.optim.Adam(params, lr=tc.lr, betas=(tc.betas[0], tc.betas[1]), weight_decay=tc.weight_decay,
                            fused=_fused(device), **tc.optimizer_params)


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable[Tensor], tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay (``w -= lr * weight_decay * w`` each step)."""
    return torch.optim.AdamW(params, lr=tc.lr, betas=(tc.betas[0], tc.betas[1]), weight_decay=tc.weight_decay,
                             fused=_fused(device), **tc.optimizer_params)


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[Tensor], tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Stochastic gradient descent with ``momentum`` and ``weight_decay``."""
    return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay, **tc.optimizer_params)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params: Iterable[Tensor], tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """RMSprop with ``momentum`` and ``weight_decay``."""
    return torch.optim.RMSprop(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay, **tc.optimizer_params)


def build_optimizer(params: Iterable[Tensor], tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer ``tc.optimizer`` over ``params``; a :class:`ConfigError` naming
    ``train.optimizer_params`` when the optimizer refuses one of them (an unknown keyword, or a
    value out of its range)."""
    factory = OPTIMIZERS.lookup(tc.optimizer, "train.optimizer")
    try:
        return factory(params, tc, device)
    except (TypeError, ValueError, RuntimeError) as exc:
        if not tc.optimizer_params:
            raise
        raise ConfigError(f"train.optimizer_params {tc.optimizer_params} for {tc.optimizer}: "
                          f"{str(exc).splitlines()[0]}") from None


def learning_rate(tc: TrainConfig, step: int, planned_steps: int, plateau_reductions: int = 0) -> float:
    """The learning rate of the update at global ``step`` (0-based) of a run of ``planned_steps``.

    A linear warm-up to ``lr`` over ``lr_warmup_steps``, then ``lr_schedule``: constant; cosine to
    0 at ``lr_horizon_steps`` (default ``planned_steps``); ``lr_decay_factor`` applied every
    ``lr_decay_every`` steps after the warm-up; or, for ``plateau``, applied
    ``plateau_reductions`` times (see :func:`plateau_update`); or, for ``multistep``, applied once
    for each of ``lr_milestones`` at or before ``step``.
    """
    warmup = tc.lr_warmup_steps
    if step < warmup:
        return tc.lr * (step + 1) / warmup
    if tc.lr_schedule == "cosine":
        span = max((tc.lr_horizon_steps or planned_steps) - warmup, 1)
        return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / span, 1.0)))
    if tc.lr_schedule == "step":
        return tc.lr * tc.lr_decay_factor ** ((step - warmup) // tc.lr_decay_every)
    if tc.lr_schedule == "plateau":
        return tc.lr * tc.lr_decay_factor ** plateau_reductions
    if tc.lr_schedule == "multistep":
        return tc.lr * tc.lr_decay_factor ** bisect.bisect_right(tc.lr_milestones, step)
    return tc.lr


def plateau_update(
    tc: TrainConfig, loss: float, best: float | None, bad_epochs: int, reductions: int,
) -> tuple[float, int, int]:
    """``(best, bad_epochs, reductions)`` after an epoch's validation ``loss``.

    The loss improves on ``best`` when ``loss < best * (1 - lr_plateau_threshold)`` (any lower
    loss with threshold 0); an improvement becomes the new ``best`` and resets the count of epochs
    in a row without one, and a reduction happens, resetting the count too, when the count
    exceeds ``lr_plateau_patience``: ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode
    ``min``, relative threshold) with ``eps=0``."""
    if best is None or loss < best * (1.0 - tc.lr_plateau_threshold):
        return loss, 0, reductions
    if bad_epochs + 1 > tc.lr_plateau_patience:
        return best, 0, reductions + 1
    return best, bad_epochs + 1, reductions


def beta_scale(tc: TrainConfig, step: int) -> float:
    """The multiplier on the objective's ``beta`` at global ``step``: ``t / kl_warmup_steps`` up
    to 1 (KL warm-up), where ``t`` is ``step``, or ``step mod kl_cycle_steps`` for cyclical
    annealing; always 1 without a warm-up."""
    if not tc.kl_warmup_steps:
        return 1.0
    t = step % tc.kl_cycle_steps if tc.kl_cycle_steps else step
    return min(t / tc.kl_warmup_steps, 1.0)


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
