"""PolyMNIST (Sutter et al. 2021) and Translated-PolyMNIST (Daunhawer et al. 2022).

Each tuple holds one image per modality ``m0..m{M-1}`` of the same digit class; modality ``m``
has its own background photo. Generation (vectorised over examples, deterministic from the seed):

1. for every modality, an independent random permutation of the MNIST images within each class,
   so tuple ``i`` holds *different* MNIST images of class ``labels[i]`` in each modality;
2. Translated-PolyMNIST only: the digit is downscaled by ``scale`` (bilinear, 28 -> 21 for 0.75)
   and pasted at a random offset ``0..27-size`` per axis on a black 28x28 canvas;
3. the digit is binarised (pixel > 0.5), a random 28x28 crop of the modality's background is
   taken, and the crop's colour is inverted (``255 - value``) at the digit's pixels.

With ``DataConfig.root`` set, the official release is read instead, in either layout:
``{train,test}/m{k}.pt`` + ``labels.pt`` or ``{train,test}/m{k}/{i}.{digit}.png``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..fileio import TORCH_LOAD_ERRORS, load_error_reason, torch_load
from .base import ModalitySpec, MultimodalDataset
from .cache import cache_info, cached_build
from .sources import (
    DEFAULT_BACKGROUNDS,
    MNIST_SHA256,
    MNIST_SOURCES,
    SPLITS,
    load_background,
    load_digit_source,
    mnist_path,
    resize_bilinear,
)

GENERATOR_VERSION = 1
SIZE = 28
IMAGE_SHAPE = (3, SIZE, SIZE)
NUM_CLASSES = 10
RELEASE_MODALITIES = tuple(f"m{k}" for k in range(5))
_PNG_NAME = re.compile(r"^(\d+)\.(\d+)\.png$")


# --------------------------------------------------------------------------------------------
# generation


def within_class_permutation(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation ``src`` of ``0..N-1`` with ``labels[src] == labels``."""
    by_class = np.argsort(labels, kind="stable")
    shuffled = np.lexsort((rng.random(len(labels)), labels))  # by class, random within class
    src = np.empty_like(by_class)
    src[by_class] = shuffled
    return src


def random_crops(
    background: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly placed 28x28 crops ``uint8 [n, 3, 28, 28]`` of ``background [H, W, 3]``
    and their top-left corners ``int64 [n, 2]`` (row, column)."""
    h, w, _ = background.shape
    corners = np.stack([rng.integers(0, h - SIZE + 1, n), rng.integers(0, w - SIZE + 1, n)], axis=1)
    windows = sliding_window_view(background, (SIZE, SIZE), axis=(0, 1))  # [h', w', 3, 28, 28]
    return windows[corners[:, 0], corners[:, 1]], corners


def translate_digits(small: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``uint8 [n, s, s]`` digits at random offsets ``0..27-s`` per axis on black 28x28
    canvases; returns the canvases ``[n, 28, 28]`` and offsets ``int64 [n, 2]`` (row, column)."""
    n, s = small.shape[0], small.shape[-1]
    offsets = rng.integers(0, SIZE - s, size=(n, 2))
    canvas = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    windows = sliding_window_view(canvas, (s, s), axis=(1, 2), writeable=True)  # [n, o, o, s, s]
    windows[np.arange(n), offsets[:, 0], offsets[:, 1]] = small
    return canvas, offsets


def digit_size(scale: float) -> int:
    """Side of the downscaled digit for Translated-PolyMNIST (21 for the default 0.75)."""
    return round(SIZE * scale)


def generate_polymnist(
    images: np.ndarray,
    labels: np.ndarray,
    backgrounds: Sequence[np.ndarray],
    entropy: Sequence[int],
    scale: float | None = None,
) -> dict[str, Tensor]:
    """Build one PolyMNIST split from MNIST-like ``images uint8 [N, 28, 28]`` and ``labels``.

    One modality per background; ``scale`` set makes it Translated-PolyMNIST. Randomness comes
    from ``numpy.random.SeedSequence(entropy)``, one spawned stream per modality. Returns
    ``m{k}: uint8 [N, 3, 28, 28]``, ``labels: int64 [N]`` and the provenance of every image:
    ``index`` (source image, ``[N, M]``), ``crop`` (background corner, ``[N, M, 2]``) and, when
    translated, ``offset`` (digit corner, ``[N, M, 2]``).
    """
    streams = np.random.SeedSequence(list(entropy)).spawn(len(backgrounds))
    small = None if scale is None else resize_bilinear(images, digit_size(scale))
    out: dict[str, Tensor] = {"labels": torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())}
    index, crop, offset = [], [], []
    for m, (background, stream) in enumerate(zip(backgrounds, streams, strict=True)):
        rng = np.random.default_rng(stream)
        src = within_class_permutation(labels, rng)
        if small is None:
            digits = images[src]
        else:
            digits, corners = translate_digits(small[src], rng)
            offset.append(corners)
        pixels, corners = random_crops(background, len(labels), rng)
        invert = (digits > 127).view(np.uint8) * np.uint8(255)  # binarised digit, 255 where set
        np.bitwise_xor(pixels, invert[:, None], out=pixels)  # 255 - v == v ^ 255 for uint8
        out[f"m{m}"] = torch.from_numpy(pixels)
        index.append(src)
        crop.append(corners)
    out["index"] = torch.from_numpy(np.stack(index, axis=1))
    out["crop"] = torch.from_numpy(np.stack(crop, axis=1))
    if offset:
        out["offset"] = torch.from_numpy(np.stack(offset, axis=1))
    return out


