"""The user's own paired data: images, vectors and token sequences, with modalities missing at will.

Layout of ``DataConfig.root`` (dataset ``"user"``; ``crmvae train --data ROOT``)::

    ROOT/modalities.yaml            (or .yml / .json) what each modality is
    ROOT/train/  ROOT/test/         the two splits, each holding the files below; or, with no such
                                    folders, the files directly in ROOT, split at random by
                                    data.seed (data.params.test_fraction of the examples, default 0.2)

``modalities.yaml``::

    modalities:                      # in this order (the mask's columns follow it)
      - {name: photo, kind: image, shape: [3, 32, 32]}          # C is 1 (grey) or 3 (RGB)
      - {name: features, kind: vector, shape: [20]}             # any shape
      - {name: caption, kind: tokens, shape: [12], vocab: vocab.txt}   # or vocab_size: 500
    num_classes: 10                  # optional: labels must lie in 0..num_classes-1

Per modality, optional: ``network``, ``likelihood``, ``likelihood_scale``, ``weight`` (defaults
by kind: image ``generic_conv`` + Laplace 0.75, vector ``generic_mlp`` + Normal 1.0, tokens
``generic_tokens`` + categorical); tokens: ``vocab`` (a file relative to ROOT, one token per line,
id = line number) and/or ``vocab_size``, and ``pad`` (default ``<pad>``, for text files).

Each modality of a split comes from exactly one source (example ``i`` is row ``i`` everywhere):

- ``NAME/`` (images): ``{i}.png`` files, 8-bit grey (C = 1) or RGB (C = 3), H x W as declared;
  a missing file is a missing entry. Without any array, N = largest index + 1.
- ``NAME.npy`` or an array ``NAME`` in ``data.npz``: ``[N, *shape]``. Images ``uint8`` (or any
  integers in 0..255) or floats in [0, 1]; vectors numbers of magnitude at most 1e6 (in [0, 1]
  under a Bernoulli likelihood; larger values are refused, not clipped: standardise them);
  tokens integer ids in ``[0, V)``.
  A missing entry is a row that is all NaN (floats) or all -1 (token ids).
- ``NAME.txt`` (tokens): line ``i`` holds example ``i``'s tokens separated by spaces, padded to
  L with ``pad``; an empty line is a missing entry.

Optional, as ``.npy`` or inside ``data.npz``: ``labels`` (integers ``[N]``, 0..99999) and ``mask``
(bool ``[N, M]``, True = present; it may drop entries but never claim an absent one). Every
example needs at least one modality. Everything is checked on load; an error names the file,
the modality and what was expected. Images are stored as ``uint8`` (floats are rounded to
``k / 255``), tokens as ``int64``, vectors as ``float32``; absent entries are stored as zeros.

With ``data.params.lazy: true``, training reads the ``NAME/{i}.png`` images of a split when a
batch needs them rather than all at load (:class:`~crmvae.data.streamed.StreamedDataset`), so a
large image folder need not fit in memory; each image is checked when it is read. Arrays and
text files are still read at load; evaluation reads every split in memory.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from PIL import Image
from torch import Tensor

from ..config import DataConfig, ModalityConfig, from_dict
from ..errors import ConfigError, DataError
from .base import ModalitySpec, MultimodalDataset
from .sources import SPLITS
from .streamed import MASK_KEY, StreamedDataset

NAME = "user"
FORMAT_FILES = ("modalities.yaml", "modalities.yml", "modalities.json")
ARCHIVE = "data.npz"
EXTRA_ARRAYS = ("labels", "mask")
MISSING_TOKEN = -1
#: Network, likelihood and likelihood scale of each kind when modalities.yaml names none.
KIND_DEFAULTS: dict[str, tuple[str, str, float]] = {
    "image": ("generic_conv", "laplace", 0.75),
    "vector": ("generic_mlp", "normal", 1.0),
    "tokens": ("generic_tokens", "categorical", 1.0),
}
#: Largest magnitude of a vector entry under a Normal or Laplace decoder: beyond it, a decoder of
#: scale ~1 meets squared errors of 1e12 and more, and training overflows. Such data is refused.
MAX_VECTOR_MAGNITUDE = 1e6
#: Most classes labels may name: the evaluation's classifiers get one output per class, so a label
#: such as 10**12 (usually a wrong column) would ask for a terabyte-sized layer.
MAX_CLASSES = 100_000
_IMAGE_NAME = re.compile(r"^(\d+)\.png$")
_MODALITY_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_NPY_MAGIC = b"\x93NUMPY"
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


@dataclass
class UserModality:
    """One entry of ``modalities.yaml``."""

    name: str
    kind: Literal["image", "vector", "tokens"]
    shape: list[int]
    vocab: str | None = None
    vocab_size: int | None = None
    pad: str = "<pad>"
    network: str | None = None
    likelihood: str | None = None
    likelihood_scale: float | None = None
    weight: float = 1.0


@dataclass
class UserFormat:
    """The whole of ``modalities.yaml``."""

    modalities: list[UserModality] = field(default_factory=list)
    num_classes: int | None = None


# --------------------------------------------------------------------------------------------
# modalities.yaml


def data_root(cfg: DataConfig) -> Path:
    """``cfg.root`` as an existing folder."""
    if not cfg.root:
        raise ConfigError(f"dataset {NAME!r} reads your own files: set data.root=PATH (or `crmvae train --data PATH`)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root}: {'a file, not a folder' if root.exists() else 'no such folder'}")
    return root


def format_file(root: Path) -> Path:
    """The modalities file of ``root``."""
    for name in FORMAT_FILES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no {' / '.join(FORMAT_FILES)} describing the modalities (see `crmvae.data.user`)")


def read_format(root: Path) -> UserFormat:
    """Parse and check ``root``'s modalities file; ``vocab_size`` is filled in from ``vocab``."""
    path = format_file(root)
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid YAML/JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("modalities"), list) or not raw["modalities"]:
        raise DataError(f"{path}: expected a mapping with key 'modalities': a non-empty list of modalities")
    for i, entry in enumerate(raw["modalities"]):
        missing = [k for k in ("name", "kind", "shape") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise DataError(
                f"{path}: modalities[{i}] lacks key(s) {missing}; every modality needs name, "
                f"kind (image|vector|tokens) and shape"
            )
    try:
        fmt = from_dict(UserFormat, raw, where=str(path))
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    names = [m.name for m in fmt.modalities]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: modality names must be unique, got {names}")
    if fmt.num_classes is not None and not 1 <= fmt.num_classes <= MAX_CLASSES:
        raise DataError(f"{path}: num_classes={fmt.num_classes}, expected 1..{MAX_CLASSES}")
    for m in fmt.modalities:
        _check_modality(path, m)
        if m.kind == "tokens":
            m.vocab_size = _vocab_size(root, path, m)
    return fmt


def _check_modality(path: Path, m: UserModality) -> None:
    where = f"{path}: modality {m.name!r}"
    if not _MODALITY_NAME.match(m.name) or m.name in EXTRA_ARRAYS:
        raise DataError(f"{where}: a name is letters, digits, '_' or '-', and not {list(EXTRA_ARRAYS)}")
    if not m.shape or any(s < 1 for s in m.shape):
        raise DataError(f"{where}: shape {m.shape} must be a non-empty list of positive sizes")
    if m.kind == "image" and (len(m.shape) != 3 or m.shape[0] not in (1, 3)):
        raise DataError(f"{where}: an image has shape [C, H, W] with C = 1 (grey) or 3 (RGB), got {m.shape}")
    if m.kind == "tokens" and len(m.shape) != 1:
        raise DataError(f"{where}: a token sequence has shape [L], got {m.shape}")
    if m.kind != "tokens" and (m.vocab is not None or m.vocab_size is not None):
        raise DataError(f"{where}: vocab/vocab_size apply to kind 'tokens' only, this is {m.kind!r}")


def read_vocab(root: Path, m: UserModality) -> list[str]:
    """The tokens of ``m.vocab`` (one per line, id = line number), checked to be unique."""
    path = root / str(m.vocab)
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} (vocabulary of modality {m.name!r}): cannot be read ({exc})") from None
    seen: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if not token or token.strip() != token or " " in token:
            raise DataError(f"{path}:{i + 1} (modality {m.name!r}): {token!r} is not a token (non-empty, no spaces)")
        if token in seen:
            raise DataError(f"{path}:{i + 1} (modality {m.name!r}): token {token!r} repeats line {seen[token] + 1}")
        seen[token] = i
    return tokens


