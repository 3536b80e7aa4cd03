"""Training: :func:`train` runs a configuration into a run directory (resumable)."""

from .metrics import read_metrics
from .trainer import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    GRIDS_DIR,
    METRICS_FILE,
    MODEL_FILE,
    RESUMABLE_KEYS,
    SUMMARY_FILE,
    TrainResult,
    autocast,
    check_dataset,
    evaluate,
    has_fast_bf16,
    resolve_device,
    resolve_precision,
    train,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "GRIDS_DIR",
    "METRICS_FILE",
    "MODEL_FILE",
    "RESUMABLE_KEYS",
    "SUMMARY_FILE",
    "TrainResult",
    "autocast",
    "check_dataset",
    "evaluate",
    "has_fast_bf16",
    "read_metrics",
    "resolve_device",
    "resolve_precision",
    "train",
]
