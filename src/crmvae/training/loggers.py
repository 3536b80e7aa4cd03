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

``mlflow`` (``pip install 'crmvae[mlflow]'``) logs the scalars, the flattened run configuration
(as parameters) and the grids (as artifacts under ``grids/``) to an MLflow run in the tracking
store of ``MLFLOW_TRACKING_URI`` (MLflow's default, ``sqlite:///mlflow.db`` in the working
directory, otherwise), experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``crmvae``). MLflow's
names take letters, digits and ``_-. /:``; any other character becomes ``_``
(``step/kl/joint__prior``). A resumed run continues the MLflow run named in
``<out>/mlflow-run-id``.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..config import flatten, to_dict
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
MLFLOW_ID_FILE = "mlflow-run-id"
#: What MLflow's metric and parameter names may not contain.
_MLFLOW_UNSAFE = re.compile(r"[^\w.\- /:]")
#: What a stored run id may be: wandb's and MLflow's ids are letters, digits, ``-`` and ``_``.
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
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
        run_id = stored_run_id(id_file, "wandb") if resumed else secrets.token_hex(6)
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


def stored_run_id(id_file: Path, tool: str) -> str:
    """The run id a resumed run continues, read from ``id_file``; a damaged file is a
    :class:`ConfigError` that says how to start a new run of ``tool`` instead."""
    try:
        text = id_file.read_bytes().decode().strip()
    except UnicodeDecodeError:
        text = None
    if text is None or not _RUN_ID.fullmatch(text):
        shown = "bytes that are not UTF-8" if text is None else repr(text[:40])
        raise ConfigError(f"{id_file} holds {shown}, not a {tool} run id; delete it to log the resumed run as a new {tool} run")
    return text


def mlflow_name(name: str) -> str:
    """``name`` with every character MLflow refuses in a metric or parameter name replaced by ``_``."""
    return _MLFLOW_UNSAFE.sub("_", name)


@LOGGERS.register("mlflow")
class MlflowLogger(Callback):
    """Scalars, grids and the run configuration to an MLflow run (see the module docstring)."""

    #: MLflow's limits: parameters per batch call, characters of a parameter value.
    PARAMS_PER_CALL, PARAM_CHARS = 100, 6000

    def __init__(self, out: Path) -> None:
        try:
            from mlflow.entities import Metric, Param
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("train.loggers: 'mlflow' needs the mlflow package: pip install 'crmvae[mlflow]'") from None
        self.metric, self.param, self.error, self.client_class = Metric, Param, MlflowException, MlflowClient
        self.out = out
        self.client: Any = None
        self.run_id = ""

    def on_train_start(self, trainer: Trainer) -> None:
        id_file = self.out / MLFLOW_ID_FILE
        try:
            self.client = self.client_class()
            if trainer.state.global_step > 0 and id_file.is_file():
                self.run_id = stored_run_id(id_file, "MLflow")
                self.client.update_run(self.run_id, status="RUNNING")
                return
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "crmvae"
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            self.run_id = self.client.create_run(experiment_id, run_name=self.out.name).info.run_id
        except (self.error, OSError) as exc:
            uri = os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default tracking store"
            raise ConfigError(f"train.loggers: 'mlflow': {uri}: {str(exc).splitlines()[0]} "
                              f"(set MLFLOW_TRACKING_URI to a server or to sqlite:///PATH/mlflow.db)") from None
        atomic_write(id_file, self.run_id + "\n")
        params = [self.param(mlflow_name(k), str(v)[: self.PARAM_CHARS])
                  for k, v in flatten(to_dict(trainer.config)).items()]
        for start in range(0, len(params), self.PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[start: start + self.PARAMS_PER_CALL])

    def _log(self, prefix: str, record: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            self.metric(mlflow_name(f"{prefix}/{name}"), value, now, record["global_step"])
            for name, value in scalars(record).items()
        ])

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._log("step", record)

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._log("epoch", record)

    def on_grids(self, trainer: Trainer, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), "grids")

    def on_train_end(self, trainer: Trainer) -> None:
        self.client.set_terminated(self.run_id)
        self.run_id = ""

    def close(self) -> None:
        if self.client is not None and self.run_id:  # training stopped before its end
            self.client.set_terminated(self.run_id, status="FAILED")