def _vocab_size(root: Path, path: Path, m: UserModality) -> int:
    if m.vocab is None:
        if m.vocab_size is None or m.vocab_size < 2:
            raise DataError(f"{path}: token modality {m.name!r} needs vocab (a file) or vocab_size >= 2")
        return m.vocab_size
    size = len(read_vocab(root, m))
    if m.vocab_size is not None and m.vocab_size != size:
        raise DataError(f"{path}: modality {m.name!r} has vocab_size {m.vocab_size} but {m.vocab} holds {size} tokens")
    if size < 2:
        raise DataError(f"{root / m.vocab}: modality {m.name!r} needs at least 2 tokens, found {size}")
    return size


def modality_spec(m: UserModality) -> ModalitySpec:
    return ModalitySpec(m.name, m.kind, tuple(m.shape), m.vocab_size)


def user_modality_configs(cfg: DataConfig) -> list[ModalityConfig]:
    """The model's modalities for the user data at ``cfg.root``: the kind's network and likelihood
    (:data:`KIND_DEFAULTS`) unless ``modalities.yaml`` names others."""
    out = []
    for m in read_format(data_root(cfg)).modalities:
        network, likelihood, scale = KIND_DEFAULTS[m.kind]
        out.append(ModalityConfig(
            m.name, list(m.shape), m.network or network, m.likelihood or likelihood,
            scale if m.likelihood_scale is None else m.likelihood_scale, m.weight, m.vocab_size,
        ))  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# one folder of examples


