"""The training loop: exact resume, a non-finite-loss guard, metrics, checkpoints and grids.

A run directory holds ``config.yaml`` (the resolved configuration), ``metrics.jsonl``,
``checkpoint.pt`` (the latest training state, rewritten atomically every
``train.checkpoint_every`` steps and at each epoch end), and at the end ``model.pt``,
``summary.json`` and ``grids/*.png``.

Resuming is exact: a checkpoint holds the weights, the optimizer state, the position in the
epoch, the running loss sums and the global RNG state, and every epoch's shuffle comes from its
own generator seeded with ``(seed, epoch)``; test evaluations use a private RNG. An interrupted
and resumed run therefore ends with the same weights as an uninterrupted one.

Under ``torchrun`` the run is data-parallel (:mod:`crmvae.training.distributed`): every rank
takes its share of each global batch, logged values are global means, rank 0 alone writes the
run directory, and a non-finite loss on any rank stops all of them.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
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
    from_dict,
    save_config,
    to_dict,
)
from ..data import Batch, BatchSource, dataset_info, load_source
from ..data.streamed import with_loading
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..fileio import atomic_write, make_dir, remove_stale_temporaries
from ..model import MultimodalVAE
from ..objectives import ObjectiveOutput
from ..seeding import private_rng
from ..visualize import save_generation_grids
from .distributed import (
    DistContext,
    detect_context,
    loss_weight,
    process_group,
    rank_seed,
    wrap,
)
from .metrics import LOSS, MetricsLog, TermSums, stack_values
from .progress import Progress, format_duration, live

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
GRIDS_DIR = "grids"

log = logging.getLogger(__name__)

#: Settings that may differ between a run and its resumption.
RESUMABLE_KEYS = frozenset({
    "train.epochs", "train.max_steps", "train.progress", "train.channels_last", "data.num_workers", "data.pin_memory",
})


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
    datasets: tuple[BatchSource, BatchSource] | None = None,
) -> TrainResult:
    """Train ``config`` into ``out_dir`` (continuing its checkpoint when ``resume``).

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
            _check_same_run(out, saved, config)
        train_set, test_set = datasets or ctx.local_main_first(
            lambda: (load_source(config.data, "train"), load_source(config.data, "test"))
        )
        train_set, test_set = (with_loading(dataset, config.data, device) for dataset in (train_set, test_set))
        for dataset in (train_set, test_set):
            check_dataset(config.model, dataset)
        if ctx.is_main:
            save_config(config, out / CONFIG_FILE)
            (out / SUMMARY_FILE).unlink(missing_ok=True)  # a resumed run is unfinished until it ends again
        model = model.to(device, memory_format=memory_format(config.train))
        run = _Run(config, out, model, train_set, test_set, device, checkpoint, ctx)
        run.run()
        return ctx.from_main(run.finish)


# --------------------------------------------------------------------------------------------
# the loop


