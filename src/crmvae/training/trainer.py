"""The training loop: exact resume, a non-finite-loss guard, metrics, checkpoints and grids.

A run directory holds ``config.yaml`` (the resolved configuration), ``metrics.jsonl``,
``checkpoint.pt`` (the latest training state, rewritten atomically every
``train.checkpoint_every`` steps and at each epoch end), and at the end ``model.pt``,
``summary.json`` and ``grids/*.png``.

Resuming is exact: a checkpoint holds the weights, the optimizer state, the position in the
epoch, the running loss sums and the global RNG state, and every epoch's shuffle comes from its
own generator seeded with ``(seed, epoch)``; test evaluations use a private RNG. An interrupted
and resumed run therefore ends with the same weights as an uninterrupted one.

Training controls (:mod:`crmvae.training.controls`: learning-rate schedule, KL warm-up, gradient
clipping, early stopping on a validation split) are functions of the configuration and the global
step, or counters in the checkpoint, so they resume exactly too. Metrics, progress, grids and the
optional loggers are :class:`~crmvae.training.callbacks.Callback` objects.

Under ``torchrun`` the run is data-parallel (:mod:`crmvae.training.distributed`): every rank
takes its share of each global batch, logged values are global means, rank 0 alone writes the
run directory, and a non-finite loss on any rank stops all of them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import load_weights, read_checkpoint, save_model
from ..config import (
    ModelConfig,
    RunConfig,
    TrainConfig,
    flatten,
    from_dict,
    load_mapping,
    merge_values,
    missing_keys,
    save_config,
    to_dict,
    warn_missing_keys,
)
from ..data import Batch, BatchSource, MultimodalDataset, dataset_info, load_source
from ..data.streamed import with_loading
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..fileio import atomic_write, make_dir, remove_stale_temporaries
from ..model import MultimodalVAE
from ..objectives import ObjectiveOutput
from ..seeding import private_rng
from .distributed import (
    DistContext,
    detect_context,
    loss_weight,
    process_group,
    rank_seed,
    wrap,
)
from .callbacks import Callback, Callbacks, GenerationGrids, MetricsFile, ProgressReport
from .controls import beta_scale, build_optimizer, learning_rate, plateau_update, schedule_depends_on_epochs, validation_split
from .loggers import LOGGERS
from .metrics import LOSS, TermSums, stack_values
from .progress import Progress, live

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
GRIDS_DIR = "grids"
EPOCHS_DIR = "epochs"

log = logging.getLogger(__name__)

#: Settings that change the optimisation from the resumed step on; a resume that changes them says so.
OPTIMISATION_KEYS = frozenset({
    "train.lr", "train.lr_schedule", "train.lr_warmup_steps", "train.lr_horizon_steps", "train.lr_decay_every",
    "train.lr_decay_factor", "train.lr_plateau_patience", "train.lr_plateau_threshold", "train.lr_milestones",
    "train.grad_clip_norm",
})
#: Settings that do not change a run's results: display, experiment loggers, data loading.
NON_RESULT_KEYS = frozenset({"train.progress", "train.loggers", "train.save_every_epochs", "train.grids_every_epochs",
                             "data.num_workers", "data.pin_memory"})
#: Settings that may differ between a run and its resumption.
RESUMABLE_KEYS = OPTIMISATION_KEYS | NON_RESULT_KEYS | {"train.epochs", "train.max_steps", "train.channels_last"}


@dataclass
class TrainResult:
    """What a finished :func:`train` call produced."""

    out_dir: Path
    config: RunConfig
    epochs_completed: int
    global_step: int
    metrics: dict[str, Any]
    config_path: Path
    metrics_path: Path
    checkpoint_path: Path
    model_path: Path
    summary_path: Path
    grids: list[Path]


@dataclass
class _State:
    """The position of training, stored at the top level of a checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    examples_seen: int = 0
    elapsed_s: float = 0.0
    last_epoch_metrics: dict[str, Any] = field(default_factory=dict)
    best_val_loss: float | None = None
    best_train_loss: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    early_stopped: bool = False
    plateau_best: float | None = None
    plateau_bad_epochs: int = 0
    plateau_reductions: int = 0


