"""Bimodal CelebA (Sutter et al. 2020), from real files: a face image and its attribute text.

Layout under ``DataConfig.root`` (or ``root/celeba``, ``root/CelebA``), official or Kaggle form::

    list_attr_celeba.txt | .csv       40 attributes per image, values -1/1 (or 0/1)
    list_eval_partition.txt | .csv    partition per image: 0 train, 1 validation, 2 test
    img_align_celeba/000001.jpg ...   (or img_align_celeba/img_align_celeba/)

Split ``train`` is partition 0, ``test`` partition 2. Image: centre crop 148x148 of the aligned
178x218 face (offsets ``((218-148)//2, (178-148)//2)``), resized to 64x64. Text: the names of the
attributes that are 1, joined by ``", "``, underscores to spaces, lower case, cut to 256
characters, placed at a random start in ``0..256-len`` of a string of ``'*'`` (seeded by
``[seed, split]``; ``params.random_text_start=false`` puts it at 0), as ids over the 71-symbol
alphabet (:mod:`crmvae.data.text`).
``attributes`` = the 40 attributes (bool ``[N, 40]``); there are no class labels.

Without ``data.root``: the captioned scenes (:mod:`crmvae.data.scenes`) in CelebA form. Their 11
attributes become 53 binary ones (:func:`binary_attributes`: ``blue_background``, ``striped``...,
``two_objects``, ``circle``, ``red``, ``large``, ``left``, ``second_star``...), written as text by
the same rule; ``labels`` = the main shape.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .base import ModalitySpec, MultimodalDataset
from .cache import cache_info, cached_build
from .cub import NO_ROOT, listing_digest, read_images
from .scenes import (
    ATTRIBUTE_NAMES,
    ATTRIBUTE_VALUES,
    STANDIN_PARAMS,
    standin_info,
    standin_scenes,
)
from .sources import SPLITS
from .text import VOCAB_SIZE, decode_tokens, encode_strings

LOADER_VERSION = 1
TEXT_LENGTH = 256
CROP = 148
PAD_SYMBOL = "*"
NUM_ATTRIBUTES = 40
PARTITIONS = {"train": 0, "test": 2}
IMAGE_FOLDER = "img_align_celeba"
MODALITIES = [
    ModalitySpec("image", "image", (3, 64, 64)),
    ModalitySpec("text", "tokens", (TEXT_LENGTH,), VOCAB_SIZE),
]
#: Binary attribute names per value of each scene attribute (the stand-in); ``objects`` gives
#: one, ``two_objects``.
BINARY_FORMS: dict[str, str] = {
    "shape": "{}", "colour": "{}", "size": "{}", "position": "{}",
    "shape2": "second_{}", "colour2": "second_{}", "size2": "second_{}", "position2": "second_{}",
    "background": "{}_background", "texture": "{}",
}  # fmt: skip
#: The order of the stand-in's binary attributes, and so of its text: the scene (background,
#: texture), which the image latent holds from the first pass, before the objects, so that it
#: stands at a fixed place at the head of a text at start 0. Models trained on texts in another
#: order do not read these texts.
TEXT_ORDER = (
    "background", "texture", "objects", "shape", "colour", "size", "position",
    "shape2", "colour2", "size2", "position2",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# text


def attribute_text(names: Sequence[str], row: np.ndarray, length: int = TEXT_LENGTH) -> str:
    """The attributes set in ``row`` as text: ``"black hair, smiling, young"`` (<= ``length``)."""
    return ", ".join(n.replace("_", " ").lower() for n, on in zip(names, row, strict=True) if on)[:length]


def place_texts(texts: Sequence[str], rng: np.random.Generator | None, length: int = TEXT_LENGTH) -> list[str]:
    """Each text in a string of ``length`` ``'*'``, starting at a uniform random index in
    ``0..length - len(text)`` drawn from ``rng``, or at 0 when ``rng`` is None."""
    sizes = np.array([len(t) for t in texts], dtype=np.int64)
    starts = rng.integers(0, length - sizes + 1) if rng is not None else np.zeros_like(sizes)
    return [
        PAD_SYMBOL * s + t + PAD_SYMBOL * (length - s - len(t))
        for s, t in zip(starts.tolist(), texts, strict=True)
    ]


def encode_attribute_texts(
    names: Sequence[str], values: np.ndarray, seed: int, split: str, random_start: bool = True
) -> Tensor:
    """Token ids ``int64 [N, 256]`` of the attribute texts of ``values`` ``bool [N, A]``, each
    placed at a random start drawn from ``SeedSequence([seed, split index])`` (the reference's
    ``random_text_startindex``), or at start 0 when ``random_start`` is false."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)])) if random_start else None
    texts = place_texts([attribute_text(names, row) for row in values], rng)
    return encode_strings(texts, TEXT_LENGTH, pad=PAD_SYMBOL)


