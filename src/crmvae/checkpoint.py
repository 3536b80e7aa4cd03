"""Saving and loading models and training state: atomic writes, ``weights_only=True`` reads, and
the one validation every reader goes through.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes), so it loads
with ``torch.load(path, weights_only=True)``::

    {"format": "crmvae", "version": 1, "model_config": {...}, "model": state_dict, **extra}

A training checkpoint adds the keys of :data:`TRAINING_KEYS`. :func:`read_checkpoint` checks
this schema and :func:`load_weights` the weights' names and shapes against the configuration,
so a damaged or foreign file is a one-line :class:`CheckpointError` wherever it is opened
(``info``, ``generate``, ``evaluate``, resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from .config import ModelConfig, RunConfig, from_dict, parse_yaml, to_dict
from .errors import CheckpointError, ConfigError
from .fileio import TORCH_LOAD_ERRORS, atomic_write, load_error_reason, make_dir, torch_load
from .model import MultimodalVAE

FORMAT = "crmvae"
VERSION = 1

#: Keys of every checkpoint and the type of their values.
MODEL_KEYS: dict[str, type | tuple[type, ...]] = {"format": str, "version": int, "model_config": dict, "model": dict}
#: Keys a training checkpoint (one with an ``optimizer``) adds, and the type of their values.
TRAINING_KEYS: dict[str, type | tuple[type, ...]] = {
    "run_config": dict, "optimizer": dict, "epoch": int, "step_in_epoch": int, "global_step": int,
    "examples_seen": int, "elapsed_s": (int, float), "last_epoch_metrics": dict, "term_names": list,
    "epoch_sums": dict, "log_mark": dict, "rng_state": dict,
}
#: Counters and best losses a training checkpoint holds when its settings use them, and their types.
TRAINING_STATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "best_val_loss": (int, float, type(None)), "best_train_loss": (int, float, type(None)),
    "plateau_best": (int, float, type(None)), "best_epoch": int, "epochs_without_improvement": int,
    "plateau_bad_epochs": int, "plateau_reductions": int, "early_stopped": bool,
}
_REMEDY = "the file is damaged or was not written by crmvae; use another checkpoint"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`~crmvae.fileio.atomic_write`."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def save_model(model: MultimodalVAE, path: str | Path, **extra: Any) -> None:
    """Write the model's configuration and weights (plus ``extra`` plain values) atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": to_dict(model.config),
        "model": model.state_dict(),
        **extra,
    }
    atomic_torch_save(payload, path)


def _load(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(path, weights_only=True)`` with a one-line :class:`CheckpointError` for a
    file that cannot be read, is no PyTorch archive, has bytes that fail their stored CRC-32, or
    holds more than tensors and plain values."""
    try:
        return torch_load(path, map_location)
    except TORCH_LOAD_ERRORS as exc:
        raise CheckpointError(f"checkpoint {path} {load_error_reason(path, exc)}; {_REMEDY}") from None


def _check_keys(payload: dict[str, Any], path: Path, schema: dict[str, Any], what: str) -> None:
    missing = [key for key in schema if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: {what} lacks {', '.join(map(repr, missing))}; {_REMEDY}")
    wrong = [f"{key!r} is a {type(payload[key]).__name__}" for key, tp in schema.items()
             if not isinstance(payload[key], tp) or isinstance(payload[key], bool)]
    if wrong:
        raise CheckpointError(f"{path}: {what} is malformed ({', '.join(wrong)}); {_REMEDY}")


def _check_training_state(payload: dict[str, Any], path: Path) -> None:
    """The nested parts of a training checkpoint that resuming reads."""
    _check_keys(payload, path, TRAINING_KEYS, "the training checkpoint")
    parts = {
        "optimizer": ("state", "param_groups"), "epoch_sums": ("sums", "examples"),
        "log_mark": ("sums", "examples"), "rng_state": ("cpu",),
    }
    for key, inner in parts.items():
        missing = [k for k in inner if k not in payload[key]]
        if missing:
            raise CheckpointError(f"{path}: {key!r} lacks {', '.join(map(repr, missing))}; {_REMEDY}")
    rng = payload["rng_state"]["cpu"]
    if not isinstance(rng, Tensor) or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise CheckpointError(f"{path}: 'rng_state' holds no CPU RNG state; {_REMEDY}")
    best = payload.get("best_model")  # present with a validation split
    if best is not None and not (isinstance(best, dict) and all(isinstance(v, Tensor) for v in best.values())):
        raise CheckpointError(f"{path}: 'best_model' holds values other than tensors; {_REMEDY}")
    wrong = [f"{key!r} is a {type(payload[key]).__name__}" for key, tp in TRAINING_STATE_KEYS.items()
             if key in payload and (not isinstance(payload[key], tp) or (tp is not bool and isinstance(payload[key], bool)))]
    if wrong:
        raise CheckpointError(f"{path}: the training checkpoint is malformed ({', '.join(wrong)}); {_REMEDY}")
    counters = ("epoch", "step_in_epoch", "global_step", "examples_seen",
                *(k for k, tp in TRAINING_STATE_KEYS.items() if tp is int and k in payload))
    negative = [key for key in counters if payload[key] < 0]
    if negative:
        raise CheckpointError(f"{path}: {', '.join(map(repr, negative))} must be >= 0; {_REMEDY}")
    for key in ("epoch_sums", "log_mark"):
        sums = payload[key]["sums"]
        if sums is not None and (not isinstance(sums, Tensor) or list(sums.shape) != [len(payload["term_names"])]):
            raise CheckpointError(f"{path}: {key!r} does not hold one sum per term of 'term_names'; {_REMEDY}")
    try:
        from_dict(RunConfig, payload["run_config"], where=f"{path}: run_config")
    except ConfigError as exc:
        raise CheckpointError(f"{exc}; {_REMEDY}") from None


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check its schema: format, version, the
    model's keys, and a training checkpoint's state. The weights are checked by :func:`load_weights`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise CheckpointError(f"checkpoint {path} is {what}; give a model.pt or checkpoint.pt file")
    payload = _load(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a crmvae checkpoint (it has no 'format': 'crmvae' entry; another program "
            f"wrote it); use a model.pt or checkpoint.pt of a crmvae run"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION}); the file is "
            f"damaged or was written by another version of crmvae"
        )
    _check_keys(payload, path, MODEL_KEYS, "the checkpoint")
    if not all(isinstance(v, Tensor) for v in payload["model"].values()):
        raise CheckpointError(f"{path}: 'model' holds values other than tensors; {_REMEDY}")
    if "optimizer" in payload:
        _check_training_state(payload, path)
    return payload


def _stored_model(payload: dict[str, Any], path: str | Path) -> MultimodalVAE:
    """A freshly initialised model of the configuration stored in a checkpoint."""
    try:
        return MultimodalVAE(from_dict(ModelConfig, payload["model_config"], where="model_config"))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its model configuration is invalid: {exc}; {_REMEDY}") from None


def load_weights(model: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """Load ``state`` into ``model`` after checking that it holds exactly the model's weights, in
    the shapes of the configuration stored with them, all finite; a :class:`CheckpointError`
    naming the first three of each
    kind of difference otherwise."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    extra = sorted(state.keys() - expected.keys())
    shapes = [f"{k} is {list(state[k].shape)}, expected {list(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    problems = [text for text, items in (
        (f"missing weights {missing[:3]}", missing), (f"unknown weights {extra[:3]}", extra),
        ("; ".join(shapes[:3]), shapes), (f"NaN/inf values in {non_finite[:3]}", non_finite),
    ) if items]
    if problems:
        raise CheckpointError(f"{path}: the stored weights are unusable ({'; '.join(problems)}); {_REMEDY}")
    model.load_state_dict(state)