# --------------------------------------------------------------------------------------------
# public helpers


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, checked to exist on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device={name!r} is not a valid device ({exc})") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"train.device={name!r}, but {torch.cuda.device_count()} CUDA device(s) are available")
    return device


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products beat fp32 on ``device``: a CUDA device with bf16 support, or
    a CPU with AMX tiles or AVX512-BF16. Other CPUs emulate bf16, which is slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` becomes ``"bf16"`` where :func:`has_fast_bf16`, else ``"fp32"``; other values pass."""
    if precision == "auto":
        return "bf16" if has_fast_bf16(device) else "fp32"
    return precision


def check_dataset(model: ModelConfig, dataset: BatchSource) -> None:
    """Raise :class:`ConfigError` unless ``dataset`` has the model's modalities, in order, shape
    and (token modalities) vocabulary size."""
    names = [m.name for m in model.modalities]
    if dataset.modality_names != names:
        raise ConfigError(f"{dataset.name} has modalities {dataset.modality_names}, the model expects {names}")
    for m in model.modalities:
        shape = tuple(dataset.specs[m.name].shape)
        if shape != tuple(m.shape):
            raise ConfigError(
                f"modality {m.name!r}: {dataset.name} has examples of shape {shape}, "
                f"the model configuration says {tuple(m.shape)}"
            )
        spec = dataset.specs[m.name]
        if spec.kind == "tokens" and spec.vocab_size != m.vocab_size:
            raise ConfigError(
                f"modality {m.name!r}: {dataset.name} has token ids over a vocabulary of {spec.vocab_size}, "
                f"the model configuration says vocab_size={m.vocab_size}"
            )


def check_observed(dataset: BatchSource) -> None:
    """Raise :class:`ConfigError` naming the modalities that no example of an in-memory training
    set holds (their networks would never see data). A streamed set is read on access and not
    checked here."""
    if not isinstance(dataset, MultimodalDataset) or len(dataset) == 0:
        return
    never = [name for name, seen in zip(dataset.modality_names, dataset.mask.any(0).tolist()) if not seen]
    if never:
        raise ConfigError(
            f"{dataset.name}: modality {never[0]!r} is missing in all {len(dataset)} training examples"
            f"{f' (so are {never[1:]})' if len(never) > 1 else ''}, so nothing would train its encoder and decoder; "
            f"give it data or remove it from the modalities"
        )


@torch.no_grad()
def evaluate(
    model: MultimodalVAE,
    dataset: BatchSource,
    batch_size: int,
    precision: str = "fp32",
    seed: int = 0,
    images_format: torch.memory_format = torch.preserve_format,
) -> dict[str, float]:
    """Example-weighted means of the loss and its terms over ``dataset``, in eval mode; image
    batches are moved in ``images_format`` (the training layout).

    Latent samples come from a private RNG seeded with ``seed``: the result is deterministic and
    the global RNG (which training consumes) is left as it was.
    """
    device = next(model.parameters()).device
    sums, names = TermSums(), [LOSS]
    was_training = model.training
    model.eval()
    try:
        with private_rng(seed, device), autocast(device, precision):
            for batch in dataset.batches(batch_size):
                batch = batch.to(device, images_format)
                output = model.loss(batch.data, batch.mask)
                names = [LOSS, *output.terms]
                sums.add(stack_values(output), len(batch))
    finally:
        model.train(was_training)
    return sums.means(names)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffle generator, mixed from ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# the entry point


def train(
    config: RunConfig, out_dir: str | Path, resume: bool = False,
    datasets: tuple[BatchSource, BatchSource] | None = None, callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``config`` into ``out_dir`` (continuing its checkpoint when ``resume``); ``callbacks``
    are called on rank 0 after the built-in ones and the loggers of ``train.loggers``.

    ``datasets``: the ``(train, test)`` data to use instead of ``config.data``'s dataset, e.g. your own
    ``torch.utils.data.Dataset`` as a :class:`~crmvae.data.StreamedDataset` (read through a
    ``DataLoader`` set by ``data.num_workers`` and ``data.pin_memory``). A resumed run needs the
    same data again.

    Raises :class:`ConfigError` for a bad setting, an occupied ``out_dir``, a dataset that does
    not fit the model, or a resumed run whose configuration changed (other than
    :data:`RESUMABLE_KEYS`); :class:`CheckpointError` when there is nothing to resume; and
    :class:`NonFiniteLossError` when a loss term becomes NaN/inf (the last good state is saved).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) or in a joined process group, every process calls
    ``train`` and the run is data-parallel; every rank returns rank 0's :class:`TrainResult`.
    """
    out = Path(out_dir)
    config = from_dict(RunConfig, to_dict(config), where="run config")  # values assigned after it was built
    ctx = detect_context()
    _check_batch_size(config.train, ctx.world_size)
    for name in config.train.loggers:  # on every rank: rank 0 alone builds the loggers
        LOGGERS.lookup(name, "train.loggers")
    build_optimizer([torch.zeros(1, requires_grad=True)], config.train, torch.device("cpu"))  # before any data
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    with process_group(ctx, device) as device:
        checkpoint = ctx.from_main(lambda: _open_run_dir(out, resume))
        torch.manual_seed(config.train.seed)
        model = MultimodalVAE(config.model)  # the same initial weights on every rank
        if ctx.rank > 0:  # rank 0 goes on with the single-process noise stream, the others get their own
            torch.manual_seed(rank_seed(config.train.seed, ctx.rank))
        # the resolved configuration: objective and dataset parameters with their defaults filled in
        data = replace(config.data, params=dataset_info(config.data)["params"])
        config = replace(config, data=data, model=model.config)
        if checkpoint is not None:
            saved = from_dict(RunConfig, checkpoint["run_config"], where=f"{out / CHECKPOINT_FILE}")
            changed = _check_same_run(out, saved, config)
            if changed and ctx.is_main:
                log.warning("resuming %s with changed optimisation settings: %s", out, changed)
        train_set, test_set = datasets or ctx.local_main_first(
            lambda: (load_source(config.data, "train"), load_source(config.data, "test"))
        )
        train_set, test_set = (with_loading(dataset, config.data, device) for dataset in (train_set, test_set))
        for dataset in (train_set, test_set):
            check_dataset(config.model, dataset)
        check_observed(train_set)
        if ctx.is_main:
            save_config(config, out / CONFIG_FILE)
            (out / SUMMARY_FILE).unlink(missing_ok=True)  # a resumed run is unfinished until it ends again
        model = model.to(device, memory_format=memory_format(config.train))
        trainer = Trainer(config, out, model, train_set, test_set, device, checkpoint, ctx, callbacks)
        try:
            trainer.run()
            return ctx.from_main(trainer.finish)
        finally:
            trainer.callbacks.close()
            ctx.settle()


# --------------------------------------------------------------------------------------------
# the loop


class Trainer:
    """One training process (of one rank): the model, optimizer, position and bookkeeping.

    Every rank keeps the same position, global loss sums and early-stopping counters; rank 0 alone
    evaluates, calls the callbacks and writes files. Callbacks may read ``config``, ``out``,
    ``model``, ``optimizer``, ``state`` (the checkpointed position), ``lr`` and ``beta_scale``
    (those of the last step), ``names`` (the logged terms), ``train_set``, ``val_set`` and
    ``test_set``.
    """

    def __init__(
        self, config: RunConfig, out: Path, model: MultimodalVAE, train_set: BatchSource,
        test_set: BatchSource, device: torch.device, checkpoint: dict[str, Any] | None,
        ctx: DistContext, callbacks: Sequence[Callback] = (),
    ) -> None:
        tc = config.train
        self.config, self.out, self.model, self.device, self.ctx = config, out, model, device, ctx
        self.train_set, self.val_set = validation_split(train_set, tc.validation_size, tc.seed)
        self.test_set = test_set
        self.optimizer = build_optimizer(model.parameters(), tc, device)
        self.state = _State()
        self.names: list[str] = []
        self.sums, self.mark = TermSums(), TermSums()  # epoch sums; their copy at the last log
        self.best_weights: dict[str, Tensor] | None = None  # rank 0: the weights of the best validation loss
        if checkpoint is not None:
            self._restore(checkpoint)
        self.net = wrap(model, ctx, device)
        self.steps_per_epoch = self.train_set.num_batches(tc.batch_size, tc.drop_last)
        if not self.steps_per_epoch:
            raise ConfigError(f"train.drop_last with train.batch_size={tc.batch_size} leaves no batch of the "
                              f"{len(self.train_set)} training examples of {self.train_set.name}")
        if self.state.step_in_epoch > self.steps_per_epoch:
            raise CheckpointError(
                f"{out / CHECKPOINT_FILE}: step {self.state.step_in_epoch} of an epoch of {self.steps_per_epoch} steps; "
                f"the file is damaged"
            )
        self.planned_steps = tc.epochs * self.steps_per_epoch
        self.total_steps = self.planned_steps if tc.max_steps is None else min(tc.max_steps, self.planned_steps)
        self.lr, self.beta_scale = tc.lr, 1.0
        self.grids: list[Path] = []
        epoch_examples = min(len(self.train_set), self.steps_per_epoch * tc.batch_size)  # less with drop_last
        progress = Progress(tc.epochs, self.steps_per_epoch, epoch_examples, self.total_steps,
                            bar=tc.progress and ctx.is_main and live())
        self.callbacks = build_callbacks(tc, out, ctx.is_main, progress, callbacks)
        self.session_start = self.log_time = time.perf_counter()
        self.session_steps = 0
        self.elapsed_before = self.state.elapsed_s
        self.log_examples = self.state.examples_seen

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT_FILE
        load_weights(self.model, checkpoint["model"], path)
        _load_optimizer(self.optimizer, checkpoint["optimizer"], path)
        self.state = _State(**{f.name: checkpoint[f.name] for f in fields(_State) if f.name in checkpoint})
        self.names = list(checkpoint["term_names"])
        self.sums = TermSums.from_state(checkpoint["epoch_sums"], self.device)
        self.mark = TermSums.from_state(checkpoint["log_mark"], self.device)
        if self.ctx.is_main and checkpoint.get("best_model") is not None:
            self.best_weights = {k: v.to(self.device) for k, v in checkpoint["best_model"].items()}
        rng = self._own_rng_state(checkpoint)
        if rng is None:
            torch.manual_seed(rank_seed(self.config.train.seed, self.ctx.rank, self.state.global_step))
        else:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.device)

    def _own_rng_state(self, checkpoint: dict[str, Any]) -> dict[str, Tensor] | None:
        """This rank's RNG state in ``checkpoint``; ``None`` for a rank > 0 when the number of
        processes changed (its noise stream is then reseeded and the resumption is not bit-exact)."""
        ctx = self.ctx
        states = checkpoint.get("rank_rng_states") or [checkpoint["rng_state"]]
        if len(states) == ctx.world_size:
            return states[ctx.rank]
        if ctx.is_main:
            log.warning(
                "resuming with %d process(es), the checkpoint was written by %d: the noise streams of ranks > 0 "
                "are reseeded, so the run will not be bit-identical to an uninterrupted one", ctx.world_size, len(states),
            )
        return states[0] if ctx.is_main else None

    def elapsed(self) -> float:
        """Wall time of the whole run (earlier, resumed processes up to their last checkpoint included)."""
        return self.elapsed_before + self.session_seconds()

    def session_seconds(self) -> float:
        """Wall time of this process's training so far."""
        return time.perf_counter() - self.session_start

    def run(self) -> None:
        self.callbacks.on_train_start(self)
        s = self.state
        while s.global_step < self.total_steps and not s.early_stopped:
            self._train_epoch()

    def _train_epoch(self) -> None:
        tc, s = self.config.train, self.state
        generator = torch.Generator().manual_seed(epoch_seed(tc.seed, s.epoch))
        self.callbacks.on_epoch_start(self)
        epoch_start = self.log_time = time.perf_counter()
        self.log_examples = epoch_examples = s.examples_seen
        batches = self.train_set.batches(tc.batch_size, shuffle=True, generator=generator, drop_last=tc.drop_last,
                                         start=s.step_in_epoch)
        for batch in batches:
            self._step(batch)
            self.callbacks.on_step_end(self)
            if s.global_step % tc.log_every == 0 and self.ctx.is_main:
                self._log_step()
            if s.step_in_epoch == self.steps_per_epoch or s.global_step >= self.total_steps:
                break  # the epoch's end (below) writes the checkpoint
            if s.global_step % tc.checkpoint_every == 0:
                self.save_checkpoint()
        self.callbacks.on_epoch_end(self)
        self._close_epoch(s.examples_seen - epoch_examples, time.perf_counter() - epoch_start, epoch_start)

    def _step(self, batch: Batch) -> None:
        """One optimizer step on a global batch, of which this rank computes its share."""
        tc, s = self.config.train, self.state
        rng = _rng_state(self.device)  # the state before this step, for the non-finite checkpoint
        shard, count = self.ctx.shard(batch)
        shard = shard.to(self.device, memory_format(tc))
        n = len(batch)
        self.lr = learning_rate(tc, s.global_step, self.planned_steps, s.plateau_reductions)
        self.beta_scale = beta_scale(tc, s.global_step)
        with autocast(self.device, tc.precision):
            loss, terms = self.net(shard.data, shard.mask, self.beta_scale)
        values = self.ctx.mean(stack_values(ObjectiveOutput(loss, terms)), count, n)  # global batch means
        if not self.names:
            self.names = [LOSS, *terms]
        if not bool(torch.isfinite(values).all()):  # the step's only host sync; the same on every rank
            self._non_finite(values, rng)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * loss_weight(count, n, self.ctx.world_size)).backward()
        if tc.grad_clip_norm is not None:  # after DDP's average: the norm of the global gradient
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.optimizer.step()
        self.sums.add(values, n)
        s.step_in_epoch += 1
        s.global_step += 1
        s.examples_seen += n
        self.session_steps += 1

    def _non_finite(self, values: Tensor, rng: dict[str, Tensor]) -> None:
        bad = [name for name, v in zip(self.names, values.tolist()) if not math.isfinite(v)]
        terms = [name for name in bad if name != LOSS] or ["the total loss"]
        path = self.save_checkpoint(rng)
        s, lr = self.state, self.config.train.lr
        raise NonFiniteLossError(
            f"non-finite loss in epoch {s.epoch + 1}, step {s.step_in_epoch + 1} (global step {s.global_step + 1}): "
            f"{', '.join(terms)} became NaN/inf. The state before this step (no update applied) is saved in "
            f"{path}; continue it with a lower learning rate (train.lr is {lr}): "
            f"crmvae train --out {self.out} --resume --set train.lr={lr / 10:g} (or with train.grad_clip_norm), "
            f"start again with train.precision=fp32, or look for extreme values in the data."
        )

    def _log_step(self) -> None:
        s, now = self.state, time.perf_counter()
        values = self.sums.means(self.names, minus=self.mark)
        rate = (s.examples_seen - self.log_examples) / max(now - self.log_time, 1e-9)
        self.callbacks.on_log(self, {
            "kind": "step", "epoch": s.epoch + 1, "step": s.step_in_epoch, "global_step": s.global_step,
            **values, "lr": self.lr, "beta_scale": self.beta_scale, "examples_per_s": rate, "elapsed_s": self.elapsed(),
        })
        self.mark = self.sums.copy()
        self.log_time, self.log_examples = now, s.examples_seen

    def _close_epoch(self, examples: int, train_s: float, epoch_start: float) -> None:
        """Validate a complete epoch (early stopping), evaluate and log it on rank 0 (``complete``
        false when ``max_steps`` cut it), checkpoint."""
        s = self.state
        complete = s.step_in_epoch == self.steps_per_epoch
        val_loss = self._validate() if complete and self.val_set is not None else None
        if complete and self.config.train.keep_best_on_train and self._may_keep():
            self._keep_if_best_on_train()
        if self.ctx.is_main:
            self._log_epoch(complete, examples, train_s, epoch_start, val_loss)
        if complete:
            s.epoch += 1
            s.step_in_epoch = 0
            self.sums, self.mark = TermSums(), TermSums()
            every = self.config.train.save_every_epochs
            if every and s.epoch % every == 0 and self.ctx.is_main:  # before the checkpoint: a kill between
                # the two redoes the epoch and writes the same file again
                save_model(self.model, self.out / EPOCHS_DIR / f"epoch{s.epoch}.pt", run_config=to_dict(self.config),
                           epochs_completed=s.epoch, global_step=s.global_step)
        self.save_checkpoint()

    def _validate(self) -> float:
        """The validation loss (computed on rank 0, shared with every rank); from
        ``keep_best_from_epoch`` on, keeps the best weights and counts the epochs without improvement."""
        tc, s = self.config.train, self.state
        loss = self.ctx.from_main(lambda: self._evaluate(self.val_set)[LOSS])
        if tc.lr_schedule == "plateau":
            s.plateau_best, s.plateau_bad_epochs, s.plateau_reductions = plateau_update(
                tc, loss, s.plateau_best, s.plateau_bad_epochs, s.plateau_reductions)
        if not self._may_keep():
            return loss
        if s.best_val_loss is None or loss < s.best_val_loss:
            s.best_val_loss, s.epochs_without_improvement = loss, 0
            self._keep_weights()
        else:
            s.epochs_without_improvement += 1
            s.early_stopped = tc.early_stopping_patience is not None and s.epochs_without_improvement >= tc.early_stopping_patience
        return loss

    def _may_keep(self) -> bool:
        """Whether the epoch closing now may become the best one (``train.keep_best_from_epoch``)."""
        return self.state.epoch + 1 >= self.config.train.keep_best_from_epoch

    def _keep_if_best_on_train(self) -> None:
        """``train.keep_best_on_train``: keep the weights when the epoch's mean training loss (the
        global sums, the same on every rank) is the lowest so far."""
        s = self.state
        loss = self._epoch_train_loss()
        if s.best_train_loss is None or loss < s.best_train_loss:
            s.best_train_loss = loss
            self._keep_weights()

    def _epoch_train_loss(self) -> float:
        return self.sums.means([LOSS])[LOSS]

    def _keep_weights(self) -> None:
        """This epoch's weights become the best ones (held by rank 0, which writes them)."""
        self.state.best_epoch = self.state.epoch + 1
        if self.ctx.is_main:
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _evaluate(self, dataset: BatchSource) -> dict[str, float]:
        tc = self.config.train
        return evaluate(self.model, dataset, tc.eval_batch_size or tc.batch_size, tc.precision, tc.seed, memory_format(tc))

    def _log_epoch(self, complete: bool, examples: int, train_s: float, epoch_start: float, val_loss: float | None) -> None:
        s = self.state
        train_means = self.sums.means(self.names)
        test_means = self._evaluate(self.test_set)
        record = {
            "kind": "epoch", "epoch": s.epoch + 1, "complete": complete, "global_step": s.global_step,
            "train_loss": train_means[LOSS], **{f"train/{k}": v for k, v in train_means.items() if k != LOSS},
            "test_loss": test_means[LOSS], **{f"test/{k}": v for k, v in test_means.items() if k != LOSS},
            **({} if val_loss is None else {"val_loss": val_loss}),
            "examples_per_s": examples / max(train_s, 1e-9), "epoch_s": time.perf_counter() - epoch_start,
        }
        s.last_epoch_metrics = record
        self.callbacks.on_evaluation(self, record)

    def save_checkpoint(self, rng: dict[str, Tensor] | None = None) -> Path:
        """Write the training state atomically to ``checkpoint.pt`` (``weights_only``-loadable).

        Under DDP every rank calls it: rank 0 writes the weights and every rank's RNG state
        (``rank_rng_states``), and all return once the file is in place.
        """
        states = self.ctx.gather(rng or _rng_state(self.device))
        path = self.out / CHECKPOINT_FILE
        if self.ctx.is_main:
            self.state.elapsed_s = self.elapsed()
            save_model(
                self.model, path,
                run_config=to_dict(self.config),
                optimizer=self.optimizer.state_dict(),
                **asdict(self.state),
                term_names=self.names,
                epoch_sums=self.sums.state(),
                log_mark=self.mark.state(),
                rng_state=states[0],
                **({"rank_rng_states": states} if self.ctx.enabled else {}),
                **({} if self.best_weights is None else {"best_model": self.best_weights}),
            )
        self.ctx.barrier()
        if self.ctx.is_main:
            self.callbacks.on_checkpoint(self, path)
        return path

    def finish(self) -> TrainResult:
        """Write ``model.pt`` (with a validation split or ``keep_best_on_train``, the best epoch's
        weights), the generation grids and ``summary.json`` (rank 0)."""
        s, out = self.state, self.out
        if self.best_weights is not None:
            load_weights(self.model, self.best_weights, out / CHECKPOINT_FILE)
        save_model(self.model, out / MODEL_FILE, run_config=to_dict(self.config),
                   epochs_completed=s.epoch, global_step=s.global_step)
        self.callbacks.on_train_end(self)
        last = s.last_epoch_metrics
        elapsed = self.elapsed()
        paths = {
            "config": out / CONFIG_FILE, "metrics": out / METRICS_FILE, "checkpoint": out / CHECKPOINT_FILE,
            "model": out / MODEL_FILE, "summary": out / SUMMARY_FILE,
        }
        summary = {
            "epochs_completed": s.epoch, "global_step": s.global_step, "examples_seen": s.examples_seen,
            "stopped_early": self.total_steps < self.planned_steps or s.early_stopped,
            "early_stopping": s.early_stopped,
            "model": self._kept(),
            "best_epoch": s.best_epoch if self.best_weights is not None else None,
            "best_val_loss": s.best_val_loss,
            **({"best_train_loss": s.best_train_loss} if self.config.train.keep_best_on_train else {}),
            "train_loss": last.get("train_loss"), "test_loss": last.get("test_loss"),
            "last_epoch": last.get("epoch"), "wall_time_s": elapsed,
            "examples_per_s": s.examples_seen / max(elapsed, 1e-9),
            "files": {k: str(v) for k, v in paths.items()} | {"grids": [str(p) for p in self.grids]},
        }
        atomic_write(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        return TrainResult(
            out, self.config, s.epoch, s.global_step, last, paths["config"], paths["metrics"],
            paths["checkpoint"], paths["model"], paths["summary"], self.grids,
        )


    def _kept(self) -> str:
        """Which weights ``model.pt`` holds, for ``summary.json``."""
        if self.best_weights is None:
            return "last step"
        return "best training loss" if self.config.train.keep_best_on_train else "best validation loss"


def build_callbacks(tc: TrainConfig, out: Path, is_main: bool, progress: Progress, extra: Sequence[Callback] = ()) -> Callbacks:
    """The callbacks of a rank: on rank 0 (``is_main``) the metrics file, ``progress`` and the
    grids, then the loggers of ``train.loggers``, then ``extra``; none on the other ranks, which
    therefore build no logger."""
    if not is_main:
        return Callbacks([])
    built_in = [MetricsFile(out / METRICS_FILE), ProgressReport(progress),
                GenerationGrids(out / GRIDS_DIR, tc.grid_examples, tc.grids_every_epochs)]
    return Callbacks([*built_in, *(LOGGERS.lookup(name, "train.loggers")(out) for name in tc.loggers), *extra])


# --------------------------------------------------------------------------------------------
# checks and small helpers


def _check_batch_size(tc: TrainConfig, world_size: int) -> None:
    """The global batch splits evenly over the processes (other values are checked by :class:`TrainConfig`)."""
    if tc.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size={tc.batch_size} is the global batch and must be a multiple of the number of "
            f"processes (WORLD_SIZE={world_size}), so that every rank takes the same share; "
            f"use e.g. train.batch_size={max(world_size, tc.batch_size - tc.batch_size % world_size)}"
        )


def run_config_to_resume(out: str | Path) -> dict[str, Any] | None:
    """The configuration to resume the run in ``out`` with, as a nested mapping: its ``config.yaml``,
    where any key the file lacks is taken from the run configuration stored in ``checkpoint.pt``
    (else from the defaults), or the stored one alone when the file is missing; ``None`` without
    either. A warning names what was taken from where."""
    out = Path(out)
    config_file, checkpoint = out / CONFIG_FILE, out / CHECKPOINT_FILE
    values = load_mapping(config_file) if config_file.is_file() else None
    if values is not None and not missing_keys(RunConfig, values):
        return values
    if not checkpoint.is_file():
        if values is not None:
            warn_missing_keys(RunConfig, values, str(config_file))
        return values
    stored = read_checkpoint(checkpoint)["run_config"]
    if values is None:
        log.warning("%s is missing; resuming with the run configuration stored in %s", config_file, checkpoint)
        return stored
    warn_missing_keys(RunConfig, values, str(config_file), source=f"the values stored in {checkpoint}")
    return merge_values(stored, values)


def _open_run_dir(out: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, or ``None`` for a new run, whose folder is created at once (an
    unwritable place fails before the data is built); refuses to overwrite a run. Temporaries of
    writes cut short by a kill are removed first."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {out} is a file")
    remove_stale_temporaries(out)
    checkpoint = out / CHECKPOINT_FILE
    contents = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if resume:
        if not checkpoint.is_file():
            why = (f"{out} holds {contents} but no {CHECKPOINT_FILE} (the run stopped before its first "
                   f"checkpoint; delete the folder and start again)") if contents else f"{out} holds no run"
            raise CheckpointError(f"nothing to resume: {why}")
        payload = read_checkpoint(checkpoint)
        if "optimizer" not in payload:
            raise CheckpointError(f"{checkpoint} holds a model but no training state; it cannot be resumed")
        return payload
    if checkpoint.is_file() or (out / MODEL_FILE).is_file():
        what = "a finished" if (out / MODEL_FILE).is_file() else "an unfinished"
        raise ConfigError(
            f"{out} already holds {what} run; continue it with resume=True (crmvae train --resume) "
            f"or choose another output directory"
        )
    if contents:
        raise ConfigError(f"output directory {out} is not empty ({', '.join(contents[:5])}); choose another one")
    make_dir(out)
    return None


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's optimizer state, checked to hold one state of each parameter's shape."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the optimizer state does not fit the model ({exc}); the file is damaged") from None
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state[param].items():
                if isinstance(value, Tensor) and value.ndim and value.shape != param.shape:
                    raise CheckpointError(
                        f"{path}: the optimizer state {name!r} is {list(value.shape)} for a parameter of "
                        f"shape {list(param.shape)}; the file is damaged"
                    )


def _check_same_run(out: Path, saved: RunConfig, given: RunConfig) -> str:
    """Refuse a resumption whose configuration differs outside :data:`RESUMABLE_KEYS`; return the
    changes of :data:`OPTIMISATION_KEYS` (``"train.lr: 0.0005 -> 0.001"``, empty when none), and of
    ``train.epochs`` where a cosine schedule spans the epochs (its learning rate then jumps)."""
    old, new = flatten(to_dict(saved), lists=True), flatten(to_dict(given), lists=True)
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    refused = [k for k in differ if k not in RESUMABLE_KEYS]
    if refused:
        details = "; ".join(f"{k}: run has {old.get(k)!r}, given {new.get(k)!r}" for k in refused)
        raise ConfigError(
            f"cannot resume {out}: the configuration differs from the run's in {details}. "
            f"Only {', '.join(sorted(RESUMABLE_KEYS))} may change on resume"
        )
    stretched = "train.epochs" in differ and schedule_depends_on_epochs(given.train)
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ
                     if k in OPTIMISATION_KEYS or (stretched and k == "train.epochs"))


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def memory_format(tc: TrainConfig) -> torch.memory_format:
    """``torch.channels_last`` with ``train.channels_last``, else ``torch.contiguous_format``."""
    return torch.channels_last if tc.channels_last else torch.contiguous_format


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast on ``device`` when ``precision`` resolves to bf16 (:func:`resolve_precision`), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")
