"""Evaluation artefacts cached beside the dataset cache (classifiers, FID reference statistics).

A file is ``<data dir>/<kind>-<dataset>-<key>.pt``, where ``key`` hashes what determines its
content together with the dataset's identity (name, release root, seed, resolved params and each split's
data cache name, itself a hash of the generator's spec), so new data selects a new file. Files hold tensors and plain
values only, are written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar


from ..checkpoint import atomic_torch_save
from ..config import DataConfig
from ..data import dataset_info
from ..data.cache import resolve_data_dir, spec_key
from ..errors import CheckpointError
from ..fileio import TORCH_LOAD_ERRORS, torch_load

log = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT = "crmvae-eval-cache"
VERSION = 1


def dataset_identity(data_cfg: DataConfig) -> dict[str, Any]:
    """What identifies a dataset's content: name, root, seed, params and, per split, the name of
    its data cache file (which hashes the generator's full spec) or its release path."""
    info = dataset_info(data_cfg)
    splits = {
        split: Path(entry.get("cache") or entry.get("path") or "").name
        for split, entry in info.get("splits", {}).items()
    }
    return {"dataset": data_cfg.dataset, "root": data_cfg.root, "seed": data_cfg.seed,
            "params": info["params"], "splits": splits}


def cache_file(data_cfg: DataConfig, kind: str, spec: dict[str, Any]) -> Path:
    """The cache file of ``kind`` for ``spec`` on ``data_cfg``'s dataset (see the module doc)."""
    key = spec_key({"kind": kind, "version": VERSION, "spec": spec, "data": dataset_identity(data_cfg)})
    return resolve_data_dir(data_cfg.data_dir) / f"{kind}-{data_cfg.dataset}-{key}.pt"


def read_cached(path: Path, decode: Callable[[dict[str, Any]], T]) -> T | None:
    """``decode(payload)`` of the payload saved by :func:`write_cached`, or None when the file is
    absent or unusable (logged, so that the caller computes it again): unreadable, of an unknown
    format, or contents ``decode`` refuses with ``KeyError``, ``TypeError``, ``ValueError``,
    ``RuntimeError`` or :class:`~crmvae.errors.CheckpointError` (a file of the right format, damaged)."""
    if not path.is_file():
        return None
    try:
        payload = torch_load(path)
    except TORCH_LOAD_ERRORS as exc:
        log.warning("evaluation cache %s is unreadable (%s: %s); recomputing it", path, type(exc).__name__, exc)
        return None
    if not isinstance(payload, dict) or (payload.get("format"), payload.get("version")) != (FORMAT, VERSION):
        log.warning("evaluation cache %s has an unknown format; recomputing it", path)
        return None
    try:
        return decode(payload)
    except (KeyError, TypeError, ValueError, RuntimeError, CheckpointError) as exc:
        log.warning("evaluation cache %s holds unusable contents (%s: %s); recomputing it",
                    path, type(exc).__name__, str(exc).splitlines()[0][:200])
        return None


def write_cached(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors and plain values) atomically, tagged with the cache format."""
    atomic_torch_save({"format": FORMAT, "version": VERSION, **payload}, path)
