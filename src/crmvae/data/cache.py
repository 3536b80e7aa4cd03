"""The data directory and a verified, atomically written tensor cache.

A cache entry is two files in the data directory: ``{name}-{key}.pt`` (a dict of tensors written
with :func:`torch.save`) and ``{name}-{key}.json`` (its manifest: the spec, tensor shapes, the
file's size and sha256, the creation time). ``key`` is a hash of the spec, so a change of
generator version, seed, sizes or parameters selects a new entry. Both files are written to a
temporary file and renamed into place, the manifest last; an entry is only trusted when the
manifest matches the spec and the file's sha256 matches the manifest. Anything else (missing,
half-written, stale, corrupt) is logged and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import (
    TORCH_LOAD_ERRORS,
    atomic_write,
    file_sha256,
    load_error_reason,
    torch_load,
)

log = logging.getLogger(__name__)

ENV_DATA_DIR = "CRMVAE_DATA_DIR"
MANIFEST_VERSION = 1


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$CRMVAE_DATA_DIR``, else ``~/.cache/crmvae``."""
    chosen = data_dir or os.environ.get(ENV_DATA_DIR) or Path.home() / ".cache" / "crmvae"
    return Path(chosen).expanduser()


def spec_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable spec (key order does not matter)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_paths(
    name: str, spec: dict[str, Any], data_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """``(tensor_file, manifest_file)`` of the cache entry for ``name`` and ``spec``."""
    stem = resolve_data_dir(data_dir) / f"{name}-{spec_key(spec)}"
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def read_manifest(
    name: str, spec: dict[str, Any], data_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any] | None:
    """The entry's manifest as written, or ``None`` when there is none or it is unreadable."""
    _, manifest_path = cache_paths(name, spec, data_dir)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def cache_info(
    name: str, spec: Callable[[], dict[str, Any]], data_dir: str | os.PathLike[str] | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> dict[str, Any]:
    """What ``data info`` shows of one cache entry, building nothing: ``{"available": examples or
    None, "cache": tensor file, "manifest": manifest or None}``; ``{"error": message}`` when
    ``spec()`` raises one of ``errors`` (a release file that cannot be read)."""
    try:
        entry_spec = spec()
    except errors as exc:
        return {"error": str(exc)}
    manifest = read_manifest(name, entry_spec, data_dir)
    return {
        "available": _examples(manifest),
        "cache": str(cache_paths(name, entry_spec, data_dir)[0]),
        "manifest": manifest,
    }


def _examples(manifest: dict[str, Any] | None) -> int | None:
    """The example count a manifest records (its labels', else its first tensor's length)."""
    shapes = (manifest or {}).get("shapes")
    if not isinstance(shapes, dict) or not shapes:
        return None
    shape = shapes.get("labels", next(iter(shapes.values())))
    return shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else None


def cached_build(
    name: str,
    spec: dict[str, Any],
    build: Callable[[], dict[str, Tensor]],
    data_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Tensor]:
    """Load the verified cache entry for ``(name, spec)``, or ``build()`` it and cache the result.

    ``spec`` must be JSON-serialisable and fully determine ``build()``'s output; its ``version``
    and ``seed`` entries (if any) are copied into the manifest. Loaded tensors are memory-mapped
    from the cache file.
    """
    spec = json.loads(json.dumps(spec))  # normalise (tuples -> lists) to compare with the manifest
    path, manifest_path = cache_paths(name, spec, data_dir)
    try:
        return _load_verified(path, manifest_path, spec)
    except _Untrusted as exc:
        if exc.reason == "absent":
            log.info("building %s into %s", name, path)
        else:
            log.warning("data cache %s is %s; rebuilding it", path, exc.reason)
    start = time.perf_counter()
    tensors = build()
    _write(path, manifest_path, spec, tensors)
    log.info(
        "built %s in %.1f s (%.0f MB)", name, time.perf_counter() - start, path.stat().st_size / 1e6
    )
    return tensors


class _Untrusted(Exception):
    """A cache entry that must be rebuilt, and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _load_verified(path: Path, manifest_path: Path, spec: dict[str, Any]) -> dict[str, Tensor]:
    """The entry's tensors if its manifest matches ``spec`` and its file matches the manifest."""
    if not manifest_path.exists():
        raise _Untrusted(
            "half-written (tensor file without manifest)" if path.exists() else "absent"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise _Untrusted(f"unusable (manifest unreadable: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise _Untrusted("unusable (manifest of an unknown format)")
    if manifest.get("spec") != spec:
        raise _Untrusted("stale (manifest spec differs from the requested one)")
    if not path.is_file():
        raise _Untrusted("incomplete (manifest without tensor file)")
    size = path.stat().st_size
    if size != manifest.get("bytes"):
        raise _Untrusted(f"corrupt (file has {size} bytes, manifest says {manifest.get('bytes')})")
    if file_sha256(path) != manifest.get("sha256"):
        raise _Untrusted("corrupt (sha256 differs from the manifest)")
    try:
        tensors = torch_load(path, mmap=True, check_crc=False)  # the sha256 above covers every byte
    except TORCH_LOAD_ERRORS as exc:
        raise _Untrusted(f"unloadable (it {load_error_reason(path, exc)})") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise _Untrusted("unusable (file does not hold a dict of tensors)")
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    if shapes != manifest.get("shapes"):
        raise _Untrusted(f"corrupt (tensor shapes {shapes} differ from the manifest)")
    return tensors


def _write(
    path: Path, manifest_path: Path, spec: dict[str, Any], tensors: dict[str, Tensor]
) -> None:
    """Write tensors then manifest, each to a temp file renamed into place."""
    manifest_path.unlink(missing_ok=True)  # the entry is invalid until the new manifest lands
    atomic_write(path, lambda f: torch.save(tensors, f))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "spec": spec,
        "generator_version": spec.get("version"),
        "seed": spec.get("seed"),
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(manifest_path, json.dumps(manifest, indent=2))