def _is_numpy_file(path: Path) -> bool:
    """Whether ``path`` starts like a ``.npy`` file or is a zip archive (``.npz``)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_NPY_MAGIC)) == _NPY_MAGIC or zipfile.is_zipfile(path)
    except OSError:
        return False


def _unreadable(path: Path, exc: Exception) -> DataError:
    """Why NumPy cannot load ``path``, without its advice to allow pickles (unsafe for untrusted files)."""
    if not _is_numpy_file(path):
        reason = "is not a NumPy file (truncated, or another kind of file)"
    elif "allow_pickle" in str(exc):
        reason = "holds Python objects rather than numbers, refused since loading them could run code"
    else:
        reason = f"is damaged ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
    return DataError(f"{path} {reason}; save plain numeric arrays with numpy.save / numpy.savez")


class _Arrays:
    """The ``.npy`` files and ``data.npz`` members of a split folder, by name."""

    def __init__(self, folder: Path, allowed: list[str]) -> None:
        self.folder = folder
        self.archive: dict[str, Any] = {}
        archive = folder / ARCHIVE
        if archive.is_file():
            try:
                with np.load(archive, allow_pickle=False) as npz:
                    self.archive = {key: npz[key] for key in npz.files}
            except _NPZ_ERRORS as exc:
                raise _unreadable(archive, exc) from None
        self.files = {p.stem: p for p in folder.glob("*.npy")}
        for key, where in [*((k, f"{archive}[{k!r}]") for k in self.archive), *((k, str(p)) for k, p in self.files.items())]:
            if key not in allowed:
                raise DataError(f"{where}: {key!r} is no modality of modalities.yaml nor one of {list(EXTRA_ARRAYS)}")
        both = sorted(set(self.archive) & set(self.files))
        if both:
            raise DataError(f"{folder}: {both} are both .npy files and members of {ARCHIVE}; keep one")

    def __contains__(self, key: str) -> bool:
        return key in self.archive or key in self.files

    def where(self, key: str) -> str:
        return f"{self.folder / ARCHIVE}[{key!r}]" if key in self.archive else str(self.files[key])

    def get(self, key: str) -> np.ndarray:
        if key in self.archive:
            return self.archive[key]
        try:
            return np.load(self.files[key], allow_pickle=False)
        except _NPZ_ERRORS as exc:
            raise _unreadable(self.files[key], exc) from None


@dataclass
class _Column:
    """One modality's stored values ``[N, *shape]`` and presence ``[N]``."""

    values: Tensor
    present: Tensor


def _check_shape(x: np.ndarray, m: UserModality, where: str) -> None:
    if x.ndim != 1 + len(m.shape) or list(x.shape[1:]) != list(m.shape):
        raise DataError(f"{where} (modality {m.name!r}): shape {list(x.shape)}, expected [N, {', '.join(map(str, m.shape))}]")