def validate_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], MultimodalVAE]:
    """The checkpoint's contents and its model with the weights loaded, both checked."""
    payload = read_checkpoint(path, map_location)
    model = _stored_model(payload, path)
    load_weights(model, payload["model"], path)
    return payload, model.to(map_location)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MultimodalVAE:
    """Rebuild a :class:`MultimodalVAE` from a checkpoint written by :func:`save_model` or training,
    or from a folder or ``.safetensors`` file written by :func:`export_safetensors`."""
    if is_safetensors_export(path):
        return load_safetensors(path, map_location)
    return validate_checkpoint(path, map_location)[1]


# --------------------------------------------------------------------------------------------
# safetensors export: weights and YAML configuration, loaded without pickle

SAFETENSORS_FILE = "model.safetensors"
EXPORT_CONFIG_FILE = "config.yaml"


def _safetensors_torch() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise CheckpointError("safetensors export needs the safetensors package: pip install safetensors "
                              "(or pip install 'crmvae[safetensors]')") from None
    return safetensors.torch


def export_safetensors(source: MultimodalVAE | str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/model.safetensors`` (the weights; contiguous copies, safetensors stores no
    strides) and ``out_dir/config.yaml``: the run configuration of a checkpoint that holds one (as
    a run directory's), else just its ``model`` section. ``source`` is a model or a checkpoint file.
    Returns the weights file."""
    if isinstance(source, MultimodalVAE):
        config, state = {"model": to_dict(source.config)}, source.state_dict()
    else:
        payload = read_checkpoint(source)
        config = {**payload.get("run_config", {}), "model": payload["model_config"]}
        state = payload["model"]
    out = make_dir(out_dir)
    weights = out / SAFETENSORS_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(weights, _safetensors_torch().save(tensors, metadata={"format": FORMAT, "version": str(VERSION)}))
    atomic_write(out / EXPORT_CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    return weights


def is_safetensors_export(path: str | Path) -> bool:
    """Whether ``path`` is a ``.safetensors`` file or a folder holding ``model.safetensors``."""
    path = Path(path)
    return path.suffix == ".safetensors" or (path.is_dir() and (path / SAFETENSORS_FILE).is_file())


def load_safetensors(path: str | Path, map_location: str | torch.device = "cpu") -> MultimodalVAE:
    """Rebuild a model from :func:`export_safetensors`'s pair (``path``: the folder or its weights
    file, ``config.yaml`` beside it) with ``yaml.safe_load`` and safetensors: no pickle."""
    path = Path(path)
    weights = path / SAFETENSORS_FILE if path.is_dir() else path
    config_file = weights.parent / EXPORT_CONFIG_FILE
    for needed in (weights, config_file):
        if not needed.is_file():
            raise CheckpointError(f"{needed} does not exist (an export is {SAFETENSORS_FILE} with {EXPORT_CONFIG_FILE} beside it)")
    try:
        values = parse_yaml(config_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_file}: not valid YAML: {exc}") from None
    if not isinstance(values, dict) or not isinstance(values.get("model"), dict):
        raise CheckpointError(f"{config_file} has no model section")
    config = from_dict(ModelConfig, values["model"], where=f"{config_file}: model")
    library = _safetensors_torch()
    import safetensors  # importable: safetensors.torch is

    try:
        state = library.load_file(str(weights), device=str(map_location))
    except (safetensors.SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} cannot be read as safetensors ({type(exc).__name__}: {exc})") from None
    model = MultimodalVAE(config)
    load_weights(model, state, weights)
    return model.to(map_location)
