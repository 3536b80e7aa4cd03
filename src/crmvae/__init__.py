"""crmvae: multimodal VAEs (CRMVAE and six baselines) that infer from any subset of modalities.

Main entry points::

    from crmvae import build_run_config, train, load_model, load_dataset, export_safetensors
    cfg = build_run_config("polymnist", model="crmvae", preset="cpu-short")
    result = train(cfg, "runs/demo")
    model = load_model("runs/demo/model.pt")
    export_safetensors(model, "shared-model")   # model.safetensors + config.yaml; load_model reads it
"""

from .checkpoint import export_safetensors, load_model, save_model
from .config import (
    DataConfig,
    ModalityConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    load_config,
    save_config,
)
from .data import (
    Batch,
    ModalitySpec,
    MultimodalDataset,
    available_datasets,
    load_dataset,
)
from .errors import (
    CheckpointError,
    ConfigError,
    CrmvaeError,
    DataError,
    NonFiniteLossError,
)
from .model import MultimodalVAE, Posterior
from .objectives import OBJECTIVES, get_objective, register_objective
from .presets import PRESETS, build_run_config
from .training import TrainResult, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "OBJECTIVES",
    "PRESETS",
    "Batch",
    "CheckpointError",
    "ConfigError",
    "CrmvaeError",
    "DataConfig",
    "DataError",
    "ModalityConfig",
    "ModalitySpec",
    "ModelConfig",
    "MultimodalDataset",
    "MultimodalVAE",
    "NonFiniteLossError",
    "Posterior",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "available_datasets",
    "build_run_config",
    "evaluate",
    "export_safetensors",
    "get_objective",
    "load_config",
    "load_dataset",
    "load_model",
    "register_objective",
    "save_config",
    "save_model",
    "train",
]