def _nan_rows(x: np.ndarray, m: UserModality, where: str) -> np.ndarray:
    """Rows that are NaN throughout (missing entries); a partly-NaN row is an error."""
    nan = np.isnan(x).reshape(len(x), -1)
    partial = nan.any(1) & ~nan.all(1)
    if partial.any():
        raise DataError(
            f"{where} (modality {m.name!r}): example {int(partial.argmax())} is partly NaN; "
            f"a missing entry is NaN throughout, a present one has no NaN"
        )
    return nan.all(1)


def _image_array(x: np.ndarray, m: UserModality, where: str) -> _Column:
    _check_shape(x, m, where)
    if x.dtype == np.uint8:
        return _Column(torch.from_numpy(x.copy()), torch.ones(len(x), dtype=torch.bool))
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where} (modality {m.name!r}): integer images span [{x.min()}, {x.max()}], expected 0..255")
        return _Column(torch.from_numpy(x.astype(np.uint8)), torch.ones(len(x), dtype=torch.bool))
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where} (modality {m.name!r}): dtype {x.dtype}, expected uint8 (0..255) or floats in [0, 1]")
    absent = _nan_rows(x, m, where)
    values = np.where(absent.reshape((-1,) + (1,) * len(m.shape)), 0.0, x)
    if values.size and not (values.min() >= 0.0 and values.max() <= 1.0):  # also catches +-inf
        raise DataError(
            f"{where} (modality {m.name!r}): float images span [{values.min()}, {values.max()}], "
            f"expected [0, 1] (or uint8 0..255)"
        )
    return _Column(torch.from_numpy(np.round(values * 255.0).astype(np.uint8)), torch.from_numpy(~absent))


def _vector_array(x: np.ndarray, m: UserModality, where: str) -> _Column:
    _check_shape(x, m, where)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{where} (modality {m.name!r}): dtype {x.dtype}, expected numbers (NaN rows = missing)")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        x = x.astype(np.float32)
    absent = _nan_rows(x, m, where)
    values = np.where(absent.reshape((-1,) + (1,) * len(m.shape)), np.float32(0.0), x)
    if not np.isfinite(values).all():
        row = int((~np.isfinite(values)).reshape(len(x), -1).any(1).argmax())
        raise DataError(f"{where} (modality {m.name!r}): example {row} is infinite or beyond float32's range; fix or remove that example")
    _check_vector_range(values, m, where)
    return _Column(torch.from_numpy(values), torch.from_numpy(~absent))


def _check_vector_range(values: np.ndarray, m: UserModality, where: str) -> None:
    """Refuse values the declared likelihood cannot model: outside [0, 1] for a Bernoulli, of
    magnitude above :data:`MAX_VECTOR_MAGNITUDE` otherwise; the error names the first such example."""
    likelihood = m.likelihood or KIND_DEFAULTS["vector"][1]
    low, high = (0.0, 1.0) if likelihood == "bernoulli" else (-MAX_VECTOR_MAGNITUDE, MAX_VECTOR_MAGNITUDE)
    outside = ((values < low) | (values > high)).reshape(len(values), -1)
    if outside.any():
        row = int(outside.any(1).argmax())
        value = values.reshape(len(values), -1)[row][outside[row]][0]
        fix = ("values must lie in [0, 1]" if likelihood == "bernoulli"
               else "standardise the feature (subtract its mean, divide by its standard deviation)")
        raise DataError(
            f"{where} (modality {m.name!r}): example {row} holds {value:g}, outside [{low:g}, {high:g}] that a "
            f"{likelihood} decoder can model; {fix}"
        )


def _token_array(x: np.ndarray, m: UserModality, where: str) -> _Column:
    _check_shape(x, m, where)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{where} (modality {m.name!r}): dtype {x.dtype}, expected integer token ids")
    x = x.astype(np.int64)
    absent = (x == MISSING_TOKEN).all(1)
    values = np.where(absent[:, None], 0, x)
    bad = (values < 0) | (values >= int(m.vocab_size or 0))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{where} (modality {m.name!r}): example {row} has token id {values[row, col]} at position {col}, "
            f"outside the vocabulary [0, {m.vocab_size}) (a missing entry is a row of {MISSING_TOKEN})"
        )
    return _Column(torch.from_numpy(values), torch.from_numpy(~absent))


