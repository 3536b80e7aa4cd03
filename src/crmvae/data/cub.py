"""CUB image-captions (as used by Shi et al. 2019 and Daunhawer et al. 2022), from real files.

Layout under ``DataConfig.root`` (or ``root/cub``)::

    text_trainvalclasses.txt   one caption per line, 10 consecutive lines per training image
    text_testclasses.txt       the same for the test images
    train/<class>/<image>.jpg  images, classes and files in sorted order (ImageFolder order)
    test/<class>/<image>.jpg

Caption line ``j`` belongs to image ``j // 10``. Every caption is one example (image ``j // 10``
resized to 64x64, caption ``j`` tokenised to 32 ids); the vocabulary is built from the training
captions (words seen more than 3 times, plus ``<exc>``, ``<pad>``, ``<eos>``). Decoded tensors
are cached in the data directory, keyed by a listing of the files (names, sizes, mtimes).

Without ``data.root``: the captioned scenes (:mod:`crmvae.data.scenes`) in CUB form, the same
``image`` and ``caption`` modalities, with the scenes' vocabulary instead of the CUB one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .base import MultimodalDataset
from .cache import cache_info, cached_build
from .captions import (
    CAPTION_LENGTH,
    MIN_OCCURRENCES,
    SPECIAL_TOKENS,
    Vocabulary,
    build_vocabulary,
    tokenize,
    truncated_count,
)
from .scenes import (
    SCENE_VOCABULARY,
    STANDIN_PARAMS,
    caption_modalities,
    scenes_dataset,
    standin_info,
    standin_scenes,
)
from .sources import SPLITS

log = logging.getLogger(__name__)

LOADER_VERSION = 1
IMAGE_SIZE = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TEXT_FILES = {"train": "text_trainvalclasses.txt", "test": "text_testclasses.txt"}
#: Vocabulary size of the reference preprocessing of the full CUB captions (Shi et al. 2019).
REFERENCE_VOCAB_SIZE = 1590
NO_ROOT = (
    "the real {name} files need data.root, a folder in the release layout (without it, the "
    "dataset loads the offline captioned-scenes stand-in instead)"
)


# --------------------------------------------------------------------------------------------
# images (shared with the CelebA loader)


def read_image(
    path: Path, modality: str, size: int = IMAGE_SIZE, crop: int | None = None, min_side: int = 1
) -> np.ndarray:
    """``uint8 [3, size, size]`` RGB of the image at ``path``: centre-cropped to ``crop`` x
    ``crop`` when given (``offset = (side - crop) // 2``), then resized (bilinear, antialiased).
    :class:`DataError` naming the file and modality for an unreadable or too small image."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for corrupt/truncated files
        raise DataError(f"{path} (modality {modality!r}): unreadable image ({exc})") from None
    w, h = rgb.size
    need = max(min_side, crop or 1)
    if w < need or h < need:
        raise DataError(
            f"{path} (modality {modality!r}): image is {w}x{h}, expected at least {need}x{need}"
        )
    if crop is not None:
        top, left = (h - crop) // 2, (w - crop) // 2
        rgb = rgb.crop((left, top, left + crop, top + crop))
    rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def read_images(
    paths: Sequence[Path], modality: str, size: int = IMAGE_SIZE, crop: int | None = None
) -> Tensor:
    """``uint8 [N, 3, size, size]`` of ``paths`` (see :func:`read_image`), decoded by threads."""
    if not paths:
        raise DataError(f"modality {modality!r}: no images to read")
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(lambda p: read_image(p, modality, size, crop), paths, chunksize=64))
    return torch.from_numpy(np.stack(images))


def listing_digest(paths: Sequence[Path], root: Path) -> str:
    """sha256 of the files' relative names, sizes and modification times (the cache key)."""
    digest = hashlib.sha256()
    for p in paths:
        st = p.stat()
        digest.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# the release layout


def cub_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding the caption files: ``root`` or ``root/cub``."""
    root = Path(root).expanduser()
    for candidate in (root, root / "cub"):
        if (candidate / TEXT_FILES["train"]).is_file():
            return candidate
    raise DataError(
        f"{root}: no {TEXT_FILES['train']} (expected it in {root} or {root / 'cub'}, beside "
        f"{TEXT_FILES['test']} and the train/ and test/ image folders)"
    )


def image_files(folder: Path) -> list[Path]:
    """Images of an ImageFolder-style ``folder/<class>/<file>``, classes then files sorted."""
    if not folder.is_dir():
        raise DataError(f"{folder}: missing image folder (modality 'image'), expected <class>/<image>.jpg")
    files = [
        f
        for c in sorted(p for p in folder.iterdir() if p.is_dir())
        for f in sorted(c.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(
            f"{folder}: empty folder, expected class folders of {'/'.join(IMAGE_SUFFIXES)} images "
            "(modality 'image')"
        )
    return files


def caption_file(base: Path, split: str) -> Path:
    """The caption file of ``split`` in ``base``; :class:`DataError` when it is missing."""
    path = base / TEXT_FILES[split]
    if not path.is_file():
        raise DataError(f"{path}: missing caption file (modality 'caption')")
    return path


def read_captions(path: Path) -> list[list[str]]:
    """The tokenised captions of a caption file, one per line (a final newline is allowed)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} (modality 'caption'): unreadable text ({exc})") from None
    if not lines:
        raise DataError(f"{path} (modality 'caption'): empty file, expected one caption per line")
    captions = [tokenize(line) for line in lines]
    empty = [i + 1 for i, words in enumerate(captions) if not words]
    if empty:
        raise DataError(f"{path} (modality 'caption'): empty caption on line(s) {empty[:10]}")
    return captions


