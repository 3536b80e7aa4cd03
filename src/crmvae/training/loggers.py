"""Optional experiment loggers, chosen by name in ``train.loggers``: callbacks that mirror the
``metrics.jsonl`` records (which stay the record of a run) to another tool.

``tensorboard`` (``pip install 'crmvae[tensorboard]'``) writes event files under
``<out>/tensorboard``: the step records as ``step/<name>`` and the epoch records as
``epoch/<name>`` scalars at their global step, and the generation grids as ``grids/<name>``
images when they are drawn. A resumed run purges the events past its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..registry import Registry
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

#: Loggers by name: each is built from the run directory.
LOGGERS: Registry[Callable[[Path], Callback]] = Registry("train/logger")

TENSORBOARD_DIR = "tensorboard"
#: Record fields that are positions, not measurements.
_POSITION_KEYS = frozenset({"kind", "epoch", "step", "global_step", "complete"})


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric measurements of a ``metrics.jsonl`` record."""
    return {k: float(v) for k, v in record.items()
            if k not in _POSITION_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Callback):
    """Scalars and generation grids as TensorBoard events in ``<out>/tensorboard``."""

    def __init__(self, out: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.loggers: 'tensorboard' needs the tensorboard package: pip install 'crmvae[tensorboard]'"
            ) from None
        self.writer_class = SummaryWriter
        self.log_dir = out / TENSORBOARD_DIR
        self.writer: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        step = trainer.state.global_step
        self.writer = self.writer_class(str(self.log_dir), purge_step=step + 1 if step else None)

    def _scalars(self, prefix: str, record: dict[str, Any]) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(f"{prefix}/{name}", value, record["global_step"])

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._scalars("step", record)

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._scalars("epoch", record)
        self.writer.flush()

    def on_grids(self, trainer: Trainer, paths: list[Path]) -> None:
        for path in paths:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(f"grids/{path.stem}", pixels, trainer.state.global_step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