def _token_text(path: Path, m: UserModality, vocab: list[str]) -> _Column:
    ids = {token: i for i, token in enumerate(vocab)}
    if m.pad not in ids:
        raise DataError(f"{path} (modality {m.name!r}): the pad token {m.pad!r} is not in {m.vocab}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} (modality {m.name!r}): cannot be read as UTF-8 text ({exc})") from None
    (length,) = m.shape
    values = np.full((len(lines), length), ids[m.pad], dtype=np.int64)
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) > length:
            raise DataError(f"{path}:{i + 1} (modality {m.name!r}): {len(tokens)} tokens, expected at most {length}")
        for j, token in enumerate(tokens):
            if token not in ids:
                raise DataError(f"{path}:{i + 1} (modality {m.name!r}): token {token!r} is not in {m.vocab}")
            values[i, j] = ids[token]
    present = np.array([bool(line.split()) for line in lines], dtype=bool)
    return _Column(torch.from_numpy(values), torch.from_numpy(present))


def _image_files(folder: Path, m: UserModality) -> dict[int, Path]:
    """``{index: path}`` of a modality folder's ``{index}.png`` files."""
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        match = _IMAGE_NAME.match(path.name)
        if match is None or not path.is_file():
            raise DataError(f"{path} (modality {m.name!r}): expected only image files named {{index}}.png")
        index = int(match[1])
        if index in files:
            raise DataError(f"{path} and {files[index]} (modality {m.name!r}): two images for example {index}")
        files[index] = path
    if not files:
        raise DataError(f"{folder}: empty folder, expected {{index}}.png images of modality {m.name!r}")
    return files


def _read_image(path: Path, m: UserModality) -> np.ndarray:
    """``uint8 [C, H, W]`` pixels of one image file, checked against ``m.shape``."""
    channels, height, width = m.shape
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as im:
            im.load()
            found, size, pixels = im.mode, im.size, np.array(im)
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for corrupt/truncated files
        raise DataError(f"{path} (modality {m.name!r}): unreadable or truncated image ({exc})") from None
    if found != mode or size != (width, height):
        raise DataError(
            f"{path} (modality {m.name!r}): {found} {size[0]}x{size[1]} image (width x height), "
            f"expected {mode} {width}x{height}"
        )
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _image_presence(files: dict[int, Path], n: int) -> Tensor:
    """``bool [n]``: which examples have an image file."""
    present = torch.zeros(n, dtype=torch.bool)
    present[list(files)] = True
    return present


def _image_folder(files: dict[int, Path], n: int, m: UserModality) -> _Column:
    values = torch.zeros((n, *m.shape), dtype=torch.uint8)
    for index, path in files.items():
        values[index] = torch.from_numpy(_read_image(path, m))
    return _Column(values, _image_presence(files, n))


class _LazyImages(torch.utils.data.Dataset):
    """The examples of a user folder as items of the StreamedDataset protocol: the image folders'
    files are read (and checked) on access, other modalities come from ``tensors``."""

    def __init__(self, tensors: dict[str, Tensor], files: dict[str, dict[int, Path]],
                 modalities: list[UserModality], mask: Tensor) -> None:
        self.tensors, self.files, self.modalities, self.mask = tensors, files, modalities, mask

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {MASK_KEY: self.mask[index]}
        for col, m in enumerate(self.modalities):
            if m.name not in self.files:
                item[m.name] = self.tensors[m.name][index]
            elif self.mask[index, col]:
                item[m.name] = torch.from_numpy(_read_image(self.files[m.name][index], m))
            else:  # absent entries are zeros, as in memory
                item[m.name] = torch.zeros(m.shape, dtype=torch.uint8)
        return item


def _source(folder: Path, arrays: _Arrays, m: UserModality) -> str:
    """Which of ``dir``, ``array`` or ``text`` holds modality ``m`` in ``folder`` (exactly one)."""
    found = [
        kind for kind, exists in (
            ("dir", (folder / m.name).is_dir()), ("array", m.name in arrays), ("text", (folder / f"{m.name}.txt").is_file()),
        ) if exists
    ]  # fmt: skip
    allowed = {"image": "dir", "tokens": "text"}.get(m.kind)
    if len(found) > 1:
        raise DataError(f"{folder}: modality {m.name!r} has several sources {found}; keep one")
    if not found:
        extra = {"image": f", or a folder {m.name}/ of {{index}}.png", "tokens": f", or {m.name}.txt"}.get(m.kind, "")
        raise DataError(f"{folder}: no data for modality {m.name!r}: expected {m.name}.npy or {m.name!r} in {ARCHIVE}{extra}")
    if found[0] in ("dir", "text") and found[0] != allowed:
        raise DataError(f"{folder}: modality {m.name!r} is of kind {m.kind!r}; {found[0]} sources hold images/tokens only")
    return found[0]


