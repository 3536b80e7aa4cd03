"""Training: :func:`train` runs a configuration into a run directory (resumable), with
training controls (:mod:`.controls`), callbacks (:mod:`.callbacks`) and loggers (:mod:`.loggers`)."""

from .callbacks import Callback
from .controls import OPTIMIZERS, beta_scale, build_optimizer, learning_rate, plateau_update, schedule_depends_on_epochs
from .loggers import LOGGERS
from .metrics import read_metrics
from .trainer import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EPOCHS_DIR,
    GRIDS_DIR,
    METRICS_FILE,
    MODEL_FILE,
    NON_RESULT_KEYS,
    OPTIMISATION_KEYS,
    RESUMABLE_KEYS,
    SUMMARY_FILE,
    Trainer,
    TrainResult,
    autocast,
    check_dataset,
    evaluate,
    has_fast_bf16,
    resolve_device,
    resolve_precision,
    run_config_to_resume,
    train,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "EPOCHS_DIR",
    "GRIDS_DIR",
    "LOGGERS",
    "METRICS_FILE",
    "MODEL_FILE",
    "NON_RESULT_KEYS",
    "OPTIMISATION_KEYS",
    "OPTIMIZERS",
    "RESUMABLE_KEYS",
    "SUMMARY_FILE",
    "Callback",
    "TrainResult",
    "Trainer",
    "autocast",
    "beta_scale",
    "build_optimizer",
    "check_dataset",
    "evaluate",
    "has_fast_bf16",
    "learning_rate",
    "plateau_update",
    "read_metrics",
    "resolve_device",
    "resolve_precision",
    "run_config_to_resume",
    "schedule_depends_on_epochs",
    "train",
]
