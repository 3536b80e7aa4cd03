"""Progress and messages on stderr, the package's one way to report.

Progress is a tqdm bar on a terminal (a widget in Jupyter, through ``tqdm.auto``), else plain
lines (:func:`write_line`). Messages (notices, warnings) go through :mod:`logging` under the
``crmvae`` logger; :func:`show_messages` prints them as ``crmvae: warning: ...`` lines through the
same writer, so they never break a bar.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TextIO, TypeVar, final

from tqdm.auto import tqdm

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


#: Seconds between the plain progress lines written off a terminal (see :func:`progress_bar`).
LINE_INTERVAL_S = 30.0


@final
class ProgressLines:
    """The off-terminal form of a progress bar: a plain line on stderr at most every
    :data:`LINE_INTERVAL_S` seconds and one at the end, e.g.
    ``classifiers: 120/469 (26%) 3.9 it/s ETA 0:01:30 | epoch 1/5 loss/m0 0.412``. Iterate over it, or use it as a
    context manager and call :meth:`update`; :meth:`set_postfix` adds values to the lines."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _length(iterable)
        self.desc = desc
        self.n = 0
        self.postfix: dict[str, str] = {}
        self._start = self._last = time.perf_counter()
        self._unwritten = False  # progress or values since the last line

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._unwritten = True
        if time.perf_counter() - self._last >= LINE_INTERVAL_S:
            self._write()

    def set_postfix(self, values: dict[str, object]) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}
        self._unwritten = True

    def close(self) -> None:
        if self._unwritten:
            self._write()

    def _write(self) -> None:
        now = time.perf_counter()
        rate = self.n / max(now - self._start, 1e-9)
        done = f"{self.n}"
        if self.total:
            eta = format_duration((self.total - self.n) / rate) if rate > 0 else "?"
            done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%) {rate:.1f} it/s ETA {eta}"
        extra = " | " + " ".join(f"{k} {v}" for k, v in self.postfix.items()) if self.postfix else ""
        write_line(f"{self.desc}: {done}{extra}")
        self._last, self._unwritten = now, False


def live() -> bool:
    """Whether a bar can be drawn in place: stderr is a terminal, or the code runs in a Jupyter
    kernel (where :mod:`tqdm.auto` draws a notebook widget)."""
    return sys.stderr.isatty() or _in_jupyter()


def _in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")  # a kernel has imported it; never import it here
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def write_line(line: str, stream: TextIO | None = None) -> None:
    """Write one line on ``stream`` (default ``sys.stderr``), above any progress bar there."""
    stream = stream or sys.stderr
    tqdm.write(line, file=stream)
    stream.flush()


class _LineHandler(logging.Handler):
    """Log records as ``crmvae: <level>: <message>`` lines through :func:`write_line`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(f"crmvae: {record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001  (logging's contract: a failing handler reports, never raises)
            self.handleError(record)


def show_messages(level: int = logging.WARNING) -> None:
    """Print the ``crmvae`` logger's messages of ``level`` and above on stderr (once per process)."""
    logger = logging.getLogger("crmvae")
    if not any(isinstance(h, _LineHandler) for h in logger.handlers):
        logger.addHandler(_LineHandler(level))


def _length(iterable: Iterable[object] | None) -> int | None:
    return len(iterable) if isinstance(iterable, Sized) else None


def progress_bar(
    iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, enabled: bool
) -> tqdm | ProgressLines:
    """Progress of a long loop on stderr when ``enabled``: a transient tqdm bar on a terminal or in
    a notebook (:func:`live`), plain :class:`ProgressLines` otherwise (logs written to files get
    lines, not carriage-return noise); a silent pass-through when not ``enabled``."""
    if enabled and not live():
        return ProgressLines(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress:
    """Reports training progress; a tqdm bar when ``bar`` is set, else a line per log interval.

    Args:
        epochs: number of epochs of the run (for ``epoch i/N``).
        steps_per_epoch, examples_per_epoch: sizes of an epoch (for the bar and the lines).
        total_steps: steps of the whole run (for the ETA of the plain lines).
        bar: draw tqdm bars (``train.progress`` and :func:`live`).
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
        write_line(line, self.stream)