def _count(counts: dict[str, int]) -> int | None:
    """The common number of rows of every array and text file, or ``None`` when there are none."""
    if not counts:
        return None
    (first, n), *rest = counts.items()
    for where, k in rest:
        if k != n:
            raise DataError(
                f"{where} has {k} examples but {first} has {n}: every array, text file and mask "
                f"needs one row per example"
            )
    return n


def _labels(x: np.ndarray, where: str, num_classes: int | None) -> Tensor:
    if x.ndim != 1 or x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers [N], found {x.dtype} {list(x.shape)}")
    top = MAX_CLASSES if num_classes is None else num_classes
    if x.size and (x.min() < 0 or x.max() >= top):
        where_top = "" if num_classes is None else " (num_classes in modalities.yaml)"
        raise DataError(f"{where}: labels span [{x.min()}, {x.max()}], expected 0..{top - 1}{where_top}")
    return torch.from_numpy(x.astype(np.int64))


def _mask(x: np.ndarray, where: str, n: int, names: list[str]) -> Tensor:
    if x.shape != (n, len(names)) or not (x.dtype == np.bool_ or np.isin(x, (0, 1)).all()):
        raise DataError(
            f"{where}: mask is {x.dtype} {list(x.shape)}, expected bool [{n}, {len(names)}] "
            f"(True = present; columns {names})"
        )
    return torch.from_numpy(x.astype(bool))


def load_user_folder(root: Path, fmt: UserFormat, folder: Path, lazy: bool = False) -> MultimodalDataset | StreamedDataset:
    """Every example stored in ``folder`` (a split folder or ``root`` itself), checked; with
    ``lazy`` and an image folder, a :class:`StreamedDataset` reading the images on access."""
    names = [m.name for m in fmt.modalities]
    if not folder.is_dir():
        raise DataError(f"{folder}: missing folder")
    arrays = _Arrays(folder, names + list(EXTRA_ARRAYS))
    sources = {m.name: _source(folder, arrays, m) for m in fmt.modalities}
    columns: dict[str, _Column] = {}
    counts: dict[str, int] = {}
    for m in fmt.modalities:
        if sources[m.name] == "array":
            reader = {"image": _image_array, "vector": _vector_array, "tokens": _token_array}[m.kind]
            columns[m.name] = reader(arrays.get(m.name), m, arrays.where(m.name))
            counts[arrays.where(m.name)] = len(columns[m.name].present)
        elif sources[m.name] == "text":
            path = folder / f"{m.name}.txt"
            if m.vocab is None:
                raise DataError(f"{path} (modality {m.name!r}): a text file needs a vocabulary: vocab: FILE in modalities.yaml")
            columns[m.name] = _token_text(path, m, read_vocab(root, m))
            counts[str(path)] = len(columns[m.name].present)
    extras = {key: arrays.get(key) for key in EXTRA_ARRAYS if key in arrays}
    counts.update({arrays.where(key): len(x) for key, x in extras.items() if x.ndim})
    files = {m.name: _image_files(folder / m.name, m) for m in fmt.modalities if sources[m.name] == "dir"}
    n = _count(counts)
    if n is None:
        n = 1 + max(max(f) for f in files.values())
    for m in fmt.modalities:
        if m.name in files:
            beyond = [i for i in files[m.name] if i >= n]
            if beyond:
                raise DataError(f"{files[m.name][beyond[0]]} (modality {m.name!r}): index {beyond[0]}, but the arrays hold {n} examples")
            # lazy: only which files exist now; _LazyImages reads them on access
            columns[m.name] = _Column(torch.empty(0), _image_presence(files[m.name], n)) if lazy else _image_folder(files[m.name], n, m)
    if n == 0:
        raise DataError(f"{folder}: no examples")
    present = torch.stack([columns[name].present for name in names], dim=1)
    if "mask" in extras:
        mask = _mask(extras["mask"], arrays.where("mask"), n, names)
        claimed = mask & ~present
        if claimed.any():
            row, col = (int(i) for i in claimed.nonzero()[0])
            raise DataError(
                f"{arrays.where('mask')}: example {row} marks modality {names[col]!r} present, but its entry "
                f"is missing (no file, NaN row, -1 row or empty line)"
            )
        present = mask
    empty = ~present.any(1)
    if empty.any():
        raise DataError(
            f"{folder}: example {int(empty.nonzero()[0])} has no modality present ({int(empty.sum())} such "
            f"examples); every example needs at least one of {names}"
        )
    lazy = lazy and bool(files)
    tensors = {}
    for m, name in enumerate(names):  # absent entries are stored as zeros
        if lazy and name in files:
            continue
        values = columns[name].values
        tensors[name] = torch.where(present[:, m].reshape((-1,) + (1,) * (values.dim() - 1)), values, torch.zeros_like(values))
    specs = [modality_spec(m) for m in fmt.modalities]
    if lazy:
        return StreamedDataset(_LazyImages(tensors, files, fmt.modalities, present), specs, name=str(folder))
    labels = _labels(extras["labels"], arrays.where("labels"), fmt.num_classes) if "labels" in extras else None
    return MultimodalDataset(tensors, specs, labels, present, name=str(folder))


