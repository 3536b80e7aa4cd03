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
    """Rebuild a :class:`MultimodalVAE` from a checkpoint written by :func:`save_model` or training."""
    payload = read_checkpoint(path, map_location)
    config = from_dict(ModelConfig, payload["model_config"], where=f"{path}: model_config")
    model = MultimodalVAE(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the configuration: {exc}") from None
    return model.to(map_location)