def load_vocabulary(root: str | os.PathLike[str]) -> Vocabulary:
    """The CUB vocabulary of the training captions under ``root``."""
    path = caption_file(cub_dir(root), "train")
    vocab = build_vocabulary(read_captions(path))
    if len(vocab) == len(SPECIAL_TOKENS):
        raise DataError(
            f"{path} (modality 'caption'): no word occurs more than {MIN_OCCURRENCES} times, "
            "so the vocabulary would be empty"
        )
    return vocab


def decode_captions(root: str | os.PathLike[str], tokens: Tensor) -> list[str]:
    """Caption texts of ids ``[N, L]`` over the vocabulary of the training captions under ``root``."""
    return load_vocabulary(root).decode(tokens)


def caption_vocab_size(cfg: DataConfig) -> int:
    """The caption vocabulary size of ``cfg``: the training captions' under ``data.root``, the
    scenes' (:data:`~crmvae.data.scenes.SCENE_VOCABULARY`) without it."""
    return len(load_vocabulary(cfg.root)) if cfg.root else len(SCENE_VOCABULARY)


def load_cub_split(
    root: str | os.PathLike[str], split: str, captions_per_image: int = 10
) -> dict[str, Tensor]:
    """``image uint8 [n_img, 3, 64, 64]``, ``caption int64 [n_img * k, 32]`` and ``vocab_size``
    (0-d) of ``split``, after checking that there are ``k = captions_per_image`` captions for
    every image."""
    base = cub_dir(root)
    vocab = load_vocabulary(root)
    text_path = caption_file(base, split)
    captions = read_captions(text_path)
    log.info(
        "%s: %d of %d captions have more than %d words and are cut",
        text_path, truncated_count(captions, CAPTION_LENGTH), len(captions), CAPTION_LENGTH - 1,
    )
    files = image_files(base / split)
    if len(captions) != captions_per_image * len(files):
        raise DataError(
            f"{text_path}: {len(captions)} captions for {len(files)} images in {base / split}; "
            f"expected {captions_per_image} per image ({captions_per_image * len(files)})"
        )
    return {
        "image": read_images(files, "image"),
        "caption": vocab.encode(captions, CAPTION_LENGTH),
        "vocab_size": torch.tensor(len(vocab)),
    }


# --------------------------------------------------------------------------------------------
# the dataset


@dataclass(frozen=True)
class CUB:
    """CUB image-captions from real files. ``params``: ``captions_per_image`` (10 in the release);
    ``num_train``/``num_test`` size the scenes stand-in served without ``data.root``. Real data
    has no labels (evaluation uses the cosine similarity of the unimodal latents); the stand-in
    keeps the scenes' labels (main shape) and 11 attributes."""

    name: str = "cub"
    summary: str = "CUB birds: 64x64 image + 32-word caption, 10 captions per image (real files: data.root)"

    @property
    def params(self) -> dict[str, Any]:
        return {"captions_per_image": 10, **STANDIN_PARAMS}

    def load(self, cfg: DataConfig, split: str) -> MultimodalDataset:
        if not cfg.root:
            return scenes_dataset(standin_scenes(cfg, split), f"{self.name}/{split} (scenes stand-in)")
        k = self._per_image(cfg)
        tensors = self._decoded(cfg, split)
        specs = caption_modalities(int(tensors["vocab_size"]))
        images = tensors["image"].repeat_interleave(k, dim=0)
        return MultimodalDataset(
            {"image": images, "caption": tensors["caption"]}, specs, name=f"{self.name}/{split}",
            text_decoders={"caption": partial(decode_captions, cfg.root)},
        )

    def _decoded(self, cfg: DataConfig, split: str) -> dict[str, Tensor]:
        spec = self.cache_spec(cfg, split)
        return cached_build(
            f"{self.name}-{split}",
            spec,
            lambda: load_cub_split(self._root(cfg), split, spec["captions_per_image"]),
            cfg.data_dir,
        )

    def cache_spec(self, cfg: DataConfig, split: str) -> dict[str, Any]:
        """What determines the decoded split: the folder, the parameters and the file listing."""
        base = cub_dir(self._root(cfg))
        files = [*image_files(base / split), caption_file(base, "train"), caption_file(base, split)]
        return {
            "dataset": self.name,
            "version": LOADER_VERSION,
            "root": str(base.resolve()),
            "split": split,
            "captions_per_image": self._per_image(cfg),
            "files_sha256": listing_digest(files, base),
        }

    def info(self, cfg: DataConfig) -> dict[str, Any]:
        if not cfg.root:
            return standin_info(cfg, caption_modalities(len(SCENE_VOCABULARY)), (
                "no data.root: the captioned-scenes stand-in in CUB form (generated offline, as dataset "
                f"'scenes'): caption vocabulary {len(SCENE_VOCABULARY)} scene words, where real CUB's is "
                f"built from the training captions ({REFERENCE_VOCAB_SIZE} in the reference); labels = "
                "main shape, which real CUB lacks"
            ))  # fmt: skip
        info: dict[str, Any] = {"source": f"release files under {cfg.root}", "splits": {}}
        try:
            vocab = load_vocabulary(self._root(cfg))
        except (ConfigError, DataError) as exc:
            return {**info, "error": str(exc)}
        info["modalities"] = [asdict(s) for s in caption_modalities(len(vocab))]
        for split in SPLITS:
            info["splits"][split] = cache_info(f"{self.name}-{split}", partial(self.cache_spec, cfg, split),
                                              cfg.data_dir, errors=(DataError,))
        return info

    def _root(self, cfg: DataConfig) -> str:
        if not cfg.root:
            raise ConfigError(NO_ROOT.format(name="CUB"))
        return cfg.root

    def _per_image(self, cfg: DataConfig) -> int:
        k = cfg.params["captions_per_image"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"data.params.captions_per_image={k!r}; expected a positive integer")
        return k
