"""Saving and loading models and training state: atomic writes, ``weights_only=True`` reads.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes), so it loads
with ``torch.load(path, weights_only=True)``::

    {"format": "crmvae", "version": 1, "model_config": {...}, "model": state_dict, **extra}
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import ModelConfig, from_dict, to_dict
from .errors import CheckpointError
from .model import MultimodalVAE

FORMAT = "crmvae"
VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict with ``weights_only=True`` and check its format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError) as exc:
        # what torch.load raises for truncated, foreign or non-weights-only files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a crmvae checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MultimodalVAE:
    """Rebuild a :class:`MultimodalVAE` from a checkpoint written by :func:`save_model` or training,
    or from a folder or ``.safetensors`` file written by :func:`export_safetensors`."""
    if is_safetensors_export(path):
        return load_safetensors(path, map_location)
    payload = read_checkpoint(path, map_location)
    config = from_dict(ModelConfig, payload["model_config"], where=f"{path}: model_config")
    model = MultimodalVAE(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the configuration: {exc}") from None
    return model.to(map_location)


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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / SAFETENSORS_FILE
    _safetensors_torch().save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(weights),
                                   metadata={"format": FORMAT, "version": str(VERSION)})
    (out / EXPORT_CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
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
        values = yaml.safe_load(config_file.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{config_file}: not valid YAML: {exc}") from None
    if not isinstance(values, dict) or not isinstance(values.get("model"), dict):
        raise CheckpointError(f"{config_file} has no model section")
    config = from_dict(ModelConfig, values["model"], where=f"{config_file}: model")
    try:
        state = _safetensors_torch().load_file(str(weights), device=str(map_location))
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise CheckpointError(f"{weights} cannot be read as safetensors ({type(exc).__name__}: {exc})") from None
    model = MultimodalVAE(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not match {config_file}: {exc}") from None
    return model.to(map_location)
