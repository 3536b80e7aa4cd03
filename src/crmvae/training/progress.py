"""Training progress on stderr: a tqdm bar per epoch, or plain lines when not on a terminal."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

from tqdm import tqdm

from .metrics import LOSS

T = TypeVar("T")


def main_terms(values: dict[str, float]) -> dict[str, float]:
    """The loss and the terms summed by family (``rec``, ``kl``, ...: the name before ``/``)."""
    out = {LOSS: values[LOSS]}
    for name, value in values.items():
        if name != LOSS:
            family = name.split("/", 1)[0]
            out[family] = out.get(family, 0.0) + value
    return out


def progress_bar(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, enabled: bool) -> tqdm:
    """A transient tqdm bar on stderr, drawn only when ``enabled`` and stderr is a terminal (so logs
    written to files get no carriage-return noise); otherwise a silent pass-through."""
    return tqdm(iterable, total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()),
                leave=False, dynamic_ncols=True)


def format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress:
    """Reports training progress; a tqdm bar when ``bar`` is set, else a line per log interval.

    Args:
        epochs: number of epochs of the run (for ``epoch i/N``).
        steps_per_epoch, examples_per_epoch: sizes of an epoch (for the bar and the lines).
        total_steps: steps of the whole run (for the ETA of the plain lines).
        bar: draw tqdm bars (``train.progress`` and stderr is a terminal).
        stream: where to write (default ``sys.stderr``).
    """

    def __init__(
        self, epochs: int, steps_per_epoch: int, examples_per_epoch: int, total_steps: int,
        bar: bool, stream: TextIO | None = None,
    ) -> None:
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.examples_per_epoch = examples_per_epoch
        self.total_steps = total_steps
        self.stream = stream or sys.stderr
        self.use_bar = bar
        self._bar: tqdm | None = None
        self._epoch = 0

    def start_epoch(self, epoch: int, examples_done: int) -> None:
        """Begin epoch ``epoch`` (0-based), of which ``examples_done`` are already trained."""
        self._epoch = epoch
        if self.use_bar:
            self._bar = tqdm(
                total=self.examples_per_epoch, initial=examples_done, desc=f"epoch {epoch + 1}/{self.epochs}",
                unit="ex", file=self.stream, dynamic_ncols=True, leave=False,
            )

    def update(self, examples: int) -> None:
        if self._bar is not None:
            self._bar.update(examples)

    def log(self, step_in_epoch: int, global_step: int, values: dict[str, float], examples_per_s: float,
            session_steps: int, session_s: float) -> None:
        """Show the interval's means: bar postfix, or a plain line with the run's ETA."""
        shown = main_terms(values)
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            return
        remaining = self.total_steps - global_step
        eta = format_duration(remaining * session_s / session_steps) if session_steps else "?"
        terms = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
        self.write(
            f"epoch {self._epoch + 1}/{self.epochs} step {step_in_epoch}/{self.steps_per_epoch} "
            f"(total {global_step}/{self.total_steps}) {terms} | {examples_per_s:.1f} ex/s | "
            f"ETA {eta}"
        )

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