# --------------------------------------------------------------------------------------------
# splits and the provider


def has_split_folders(root: Path) -> bool:
    """Whether ``root`` holds ``train/`` and ``test/`` (one without the other is an error)."""
    found = [split for split in SPLITS if (root / split).is_dir()]
    if found and len(found) != len(SPLITS):
        missing = sorted(set(SPLITS) - set(found))
        raise DataError(f"{root}: has {found[0]}/ but no {missing[0]}/; give both split folders, or neither (then data.params.test_fraction splits)")
    return bool(found)


def split_indices(n: int, test_fraction: float, seed: int) -> dict[str, Tensor]:
    """A random split of ``0..n-1`` by ``seed``: ``round(test_fraction * n)`` (at least 1) test
    indices and the rest for training, each sorted."""
    n_test = max(1, round(test_fraction * n))
    if n_test >= n:
        raise DataError(f"{n} examples cannot be split with test_fraction={test_fraction} (no training example left)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {"test": order[:n_test].sort().values, "train": order[n_test:].sort().values}


def _test_fraction(cfg: DataConfig) -> float:
    value = cfg.params["test_fraction"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"data.params.test_fraction={value!r}; expected a number in (0, 1)")
    return float(value)


@dataclass(frozen=True)
class UserData:
    """The provider of dataset ``"user"``: the files under ``DataConfig.root`` (see the module)."""

    name: str = NAME
    summary: str = "your own paired data under data.root: images, vectors and token sequences, entries may be missing"

    @property
    def params(self) -> dict[str, Any]:
        return {"test_fraction": 0.2, "lazy": False}

    def load(self, cfg: DataConfig, split: str) -> MultimodalDataset:
        return self._load(cfg, split, lazy=False)  # type: ignore[return-value]

    def stream(self, cfg: DataConfig, split: str) -> MultimodalDataset | StreamedDataset:
        """The split with its image folders read on access (in memory when it has none)."""
        return self._load(cfg, split, lazy=True)

    def _load(self, cfg: DataConfig, split: str, lazy: bool) -> MultimodalDataset | StreamedDataset:
        if not isinstance(cfg.params["lazy"], bool):
            raise ConfigError(f"data.params.lazy={cfg.params['lazy']!r}; expected true or false")
        root = data_root(cfg)
        fmt = read_format(root)
        fraction = _test_fraction(cfg)
        if has_split_folders(root):
            return load_user_folder(root, fmt, root / split, lazy)
        full = load_user_folder(root, fmt, root, lazy)
        return full.subset(split_indices(len(full), fraction, cfg.seed)[split], name=f"{root} ({split} split)")

    def info(self, cfg: DataConfig) -> dict[str, Any]:
        root = data_root(cfg)
        fmt = read_format(root)
        fraction = _test_fraction(cfg)
        if has_split_folders(root):
            splits = {split: {"path": str(root / split)} for split in SPLITS}
        else:
            splits = {
                split: {"path": str(root), "selection": f"{share:.3g} of the examples at random (data.seed={cfg.seed})"}
                for split, share in (("train", 1 - fraction), ("test", fraction))
            }
        return {
            "modalities": [asdict(modality_spec(m)) for m in fmt.modalities],
            "source": f"user files under {root} ({format_file(root).name})",
            "splits": splits,
        }