class _Run:
    """One training process (of one rank): the model, optimizer, position and bookkeeping.

    Every rank keeps the same position and global loss sums; rank 0 alone logs and writes files.
    """

    def __init__(
        self, config: RunConfig, out: Path, model: MultimodalVAE, train_set: BatchSource,
        test_set: BatchSource, device: torch.device, checkpoint: dict[str, Any] | None,
        ctx: DistContext,
    ) -> None:
        tc = config.train
        self.config, self.out, self.model, self.device, self.ctx = config, out, model, device, ctx
        self.train_set, self.test_set = train_set, test_set
        # fused: one kernel over all parameters (the same update, several times faster than the
        # default foreach form on CPU)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, fused=device.type in ("cpu", "cuda"))
        self.metrics = MetricsLog(out / METRICS_FILE)
        self.state = _State()
        self.names: list[str] = []
        self.sums, self.mark = TermSums(), TermSums()  # epoch sums; their copy at the last log
        if checkpoint is not None:
            self._restore(checkpoint)
        self.net = wrap(model, ctx, device)
        self.steps_per_epoch = train_set.num_batches(tc.batch_size)
        if self.state.step_in_epoch > self.steps_per_epoch:
            raise CheckpointError(
                f"{out / CHECKPOINT_FILE}: step {self.state.step_in_epoch} of an epoch of {self.steps_per_epoch} steps; "
                f"the file is damaged"
            )
        self.planned_steps = tc.epochs * self.steps_per_epoch
        self.total_steps = self.planned_steps if tc.max_steps is None else min(tc.max_steps, self.planned_steps)
        self.progress = Progress(
            tc.epochs, self.steps_per_epoch, len(train_set), self.total_steps,
            bar=tc.progress and ctx.is_main and live(),
        )
        self.session_start = self.log_time = time.perf_counter()
        self.session_steps = 0
        self.elapsed_before = self.state.elapsed_s
        self.log_examples = self.state.examples_seen

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT_FILE
        load_weights(self.model, checkpoint["model"], path)
        _load_optimizer(self.optimizer, checkpoint["optimizer"], path)
        self.state = _State(**{f.name: checkpoint[f.name] for f in fields(_State)})
        self.names = list(checkpoint["term_names"])
        self.sums = TermSums.from_state(checkpoint["epoch_sums"], self.device)
        self.mark = TermSums.from_state(checkpoint["log_mark"], self.device)
        rng = self._own_rng_state(checkpoint)
        if rng is None:
            torch.manual_seed(rank_seed(self.config.train.seed, self.ctx.rank, self.state.global_step))
        else:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        if self.ctx.is_main:
            self.metrics.truncate_after(self.state.global_step)

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
        return self.elapsed_before + time.perf_counter() - self.session_start

    def run(self) -> None:
        try:
            while self.state.global_step < self.total_steps:
                self._train_epoch()
        finally:
            self.progress.end_epoch()

    def _train_epoch(self) -> None:
        tc, s = self.config.train, self.state
        generator = torch.Generator().manual_seed(epoch_seed(tc.seed, s.epoch))
        self.progress.start_epoch(s.epoch, min(s.step_in_epoch * tc.batch_size, len(self.train_set)))
        epoch_start = self.log_time = time.perf_counter()
        self.log_examples = epoch_examples = s.examples_seen
        batches = self.train_set.batches(tc.batch_size, shuffle=True, generator=generator, start=s.step_in_epoch)
        for batch in batches:
            self._step(batch)
            if s.global_step % tc.log_every == 0 and self.ctx.is_main:
                self._log_step()
            if s.step_in_epoch == self.steps_per_epoch or s.global_step >= self.total_steps:
                break  # the epoch's end (below) writes the checkpoint
            if s.global_step % tc.checkpoint_every == 0:
                self.save_checkpoint()
        self.progress.end_epoch()
        self._close_epoch(s.examples_seen - epoch_examples, time.perf_counter() - epoch_start, epoch_start)

    def _step(self, batch: Batch) -> None:
        """One optimizer step on a global batch, of which this rank computes its share."""
        rng = _rng_state(self.device)  # the state before this step, for the non-finite checkpoint
        shard, count = self.ctx.shard(batch)
        shard = shard.to(self.device, memory_format(self.config.train))
        n = len(batch)
        with autocast(self.device, self.config.train.precision):
            loss, terms = self.net(shard.data, shard.mask)
        values = self.ctx.mean(stack_values(ObjectiveOutput(loss, terms)), count, n)  # global batch means
        if not self.names:
            self.names = [LOSS, *terms]
        if not bool(torch.isfinite(values).all()):  # the step's only host sync; the same on every rank
            self._non_finite(values, rng)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * loss_weight(count, n, self.ctx.world_size)).backward()
        self.optimizer.step()
        self.sums.add(values, n)
        self.state.step_in_epoch += 1
        self.state.global_step += 1
        self.state.examples_seen += n
        self.session_steps += 1
        self.progress.update(n)

    def _non_finite(self, values: Tensor, rng: dict[str, Tensor]) -> None:
        bad = [name for name, v in zip(self.names, values.tolist()) if not math.isfinite(v)]
        terms = [name for name in bad if name != LOSS] or ["the total loss"]
        path = self.save_checkpoint(rng)
        s = self.state
        raise NonFiniteLossError(
            f"non-finite loss in epoch {s.epoch + 1}, step {s.step_in_epoch + 1} (global step {s.global_step + 1}): "
            f"{', '.join(terms)} became NaN/inf. The state before this step (no update applied) is saved in "
            f"{path}; try a lower train.lr (now {self.config.train.lr}) or train.precision=fp32, or look for "
            f"extreme values in the data."
        )

    def _log_step(self) -> None:
        s, now = self.state, time.perf_counter()
        values = self.sums.means(self.names, minus=self.mark)
        rate = (s.examples_seen - self.log_examples) / max(now - self.log_time, 1e-9)
        self.metrics.write({
            "kind": "step", "epoch": s.epoch + 1, "step": s.step_in_epoch, "global_step": s.global_step,
            **values, "examples_per_s": rate, "elapsed_s": self.elapsed(),
        })
        self.progress.log(s.step_in_epoch, s.global_step, values, rate, self.session_steps, now - self.session_start)
        self.mark = self.sums.copy()
        self.log_time, self.log_examples = now, s.examples_seen

    def _close_epoch(self, examples: int, train_s: float, epoch_start: float) -> None:
        """Evaluate and log the epoch on rank 0 (``complete`` false when ``max_steps`` cut it), checkpoint."""
        s = self.state
        complete = s.step_in_epoch == self.steps_per_epoch
        if self.ctx.is_main:
            self._log_epoch(complete, examples, train_s, epoch_start)
        if complete:
            s.epoch += 1
            s.step_in_epoch = 0
            self.sums, self.mark = TermSums(), TermSums()
        self.save_checkpoint()

    def _log_epoch(self, complete: bool, examples: int, train_s: float, epoch_start: float) -> None:
        tc, s = self.config.train, self.state
        train_means = self.sums.means(self.names)
        test_means = evaluate(self.model, self.test_set, tc.batch_size, tc.precision, tc.seed, memory_format(tc))
        record = {
            "kind": "epoch", "epoch": s.epoch + 1, "complete": complete, "global_step": s.global_step,
            "train_loss": train_means[LOSS], **{f"train/{k}": v for k, v in train_means.items() if k != LOSS},
            "test_loss": test_means[LOSS], **{f"test/{k}": v for k, v in test_means.items() if k != LOSS},
            "examples_per_s": examples / max(train_s, 1e-9), "epoch_s": time.perf_counter() - epoch_start,
        }
        self.metrics.write(record)
        self.progress.write(
            f"epoch {s.epoch + 1}/{tc.epochs}{'' if complete else ' (stopped at max_steps)'}: "
            f"train loss {record['train_loss']:.6g}, test loss {record['test_loss']:.6g}, "
            f"{record['examples_per_s']:.1f} ex/s, {format_duration(record['epoch_s'])}"
        )
        s.last_epoch_metrics = record

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
            )
        self.ctx.barrier()
        return path

    def finish(self) -> TrainResult:
        """Write ``model.pt``, the generation grids and ``summary.json`` (rank 0)."""
        tc, s, out = self.config.train, self.state, self.out
        save_model(self.model, out / MODEL_FILE, run_config=to_dict(self.config),
                   epochs_completed=s.epoch, global_step=s.global_step)
        grids: list[Path] = []
        if tc.grid_examples > 0:
            count = min(tc.grid_examples, len(self.test_set))
            batch = self.test_set.batch(torch.arange(count))
            grids = save_generation_grids(
                self.model, batch, out / GRIDS_DIR, seed=tc.seed, decode_text=self.test_set.text_decoders
            )
        last = s.last_epoch_metrics
        elapsed = self.elapsed()
        paths = {
            "config": out / CONFIG_FILE, "metrics": out / METRICS_FILE, "checkpoint": out / CHECKPOINT_FILE,
            "model": out / MODEL_FILE, "summary": out / SUMMARY_FILE,
        }
        summary = {
            "epochs_completed": s.epoch, "global_step": s.global_step, "examples_seen": s.examples_seen,
            "stopped_early": self.total_steps < self.planned_steps,
            "train_loss": last.get("train_loss"), "test_loss": last.get("test_loss"),
            "last_epoch": last.get("epoch"), "wall_time_s": elapsed,
            "examples_per_s": s.examples_seen / max(elapsed, 1e-9),
            "files": {k: str(v) for k, v in paths.items()} | {"grids": [str(p) for p in grids]},
        }
        atomic_write(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        return TrainResult(
            out, self.config, s.epoch, s.global_step, last, paths["config"], paths["metrics"],
            paths["checkpoint"], paths["model"], paths["summary"], grids,
        )


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


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b[0].c": leaf}`` for nested dicts and lists of dicts."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    return {key: leaf for k, v in items for key, leaf in _flatten(v, k).items()}


def _check_same_run(out: Path, saved: RunConfig, given: RunConfig) -> None:
    old, new = _flatten(to_dict(saved)), _flatten(to_dict(given))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS)
    if differ:
        details = "; ".join(f"{k}: run has {old.get(k)!r}, given {new.get(k)!r}" for k in differ)
        raise ConfigError(
            f"cannot resume {out}: the configuration differs from the run's in {details}. "
            f"Only {', '.join(sorted(RESUMABLE_KEYS))} may change on resume"
        )


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
