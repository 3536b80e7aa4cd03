"""Optional experiment loggers, chosen by name in ``train.loggers``: callbacks that mirror the
``metrics.jsonl`` records (which stay the record of a run) to another tool.

``tensorboard`` (``pip install 'crmvae[tensorboard]'``) writes event files under
``<out>/tensorboard``: the step records as ``step/<name>`` and the epoch records as
``epoch/<name>`` scalars at their global step, and the generation grids as ``grids/<name>``
images when they are drawn. A resumed run purges the events past its checkpoint.

``wandb`` (``pip install 'crmvae[wandb]'``) logs the same scalars and grids, and the run
configuration, to a Weights & Biases run whose files go under ``<out>/wandb``. Project, entity
and mode come from wandb's environment variables (``WANDB_PROJECT``, default ``crmvae``;
``WANDB_MODE=offline`` where there is no network, then ``wandb sync``). The run's id is kept in
``<out>/wandb/crmvae-run-id``, so a resumed run continues the same wandb run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..config import to_dict
from ..errors import ConfigError
from ..fileio import atomic_write, make_dir
from ..registry import Registry
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

#: Loggers by name: each is built from the run directory.
LOGGERS: Registry[Callable[[Path], Callback]] = Registry("train/logger")

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
WANDB_ID_FILE = "crmvae-run-id"
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


@LOGGERS.register("wandb")
class WandbLogger(Callback):
    """Scalars, grids and the run configuration to a Weights & Biases run (files in ``<out>/wandb``)."""

    def __init__(self, out: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("train.loggers: 'wandb' needs the wandb package: pip install 'crmvae[wandb]'") from None
        self.wandb = wandb
        self.out = out
        self.run: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        id_file = self.out / WANDB_DIR / WANDB_ID_FILE
        resumed = trainer.state.global_step > 0 and id_file.is_file()
        run_id = id_file.read_text().strip() if resumed else secrets.token_hex(6)
        make_dir(id_file.parent)
        atomic_write(id_file, run_id + "\n")
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "crmvae", name=self.out.name, dir=str(self.out),
            id=run_id, resume="allow", config=to_dict(trainer.config),
        )

    def _log(self, prefix: str, record: dict[str, Any]) -> None:
        self.run.log({f"{prefix}/{name}": value for name, value in scalars(record).items()}, step=record["global_step"])

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._log("step", record)

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._log("epoch", record)

    def on_grids(self, trainer: Trainer, paths: list[Path]) -> None:
        self.run.log({f"grids/{path.stem}": self.wandb.Image(str(path)) for path in paths},
                     step=trainer.state.global_step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
