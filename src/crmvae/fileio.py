"""Files: the package's one atomic write, its one file hash, its one ``torch.load``, and one-line
errors for unwritable places and unreadable files.

Every file crmvae writes whole (checkpoints, models, caches, configurations, summaries, results)
goes through :func:`atomic_write`: a reader sees the old file or the new one, never half of one,
and a failed write leaves what was there before untouched. Files are created with mode 0666 less
the user's umask, like any other program's, so a group can share a run folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pickle
import re
import secrets
import socket
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import WriteError

#: What ``torch.load`` raises for a truncated, corrupt, foreign or not weights-only file (random
#: bytes reach the legacy unpickler, which fails in many ways).
TORCH_LOAD_ERRORS = (
    RuntimeError, OSError, ValueError, LookupError, TypeError, AttributeError, EOFError, struct.error,
    pickle.UnpicklingError, zipfile.BadZipFile,
)

#: ``.{name}.{host}.{pid}.{8 hex}.tmp``: the temporary of a write by process ``pid`` on ``host``.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
#: This machine's name as it appears in temporaries (a folder may be shared between machines).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
#: Seconds a dead writer's temporary stays untouched before it counts as stale.
STALE_AFTER_S = 600.0

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or choose another location",
    errno.EDQUOT: "the disk quota is exhausted; free some space or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.EACCES: "no permission; choose a location you can write to",
    errno.EPERM: "no permission; choose a location you can write to",
}


def crc_failure(path: str | Path, chunk: int = 1 << 22) -> str | None:
    """The first entry of the zip archive at ``path`` whose bytes differ from the CRC-32 stored
    for it, as ``"archive/data/8"``; None when every entry matches.

    ``torch.save`` stores a CRC-32 for every tensor's bytes but ``torch.load`` does not check
    them, so a flipped bit in a weight would load as a silently different number. Entries with a
    stored CRC of 0 (files saved with torch's CRC-32 turned off) are skipped. A file that is no
    readable zip archive gives None: ``torch.load`` then says what is wrong with it.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0:
                    continue
                try:
                    with archive.open(info) as entry:  # raises BadZipFile at the end on a CRC mismatch
                        while entry.read(chunk):
                            pass
                except (zipfile.BadZipFile, EOFError):
                    return info.filename
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, EOFError,
            struct.error):
        return None
    return None


def torch_load(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False,
               check_crc: bool = True) -> Any:
    """``torch.load(path, weights_only=True)``, after checking the stored CRC-32 of every entry
    (:func:`crc_failure`) unless ``check_crc`` is False (a file whose whole hash is checked
    elsewhere). A mismatch raises ``zipfile.BadZipFile``, one of :data:`TORCH_LOAD_ERRORS`."""
    if check_crc and (entry := crc_failure(path)) is not None:
        raise zipfile.BadZipFile(f"the bytes of {entry} differ from their stored CRC-32")
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def load_error_reason(path: str | Path, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``exc``, in a few words and without
    torch's advice to retry with ``weights_only=False`` (wrong for damaged files, unsafe for
    untrusted ones)."""
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror or exc}"
    if not zipfile.is_zipfile(path):  # every torch.save file is a zip archive
        return "is not a PyTorch file (truncated, or another kind of file)"
    if isinstance(exc, pickle.UnpicklingError):
        return ("holds Python objects other than tensors and plain values and is refused, since loading them "
                "could run code")
    first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"is damaged ({first})"


def write_error(path: str | Path, exc: OSError, what: str = "write") -> WriteError:
    """A one-line :class:`WriteError` for ``exc`` met when trying to ``what`` ``path``: what went
    wrong, where, and what to do."""
    advice = _ADVICE.get(exc.errno or 0, "choose another location")
    return WriteError(f"cannot {what} {path}: {exc.strerror or exc} ({advice})")


def _os_error(exc: BaseException) -> OSError | None:
    """``exc`` or the error it was raised from, if an ``OSError`` (``torch.save`` wraps them)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def make_dir(path: str | Path) -> Path:
    """``path`` created with its parents if needed; a :class:`WriteError` when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, "create the folder") from None
    return path


def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Replace ``path`` by ``data`` atomically and return ``path``.

    ``data`` is bytes, text (written as UTF-8) or a function writing to a binary handle (e.g.
    ``lambda f: torch.save(obj, f)``). It goes to a temporary file in the same folder, is fsynced
    and renamed over ``path``; on any failure the temporary is removed and ``path`` is left as it
    was. Temporaries of ``path`` left by killed processes are removed first.
    An ``OSError`` (full disk, read-only or missing location) becomes a :class:`WriteError`.
    """
    path = Path(path)
    make_dir(path.parent)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:  # mode 0666 less the umask
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is None or not isinstance(exc, Exception):
            raise
        raise write_error(path, cause) from None
    return path


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` (a log); a :class:`WriteError` when it cannot be written."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise write_error(path, exc) from None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _untouched_for(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries of :func:`atomic_write` in ``folder`` (for target file ``name``
    only, if given) whose process is gone and that have not changed for :data:`STALE_AFTER_S`,
    i.e. left by a kill during a write; returns them. Temporaries written from other machines
    are left alone (their processes cannot be checked), and so are fresh ones: a container that
    shares this host name but not its process ids may be writing them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if (match and match["host"] == _HOST and (name is None or match["name"] == name)
                and not _alive(int(match["pid"])) and _untouched_for(path, STALE_AFTER_S)):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