# --------------------------------------------------------------------------------------------
# official release layouts


def load_release(
    root: str | Path, split: str, modalities: Sequence[str] = RELEASE_MODALITIES
) -> dict[str, Tensor]:
    """Read a released split from ``root`` (``root/{split}`` or ``root/MMNIST/{split}``).

    Detects the layout (``m0.pt`` tensors or ``m0/`` PNG folder) and returns ``m{k}: uint8
    [N, 3, 28, 28]`` and ``labels: int64 [N]``, after checking every file.
    """
    split_dir = release_split_dir(root, split)
    layout = release_layout(split_dir, modalities[0])
    return (
        _load_pt_layout(split_dir, modalities)
        if layout == "pt"
        else _load_png_layout(split_dir, modalities)
    )


def release_split_dir(root: str | Path, split: str) -> Path:
    """The folder holding ``split`` of a release rooted at ``root``."""
    root = Path(root).expanduser()
    for candidate in (root / split, root / "MMNIST" / split):
        if candidate.is_dir():
            return candidate
    raise DataError(
        f"{root}: no {split!r} folder (expected {root / split} or {root / 'MMNIST' / split})"
    )


def release_layout(split_dir: Path, first: str = "m0") -> str:
    """``"pt"`` or ``"png"``: which official layout ``split_dir`` holds."""
    if (split_dir / f"{first}.pt").is_file():
        return "pt"
    if (split_dir / first).is_dir():
        return "png"
    raise DataError(
        f"{split_dir}: neither {first}.pt (+ labels.pt) nor a {first}/ folder of "
        f"{{i}}.{{digit}}.png images was found"
    )


def _read_pt(path: Path, what: str) -> Tensor:
    if not path.is_file():
        raise DataError(f"{path}: missing file for {what}")
    try:
        value = torch_load(path)
    except TORCH_LOAD_ERRORS as exc:
        raise DataError(f"{path} ({what}) {load_error_reason(path, exc)}") from None
    if not isinstance(value, Tensor):
        raise DataError(f"{path}: {what} must be a tensor, found {type(value).__name__}")
    return value


