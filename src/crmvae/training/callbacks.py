"""Hooks into the training loop: :class:`Callback`, and the built-in callbacks that write
``metrics.jsonl``, report progress and draw the generation grids through the same hooks.

The loop calls the hooks on rank 0 alone (other ranks of a data-parallel run get none), in the
order given: the built-in callbacks first, then the configured loggers, then those passed to
:func:`~crmvae.training.train`. ``trainer`` is the running
:class:`~crmvae.training.trainer.Trainer` (``config``, ``model``, ``out``, ``state`` with
``epoch``, ``step_in_epoch`` and ``global_step``, ``lr``, ``beta_scale``). A hook that raises stops
training; the last checkpoint stays, so the run can be resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..visualize import save_generation_grids
from .metrics import MetricsLog
from .progress import Progress, format_duration

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """No-op hooks; override those needed. ``on_step_end`` runs after every optimizer step, so it
    must stay cheap (no host sync, no allocation); the others run at log, epoch and checkpoint
    intervals."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first step of this process (``trainer.state`` is the resumed position)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """At the start of an epoch, or of its remainder after a resume."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After an optimizer step; ``trainer.state.global_step`` counts it."""

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Every ``train.log_every`` steps: the interval's ``metrics.jsonl`` step record."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """When an epoch's steps end (or ``train.max_steps`` cuts it), before its evaluation."""

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After an epoch's evaluation: its ``metrics.jsonl`` epoch record (train, test and, with a
        validation split, validation losses)."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """After ``checkpoint.pt`` was written."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After ``model.pt`` was written, before ``summary.json``."""

    def on_grids(self, trainer: Trainer, paths: list[Path]) -> None:
        """After generation grids were written to ``paths`` (the built-in grids callback draws
        them in its ``on_train_end``, so this comes before the others' ``on_train_end``)."""

    def close(self) -> None:
        """Once, when training ends, whether it succeeded or not (flush and release resources)."""


class Callbacks(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)
        # only those that override it: the per-step cost of a no-op hook is nothing
        self.step_end = [c for c in self.callbacks if type(c).on_step_end is not Callback.on_step_end]

    def _each(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def on_train_start(self, trainer: Trainer) -> None:
        self._each("on_train_start", trainer)

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._each("on_epoch_start", trainer)

    def on_step_end(self, trainer: Trainer) -> None:
        for callback in self.step_end:
            callback.on_step_end(trainer)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._each("on_log", trainer, record)

    def on_epoch_end(self, trainer: Trainer) -> None:
        self._each("on_epoch_end", trainer)

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._each("on_evaluation", trainer, record)

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        self._each("on_checkpoint", trainer, path)

    def on_train_end(self, trainer: Trainer) -> None:
        self._each("on_train_end", trainer)

    def on_grids(self, trainer: Trainer, paths: list[Path]) -> None:
        self._each("on_grids", trainer, paths)

    def close(self) -> None:
        self._each("close")


class MetricsFile(Callback):
    """Appends the step and epoch records to ``metrics.jsonl``, the record of a run; on resume it
    first drops records past the checkpoint."""

    def __init__(self, path: Path) -> None:
        self.log = MetricsLog(path)

    def on_train_start(self, trainer: Trainer) -> None:
        self.log.truncate_after(trainer.state.global_step)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.log.write(record)

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.log.write(record)


class ProgressReport(Callback):
    """The progress bar (or plain lines) and a line per epoch, on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seen = 0

    def on_epoch_start(self, trainer: Trainer) -> None:
        s = trainer.state
        self.seen = s.examples_seen
        self.progress.start_epoch(s.epoch, min(s.step_in_epoch * trainer.config.train.batch_size, len(trainer.train_set)))

    def on_step_end(self, trainer: Trainer) -> None:
        seen = trainer.state.examples_seen
        self.progress.update(seen - self.seen)
        self.seen = seen

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        values = {name: record[name] for name in trainer.names}
        self.progress.log(record["step"], record["global_step"], values, record["examples_per_s"],
                          trainer.session_steps, trainer.session_seconds())

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.progress.end_epoch()

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        val = f", validation loss {record['val_loss']:.6g}" if "val_loss" in record else ""
        self.progress.write(
            f"epoch {record['epoch']}/{trainer.config.train.epochs}{'' if record['complete'] else ' (stopped at max_steps)'}: "
            f"train loss {record['train_loss']:.6g}, test loss {record['test_loss']:.6g}{val}, "
            f"{record['examples_per_s']:.1f} ex/s, {format_duration(record['epoch_s'])}"
        )

    def close(self) -> None:
        self.progress.end_epoch()


class GenerationGrids(Callback):
    """Draws the generation grids of the final model into ``out_dir`` (``train.grid_examples``
    test examples), and with ``train.grids_every_epochs`` those of every k-th epoch into
    ``out_dir/epoch<k>``, and announces them through ``on_grids``. The grids draw from a private
    RNG, so they leave training as it would be without them."""

    def __init__(self, out_dir: Path, examples: int, every_epochs: int | None = None) -> None:
        self.out_dir, self.examples, self.every_epochs = out_dir, examples, every_epochs

    def _draw(self, trainer: Trainer, out_dir: Path) -> list[Path]:
        test_set, tc = trainer.test_set, trainer.config.train
        batch = test_set.batch(torch.arange(min(self.examples, len(test_set))))
        paths = save_generation_grids(trainer.model, batch, out_dir, seed=tc.seed, decode_text=test_set.text_decoders)
        trainer.callbacks.on_grids(trainer, paths)
        return paths

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.examples > 0 and self.every_epochs and record["complete"] and record["epoch"] % self.every_epochs == 0:
            self._draw(trainer, self.out_dir / f"epoch{record['epoch']}")

    def on_train_end(self, trainer: Trainer) -> None:
        if self.examples > 0:
            trainer.grids.extend(self._draw(trainer, self.out_dir))