def decode_text(tokens: Tensor) -> list[str]:
    """The attribute texts of ids ``[N, L]``, without the ``'*'`` padding around them."""
    return [t.strip(PAD_SYMBOL) for t in decode_tokens(tokens)]


def attribute_text_parser(names: Sequence[str]) -> Callable[[list[str]], Tensor]:
    """The inverse of :func:`attribute_text` for :class:`MultimodalDataset`'s
    ``attribute_parsers``: texts -> ``int64 [N, A]``, 1 where the text names the attribute."""
    words = [n.replace("_", " ").lower() for n in names]

    def parse(texts: list[str]) -> Tensor:
        stated = [{part.strip() for part in text.split(",")} for text in texts]
        return torch.tensor([[w in found for w in words] for found in stated], dtype=torch.int64).reshape(len(texts), len(words))

    return parse


def binary_attributes(attributes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Scene attributes ``int64 [N, 11]`` as binary ones ``bool [N, 53]`` and their names, in the
    order of :data:`TEXT_ORDER`: ``two_objects = (objects == 2)``, and per other attribute ``a``
    and value ``v`` ``(a == v)`` named by :data:`BINARY_FORMS` (an absent second object sets
    none of its own)."""
    names, columns = [], []
    for key in TEXT_ORDER:
        column = attributes[:, ATTRIBUTE_NAMES.index(key), None]
        if key == "objects":
            names.append("two_objects")
            columns.append(column == 2)
        else:
            values = ATTRIBUTE_VALUES[key]
            names += [BINARY_FORMS[key].format(v) for v in values]
            columns.append(column == np.arange(len(values)))
    return names, np.concatenate(columns, axis=1)


# --------------------------------------------------------------------------------------------
# the release layout


def celeba_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding the attribute list: ``root``, ``root/celeba`` or ``root/CelebA``."""
    root = Path(root).expanduser()
    for candidate in (root, root / "celeba", root / "CelebA"):
        if any((candidate / f"list_attr_celeba{s}").is_file() for s in (".txt", ".csv")):
            return candidate
    raise DataError(
        f"{root}: no list_attr_celeba.txt or list_attr_celeba.csv "
        f"(looked in {root}, {root / 'celeba'}, {root / 'CelebA'})"
    )


def _table_path(base: Path, stem: str) -> Path:
    for suffix in (".txt", ".csv"):
        if (base / f"{stem}{suffix}").is_file():
            return base / f"{stem}{suffix}"
    raise DataError(f"{base}: missing {stem}.txt or {stem}.csv")


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header names (without the file-name column) and rows ``[file, value, ...]`` of a
    whitespace (``.txt``; an optional first line with the row count) or comma table (``.csv``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if path.suffix == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r]
        if not rows:
            raise DataError(f"{path}: empty file")
        return [c.strip() for c in rows[0][1:]], [[c.strip() for c in r] for r in rows[1:]]
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: empty file")
    count = None
    if len(lines[0]) == 1 and lines[0][0].isdigit():  # the official attribute list's first line
        count = int(lines[0][0])
        lines = lines[1:]
    header: list[str] = []
    if lines and not lines[0][0].lower().endswith((".jpg", ".jpeg", ".png")):
        header, lines = lines[0], lines[1:]
    if count is not None and count != len(lines):
        raise DataError(f"{path}: first line says {count} rows, found {len(lines)}")
    return header, lines


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``(attribute names, file names, bool [N, 40])`` of an attribute list; values -1/0/1."""
    names, rows = _read_rows(path)
    if len(names) != NUM_ATTRIBUTES:
        raise DataError(f"{path}: header names {len(names)} attributes, expected {NUM_ATTRIBUTES}")
    if not rows:
        raise DataError(f"{path}: no image rows")
    values = np.empty((len(rows), NUM_ATTRIBUTES), dtype=bool)
    for i, row in enumerate(rows):
        if len(row) != NUM_ATTRIBUTES + 1 or not set(row[1:]) <= {"-1", "0", "1"}:
            raise DataError(
                f"{path}: row {i + 1} ({row[0]!r}) has {len(row) - 1} values {row[1:4]}...; "
                f"expected {NUM_ATTRIBUTES} values in -1/0/1"
            )
        values[i] = [v == "1" for v in row[1:]]
    return names, [row[0] for row in rows], values


def read_partition(path: Path) -> dict[str, int]:
    """File name -> partition (0 train, 1 validation, 2 test)."""
    _, rows = _read_rows(path)
    out = {}
    for i, row in enumerate(rows):
        if len(row) != 2 or row[1] not in ("0", "1", "2"):
            raise DataError(f"{path}: row {i + 1} is {row}, expected '<file> <0|1|2>'")
        out[row[0]] = int(row[1])
    return out


def image_dir(base: Path) -> Path:
    """``img_align_celeba/`` (or the Kaggle archive's nested ``img_align_celeba/img_align_celeba/``)."""
    folder = base / IMAGE_FOLDER
    nested = folder / IMAGE_FOLDER
    if nested.is_dir():
        return nested
    if not folder.is_dir():
        raise DataError(f"{base}: missing image folder {IMAGE_FOLDER}/ (modality 'image')")
    return folder


def split_files(base: Path, split: str) -> tuple[list[str], list[Path], np.ndarray]:
    """Attribute names, the image paths of ``split`` and their attributes ``bool [N, 40]``."""
    attr_path = _table_path(base, "list_attr_celeba")
    names, files, values = read_attributes(attr_path)
    part_path = _table_path(base, "list_eval_partition")
    partition = read_partition(part_path)
    missing = [f for f in files if f not in partition]
    if missing:
        raise DataError(f"{part_path}: no partition for {len(missing)} images of {attr_path.name}, e.g. {missing[:3]}")
    keep = np.array([partition[f] == PARTITIONS[split] for f in files])
    if not keep.any():
        raise DataError(f"{part_path}: no image in partition {PARTITIONS[split]} ({split})")
    folder = image_dir(base)
    paths = [folder / f for f, k in zip(files, keep, strict=True) if k]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(
            f"{folder}: {len(absent)} images listed in {attr_path.name} are missing (modality 'image'), "
            f"e.g. {[p.name for p in absent[:3]]}"
        )
    return names, paths, values[keep]


def load_celeba_split(
    root: str | os.PathLike[str], split: str, seed: int, random_start: bool = True
) -> dict[str, Tensor]:
    """``image uint8 [N, 3, 64, 64]``, ``text int64 [N, 256]``, ``attributes bool [N, 40]``."""
    names, paths, values = split_files(celeba_dir(root), split)
    return {
        "image": read_images(paths, "image", crop=CROP),
        "text": encode_attribute_texts(names, values, seed, split, random_start),
        "attributes": torch.from_numpy(values),
    }


# --------------------------------------------------------------------------------------------
# the dataset


@dataclass(frozen=True)
class CelebA:
    """Bimodal CelebA from real files; ``params``: ``random_text_start`` (default true, as in
    the reference; false puts every text at start 0), and ``num_train``/``num_test``, which size
    the scenes stand-in served without ``data.root``."""

    name: str = "celeba"
    summary: str = "CelebA faces 64x64 + attribute text (256 chars, 71 symbols), 40 attributes (real files: data.root)"

    @property
    def params(self) -> dict[str, Any]:
        return {**STANDIN_PARAMS, "random_text_start": True}

    def load(self, cfg: DataConfig, split: str) -> MultimodalDataset:
        if not cfg.root:
            return self._standin(cfg, split)
        spec = self.cache_spec(cfg, split)
        tensors = cached_build(f"{self.name}-{split}", spec,
                               lambda: load_celeba_split(self._root(cfg), split, cfg.seed, _random_start(cfg)),
                               cfg.data_dir)
        base = celeba_dir(self._root(cfg))
        names, _ = _read_rows(_table_path(base, "list_attr_celeba"))
        return MultimodalDataset(
            {m.name: tensors[m.name] for m in MODALITIES},
            MODALITIES,
            name=f"{self.name}/{split}",
            attributes=tensors["attributes"],
            attribute_names=names,
            text_decoders={"text": decode_text},
            attribute_parsers={"text": attribute_text_parser(names)},
        )

    def _standin(self, cfg: DataConfig, split: str) -> MultimodalDataset:
        tensors = standin_scenes(cfg, split)
        names, values = binary_attributes(tensors["attributes"].numpy())
        text = encode_attribute_texts(names, values, cfg.seed, split, _random_start(cfg))
        return MultimodalDataset(
            {"image": tensors["image"], "text": text},
            MODALITIES,
            tensors["labels"],
            name=f"{self.name}/{split} (scenes stand-in)",
            attributes=torch.from_numpy(values),
            attribute_names=names,
            text_decoders={"text": decode_text},
            attribute_parsers={"text": attribute_text_parser(names)},
        )

    def cache_spec(self, cfg: DataConfig, split: str) -> dict[str, Any]:
        """The folder, the text placement (seed, ``random_text_start``) and a digest of the tables
        and every image file."""
        base = celeba_dir(self._root(cfg))
        tables = [_table_path(base, "list_attr_celeba"), _table_path(base, "list_eval_partition")]
        return {
            "dataset": self.name,
            "version": LOADER_VERSION,
            "root": str(base.resolve()),
            "split": split,
            "seed": cfg.seed,
            "random_text_start": _random_start(cfg),
            "files_sha256": listing_digest([*tables, *sorted(image_dir(base).iterdir())], base),
        }

    def info(self, cfg: DataConfig) -> dict[str, Any]:
        if not cfg.root:
            names, _ = binary_attributes(np.zeros((0, len(ATTRIBUTE_NAMES)), dtype=np.int64))
            return standin_info(cfg, MODALITIES, (
                "no data.root: the captioned-scenes stand-in in CelebA form (generated offline, as dataset "
                f"'scenes'): text = its {len(names)} binary scene attributes (not CelebA's 40 face "
                "attributes) written by the CelebA rule; labels = main shape, which real CelebA lacks"
            ), attributes=names)  # fmt: skip
        info: dict[str, Any] = {
            "modalities": [asdict(m) for m in MODALITIES],
            "source": f"release files under {cfg.root}",
            "splits": {},
        }
        for split in SPLITS:
            info["splits"][split] = cache_info(f"{self.name}-{split}", partial(self.cache_spec, cfg, split),
                                              cfg.data_dir, errors=(ConfigError, DataError))
        return info

    def _root(self, cfg: DataConfig) -> str:
        if not cfg.root:
            raise ConfigError(NO_ROOT.format(name="CelebA"))
        return cfg.root


def _random_start(cfg: DataConfig) -> bool:
    """``data.params.random_text_start``, checked to be a boolean."""
    value = cfg.params["random_text_start"]
    if not isinstance(value, bool):
        raise ConfigError(f"data.params.random_text_start={value!r}; expected true or false")
    return value