def _check_labels(labels: Tensor, where: str) -> Tensor:
    if (
        labels.ndim != 1
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise DataError(
            f"{where}: labels must be an integer tensor [N], "
            f"found {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() == 0:
        raise DataError(f"{where}: no labels")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= NUM_CLASSES:
        raise DataError(f"{where}: labels span [{lo}, {hi}], expected digits 0..{NUM_CLASSES - 1}")
    return labels.to(torch.int64)


def _load_pt_layout(split_dir: Path, modalities: Sequence[str]) -> dict[str, Tensor]:
    labels_path = split_dir / "labels.pt"
    out = {"labels": _check_labels(_read_pt(labels_path, "labels"), str(labels_path))}
    n = out["labels"].shape[0]
    for m in modalities:
        path = split_dir / f"{m}.pt"
        x = _read_pt(path, f"modality {m!r}")
        where = f"{path} (modality {m!r})"
        if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            raise DataError(f"{where}: shape {tuple(x.shape)}, expected [N, 3, 28, 28]")
        if x.shape[0] != n:
            raise DataError(f"{where}: {x.shape[0]} images but {labels_path.name} has {n} labels")
        if x.dtype == torch.uint8:
            out[m] = x
        elif x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            lo, hi = float(x.min()), float(x.max())
            if not (0.0 <= lo and hi <= 1.0):
                raise DataError(f"{where}: float images span [{lo}, {hi}], expected [0, 1]")
            out[m] = x.float().mul(255).round_().to(torch.uint8)
        else:
            raise DataError(f"{where}: dtype {x.dtype}, expected uint8 or float in [0, 1]")
    return out


def _png_files(folder: Path, modality: str) -> list[tuple[int, int, Path]]:
    """``(index, label, path)`` of a modality's ``{i}.{digit}.png`` files, sorted by index."""
    if not folder.is_dir():
        raise DataError(f"{folder}: missing folder for modality {modality!r}")
    entries = []
    for path in folder.iterdir():
        if path.suffix.lower() != ".png":
            continue
        match = _PNG_NAME.match(path.name)
        if match is None:
            raise DataError(
                f"{path} (modality {modality!r}): name is not of the form {{index}}.{{digit}}.png"
            )
        i, label = int(match[1]), int(match[2])
        if label >= NUM_CLASSES:
            raise DataError(f"{path} (modality {modality!r}): label {label} is not a digit 0..9")
        entries.append((i, label, path))
    if not entries:
        raise DataError(
            f"{folder}: empty folder, expected {{index}}.{{digit}}.png images "
            f"for modality {modality!r}"
        )
    entries.sort()
    for (i, _, a), (j, _, b) in itertools.pairwise(entries):
        if i == j:
            raise DataError(f"{a} and {b} (modality {modality!r}): two images with index {i}")
    return entries


def _read_png(path: Path, modality: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            mode, size, pixels = im.mode, im.size, np.asarray(im)
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for corrupt/truncated files
        raise DataError(f"{path} (modality {modality!r}): unreadable PNG ({exc})") from None
    if mode != "RGB" or size != (SIZE, SIZE):
        raise DataError(
            f"{path} (modality {modality!r}): {mode} {size[0]}x{size[1]} image, expected RGB 28x28"
        )
    return pixels


def _load_png_layout(split_dir: Path, modalities: Sequence[str]) -> dict[str, Tensor]:
    files = {m: _png_files(split_dir / m, m) for m in modalities}
    first, ref = modalities[0], files[modalities[0]]
    for m in modalities[1:]:
        if len(files[m]) != len(ref):
            raise DataError(
                f"{split_dir}: modality {m!r} has {len(files[m])} images "
                f"but {first!r} has {len(ref)}"
            )
        for (i, label, path), (j, ref_label, ref_path) in zip(files[m], ref, strict=True):
            if i != j:
                raise DataError(
                    f"{path} (modality {m!r}): index {i} has no counterpart in {first!r} "
                    f"(found {ref_path.name})"
                )
            if label != ref_label:
                raise DataError(
                    f"{path} (modality {m!r}): label {label} differs from "
                    f"{ref_path} (label {ref_label})"
                )
    out = {"labels": torch.tensor([label for _, label, _ in ref], dtype=torch.int64)}
    for m in modalities:
        pixels = np.stack([_read_png(path, m) for _, _, path in files[m]])  # [N, 28, 28, 3]
        out[m] = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return out


def _release_info(root: str, split: str) -> dict[str, Any]:
    try:
        split_dir = release_split_dir(root, split)
        return {"path": str(split_dir), "layout": release_layout(split_dir)}
    except DataError as exc:
        return {"error": str(exc)}


# --------------------------------------------------------------------------------------------
# the dataset family


@dataclass(frozen=True)
class PolyMNIST:
    """PolyMNIST, or Translated-PolyMNIST when ``translate``: parameters, loading and info.

    ``params`` (``DataConfig.params``): ``source`` (``"mnist"`` or the tiny ``"digits"``),
    ``backgrounds`` (one bundled photo name per modality) and, translated only, ``scale``.
    """

    translate: bool

    @property
    def name(self) -> str:
        return "translated_polymnist" if self.translate else "polymnist"

    @property
    def summary(self) -> str:
        what = ", digit downscaled and translated" if self.translate else ""
        return f"3x28x28 MNIST digits, one modality per photo background (5 by default){what}"

    @property
    def params(self) -> dict[str, Any]:
        """Allowed ``DataConfig.params`` keys and their defaults."""
        defaults: dict[str, Any] = {"source": "mnist", "backgrounds": list(DEFAULT_BACKGROUNDS)}
        if self.translate:
            defaults["scale"] = 0.75
        return defaults

    def modality_specs(self, cfg: DataConfig) -> list[ModalitySpec]:
        count = len(RELEASE_MODALITIES) if cfg.root else len(self._backgrounds(cfg))
        return [ModalitySpec(f"m{k}", "image", IMAGE_SHAPE) for k in range(count)]

    def load(self, cfg: DataConfig, split: str) -> MultimodalDataset:
        """The full ``split``: the release under ``cfg.root``, else the generated (cached) one."""
        tensors = load_release(cfg.root, split) if cfg.root else self.generate(cfg, split)
        specs = self.modality_specs(cfg)
        return MultimodalDataset(
            {s.name: tensors[s.name] for s in specs},
            specs,
            tensors["labels"],
            name=f"{self.name}/{split}",
        )

    def generate(self, cfg: DataConfig, split: str) -> dict[str, Tensor]:
        """The generated full ``split`` with provenance (see :func:`generate_polymnist`), cached."""
        spec = self.cache_spec(cfg, split)
        source = cfg.params["source"]

        def build() -> dict[str, Tensor]:
            images, labels = load_digit_source(source, split)
            backgrounds = [load_background(b) for b in spec["backgrounds"]]
            return generate_polymnist(
                images, labels, backgrounds, [cfg.seed, SPLITS.index(split)], spec["scale"]
            )

        return cached_build(f"{self.name}-{split}", spec, build, cfg.data_dir)

    def cache_spec(self, cfg: DataConfig, split: str) -> dict[str, Any]:
        """Everything that determines a generated split (the cache key); sizes are sliced later."""
        source = cfg.params["source"]
        if source not in MNIST_SOURCES:
            raise ConfigError(
                f"data.params.source={source!r}; expected one of {list(MNIST_SOURCES)}"
            )
        backgrounds = self._backgrounds(cfg)
        return {
            "dataset": self.name,
            "version": GENERATOR_VERSION,
            "seed": cfg.seed,
            "split": split,
            "source": source,
            "source_sha256": MNIST_SHA256 if source == "mnist" else "sklearn-load_digits",
            "backgrounds": backgrounds,
            "background_sha256": [
                hashlib.sha256(load_background(b).tobytes()).hexdigest() for b in backgrounds
            ],
            "scale": self._scale(cfg),
        }

    def info(self, cfg: DataConfig) -> dict[str, Any]:
        """Where the data comes from, per-split sizes and cache entries (builds nothing)."""
        info: dict[str, Any] = {"modalities": [asdict(s) for s in self.modality_specs(cfg)]}
        if cfg.root:
            info["source"] = f"release files under {cfg.root}"
            info["splits"] = {split: _release_info(cfg.root, split) for split in SPLITS}
            return info
        source = cfg.params["source"]
        origin = (
            str(mnist_path())
            if source == "mnist"
            else "scikit-learn load_digits (tiny, tests only)"
        )
        info["source"] = f"generated from {source} ({origin}), backgrounds {self._backgrounds(cfg)}"
        info["splits"] = {split: cache_info(f"{self.name}-{split}", partial(self.cache_spec, cfg, split), cfg.data_dir)
                          for split in SPLITS}
        return info

    def _backgrounds(self, cfg: DataConfig) -> list[str]:
        names = cfg.params["backgrounds"]
        if (
            not isinstance(names, (list, tuple))
            or not names
            or not all(isinstance(b, str) for b in names)
        ):
            raise ConfigError(
                f"data.params.backgrounds={names!r}; expected a non-empty list of photo names"
            )
        for b in names:
            load_background(b)  # raises ConfigError listing the available names
        return list(names)

    def _scale(self, cfg: DataConfig) -> float | None:
        if not self.translate:
            return None
        scale = cfg.params["scale"]
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not 1 <= digit_size(scale) < SIZE
        ):
            raise ConfigError(
                f"data.params.scale={scale!r}; expected a number with 1 <= round(28 * scale) <= 27"
            )
        return float(scale)
