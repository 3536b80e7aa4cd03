"""Captioned scenes: the offline image-caption dataset standing in for CUB and Bimodal CelebA.

Each example is a 64x64 RGB image of one or two shapes on a textured background, and a caption
that states every attribute in varied wording and order. Attributes (columns of
``attributes``, see :data:`ATTRIBUTE_NAMES`): number of objects (1 or 2), then shape, colour, size
and position of the main object and of the second one (``-1`` when there is none), background
colour and texture. ``labels`` = the main object's shape. The main object is mentioned first; in a
two-object scene it is large and the second one small, so an image classifier can tell it apart.

Generation is vectorised and deterministic from ``numpy.random.SeedSequence([seed, split])``:
attributes are drawn first, then images are rendered from closed-form masks over a pixel grid
(circle ``dx^2 + dy^2 <= r^2``, square ``max(|dx|, |dy|) <= 0.85 r``, ...), then captions are
written from the templates below and tokenised with :data:`SCENE_VOCABULARY` (length 32).

Without ``data.root``, ``cub`` and ``celeba`` serve these scenes in their own form
(:func:`standin_scenes`, after a one-time warning): generated with ``num_train``/``num_test`` and
cached exactly as dataset ``scenes`` is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache, partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError
from .base import ModalitySpec, MultimodalDataset
from .cache import cache_info, cached_build
from .captions import CAPTION_LENGTH, SPECIAL_TOKENS, Vocabulary, tokenize
from .sources import SPLITS

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SIZE = 64
IMAGE_SHAPE = (3, SIZE, SIZE)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25),
    "white": (235, 235, 235),
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (240, 215, 45),
    "purple": (135, 55, 175),
    "orange": (245, 140, 30),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "objects", "shape", "colour", "size", "position",
    "shape2", "colour2", "size2", "position2", "background", "texture",
)  # fmt: skip
#: The values each attribute takes (``objects`` holds the count itself).
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "objects": ("0", "1", "2"),
    "shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES, "position": POSITIONS,
    "shape2": SHAPES, "colour2": COLOUR_NAMES, "size2": SIZES, "position2": POSITIONS,
    "background": COLOUR_NAMES, "texture": TEXTURES,
}  # fmt: skip

#: Object centre (row, column) per position; radius per size (plus a jitter of 0..1 pixel).
CENTRES = np.array([(32, 16), (32, 48), (16, 32), (48, 32), (32, 32)], dtype=np.float32)
RADII = np.array([7, 12], dtype=np.float32)
JITTER = 2  # centre jitter: uniform in -2..2 pixels per axis

# wording: synonyms per attribute value, object phrases, background phrases, whole captions
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "to the left"),
    "right": ("on the right", "at the right", "to the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "centre": ("in the centre", "in the middle"),
}
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "striped": ("striped",),
    "checkered": ("checkered", "chequered"),
    "dotted": ("dotted", "spotted"),
}
OBJECT_FORMS: tuple[str, ...] = (
    "a {size} {colour} {shape} {position}",
    "a {colour} {shape} , {size} , {position}",
    "{position} a {size} {colour} {shape}",
)
OBJECT_JOINS: tuple[str, ...] = (" and ", " , and ", " ; there is also ")
BACKGROUND_FORMS: tuple[str, ...] = (
    "over a {texture} {background} background",
    "on a {texture} {background} background",
)
CAPTION_FORMS: tuple[str, ...] = (
    "{objects} {background_phrase}",
    "{texture} {background} background ; there is {objects}",
    "{objects} . the background is {texture} {background}",
    "this image shows {objects} {background_phrase}",
    "the background is {texture} {background} . we see {objects}",
)


def _scene_words() -> tuple[str, ...]:
    """Every word the captions can use, sorted."""
    texts = [*OBJECT_FORMS, *OBJECT_JOINS, *BACKGROUND_FORMS, *CAPTION_FORMS, *SHAPES,
             *COLOUR_NAMES]  # fmt: skip
    for table in (SIZE_WORDS, POSITION_WORDS, TEXTURE_WORDS):
        texts += [w for words in table.values() for w in words]
    return tuple(sorted({w for t in texts for w in tokenize(re.sub(r"\{\w+\}", " ", t))}))


#: The fixed vocabulary of scene captions: special tokens then every caption word.
SCENE_VOCABULARY = Vocabulary(SPECIAL_TOKENS + _scene_words())


# --------------------------------------------------------------------------------------------
# attributes


def sample_attributes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``int64 [n, 11]`` attributes (columns :data:`ATTRIBUTE_NAMES`).

    Background uniform; each object's colour uniform among the 7 others; one object anywhere of
    either size, or two: main large, second small, at distinct non-centre positions.
    """
    k = len(COLOURS)
    objects = rng.integers(1, 3, n)
    two = objects == 2
    background = rng.integers(0, k, n)
    colours = (background[:, None] + 1 + rng.integers(0, k - 1, (n, 2))) % k
    shapes = rng.integers(0, len(SHAPES), (n, 2))
    sizes = np.where(two[:, None], [1, 0], rng.integers(0, len(SIZES), (n, 1)))
    first = rng.integers(0, 4, n)
    second = (first + 1 + rng.integers(0, 3, n)) % 4
    single = rng.integers(0, len(POSITIONS), n)
    positions = np.stack([np.where(two, first, single), second], axis=1)
    texture = rng.integers(0, len(TEXTURES), n)
    out = np.stack([
        objects, shapes[:, 0], colours[:, 0], sizes[:, 0], positions[:, 0],
        shapes[:, 1], colours[:, 1], sizes[:, 1], positions[:, 1], background, texture,
    ], axis=1).astype(np.int64)  # fmt: skip
    out[~two, 5:9] = -1
    return out


# --------------------------------------------------------------------------------------------
# rendering


def _circle(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    return dy * dy + dx * dx <= r * r


def _square(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(dy), np.abs(dx)) <= 0.85 * r


def _triangle(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Apex at ``dy = -r``, base at ``dy = 0.75 r``; half-width ``0.62 (dy + r)``."""
    return (dy >= -r) & (dy <= 0.75 * r) & (np.abs(dx) <= 0.62 * (dy + r))


def _star(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Five points, one up: ``rho <= r (0.42 + 0.58 |2 frac(5 theta / 2 pi) - 1|)``."""
    theta = np.arctan2(dx, -dy)  # 0 at the top
    frac = np.mod(theta * (5 / (2 * np.pi)), 1.0)
    return np.hypot(dy, dx) <= r * (0.42 + 0.58 * np.abs(2 * frac - 1))


def _cross(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    ay, ax = np.abs(dy), np.abs(dx)
    return ((ay <= r) & (ax <= 0.3 * r)) | ((ax <= r) & (ay <= 0.3 * r))


SHAPE_MASKS = (_circle, _square, _triangle, _star, _cross)


def shape_masks(shape: np.ndarray, centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``bool [n, 64, 64]`` masks of shapes ``[n]`` at ``centre`` ``[n, 2]`` (row, column) with
    ``radius`` ``[n]``; each shape's closed form is evaluated on its examples at once."""
    grid = np.arange(SIZE, dtype=np.float32)
    dy = grid[None, :, None] - centre[:, 0, None, None]
    dx = grid[None, None, :] - centre[:, 1, None, None]
    out = np.zeros((len(shape), SIZE, SIZE), dtype=bool)
    for s, mask in enumerate(SHAPE_MASKS):
        sel = shape == s
        if sel.any():
            out[sel] = mask(dy[sel], dx[sel], radius[sel, None, None])
    return out


def texture_patterns() -> np.ndarray:
    """``bool [4, 64, 64]``: where each texture shows its shade (plain: nowhere; diagonal
    stripes 3 px wide; 8 px checks; dots of radius ~2.2 on an 8 px grid)."""
    y, x = np.mgrid[:SIZE, :SIZE]
    return np.stack([
        np.zeros((SIZE, SIZE), dtype=bool),
        ((x + y) // 3) % 2 == 1,
        ((x // 8) + (y // 8)) % 2 == 1,
        (x % 8 - 3.5) ** 2 + (y % 8 - 3.5) ** 2 <= 5.0,
    ])  # fmt: skip


def shade(colours: np.ndarray) -> np.ndarray:
    """The texture shade of ``uint8 [..., 3]`` colours: 60% of a bright colour (mean > 110),
    else the colour moved 35% of the way to white."""
    c = colours.astype(np.float32)
    bright = c.mean(-1, keepdims=True) > 110
    return np.where(bright, 0.6 * c, c + 0.35 * (255 - c)).round().astype(np.uint8)


def render_scenes(
    attributes: np.ndarray, rng: np.random.Generator, chunk: int = 2048, noise: float = 5.0
) -> np.ndarray:
    """``uint8 [n, 3, 64, 64]`` images of ``attributes`` (see :func:`sample_attributes`): the
    textured background, the second object, the main object on top, Gaussian pixel noise
    (std ``noise``). Centre jitter, radius jitter and noise come from ``rng``."""
    n = len(attributes)
    palette = np.array(list(COLOURS.values()), dtype=np.uint8)
    patterns = texture_patterns()
    jitter = rng.integers(-JITTER, JITTER + 1, (n, 2, 2)).astype(np.float32)
    grow = rng.integers(0, 2, (n, 2)).astype(np.float32)
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for lo in range(0, n, chunk):
        a = attributes[lo : lo + chunk]
        bg = palette[a[:, 9]][:, None, None]
        img = np.where(patterns[a[:, 10]][..., None], shade(bg), bg)
        for slot in (1, 0):  # second object first, so the main one is drawn on top
            shape, colour, size, pos = (a[:, 1 + 4 * slot + j] for j in range(4))
            present = shape >= 0
            centre = CENTRES[pos[present]] + jitter[lo : lo + chunk][present, slot]
            radius = RADII[size[present]] + grow[lo : lo + chunk][present, slot]
            mask = shape_masks(shape[present], centre, radius)
            img[present] = np.where(mask[..., None], palette[colour[present]][:, None, None], img[present])
        noisy = img.astype(np.float32) + noise * rng.standard_normal(img.shape, dtype=np.float32)
        out[lo : lo + chunk] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out.transpose(0, 3, 1, 2).copy()


# --------------------------------------------------------------------------------------------
# captions


def _pick(options: tuple[str, ...], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def write_caption(attrs: np.ndarray, choice: np.ndarray) -> str:
    """The caption of one scene: ``attrs`` (one row of :func:`sample_attributes`) worded by the
    uniform numbers ``choice`` ``[10]`` in [0, 1) (caption, object and background form, join,
    and the synonyms of each size, position and texture)."""
    form, obj_form, bg_form, join = (choice[i] for i in range(4))
    objects = []
    for slot in range(int(attrs[0])):
        shape, colour, size, pos = (int(attrs[1 + 4 * slot + j]) for j in range(4))
        objects.append(_pick(OBJECT_FORMS, obj_form).format(
            size=_pick(SIZE_WORDS[SIZES[size]], choice[4 + slot]),
            colour=COLOUR_NAMES[colour],
            shape=SHAPES[shape],
            position=_pick(POSITION_WORDS[POSITIONS[pos]], choice[6 + slot]),
        ))  # fmt: skip
    texture = _pick(TEXTURE_WORDS[TEXTURES[int(attrs[10])]], choice[8])
    background = COLOUR_NAMES[int(attrs[9])]
    return _pick(CAPTION_FORMS, form).format(
        objects=_pick(OBJECT_JOINS, join).join(objects),
        background_phrase=_pick(BACKGROUND_FORMS, bg_form).format(texture=texture, background=background),
        texture=texture,
        background=background,
    )


def write_captions(attributes: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One caption per row of ``attributes``, wording drawn from ``rng``."""
    choices = rng.random((len(attributes), 10))
    return [write_caption(a, c) for a, c in zip(attributes, choices, strict=True)]


def _lookup(table: dict[str, tuple[str, ...]], names: tuple[str, ...]) -> dict[str, int]:
    return {word.split()[-1]: names.index(key) for key, words in table.items() for word in words}


_SIZE_OF = _lookup(SIZE_WORDS, SIZES)
_POSITION_OF = _lookup(POSITION_WORDS, POSITIONS)
_TEXTURE_OF = _lookup(TEXTURE_WORDS, TEXTURES)


def parse_caption(text: str) -> dict[str, int]:
    """Read the attributes back from a caption (``-1`` for what it does not state).

    Keyword rules, independent of the templates: the texture word is followed by the background
    colour; the other colour, shape, size and position words belong to the objects in order of
    mention. Also scores generated captions (e.g. the shape of the main object).
    """
    words = tokenize(text)
    out = dict.fromkeys(ATTRIBUTE_NAMES, -1)
    colours, shapes, sizes, positions = [], [], [], []
    skip = -1
    for i, w in enumerate(words):
        if w in _TEXTURE_OF and out["texture"] < 0:
            out["texture"] = _TEXTURE_OF[w]
            if i + 1 < len(words) and words[i + 1] in COLOURS:
                out["background"], skip = COLOUR_NAMES.index(words[i + 1]), i + 1
        elif w in COLOURS and i != skip:
            colours.append(COLOUR_NAMES.index(w))
        elif w in SHAPES:
            shapes.append(SHAPES.index(w))
        elif w in _SIZE_OF:
            sizes.append(_SIZE_OF[w])
        elif w in _POSITION_OF:
            positions.append(_POSITION_OF[w])
    out["objects"] = len(shapes)
    for slot, suffix in enumerate(("", "2")):
        for key, found in (("shape", shapes), ("colour", colours), ("size", sizes), ("position", positions)):
            if slot < len(found):
                out[key + suffix] = found[slot]
    return out


def parse_captions(texts: list[str]) -> Tensor:
    """:func:`parse_caption` of each text as ``int64 [N, 11]`` (columns :data:`ATTRIBUTE_NAMES`)."""
    parsed = [parse_caption(text) for text in texts]
    return torch.tensor([[row[name] for name in ATTRIBUTE_NAMES] for row in parsed], dtype=torch.int64).reshape(
        len(texts), len(ATTRIBUTE_NAMES)
    )


def generate_scenes(n: int, entropy: list[int]) -> dict[str, Tensor]:
    """``n`` captioned scenes: ``image uint8 [n, 3, 64, 64]``, ``caption int64 [n, 32]``,
    ``labels int64 [n]`` (main shape), ``attributes int64 [n, 11]``. Two streams spawned from
    ``SeedSequence(entropy)``: scene (attributes, jitter, noise) and wording."""
    scene, wording = (np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(2))
    attributes = sample_attributes(n, scene)
    images = render_scenes(attributes, scene)
    captions = [tokenize(c) for c in write_captions(attributes, wording)]
    return {
        "image": torch.from_numpy(images),
        "caption": SCENE_VOCABULARY.encode(captions, CAPTION_LENGTH),
        "labels": torch.from_numpy(attributes[:, 1].copy()),
        "attributes": torch.from_numpy(attributes),
    }


# --------------------------------------------------------------------------------------------
# the dataset


def caption_modalities(vocab_size: int, length: int = CAPTION_LENGTH) -> list[ModalitySpec]:
    """``image`` (3x64x64) and ``caption`` (``length`` token ids) modality specs."""
    return [
        ModalitySpec("image", "image", IMAGE_SHAPE),
        ModalitySpec("caption", "tokens", (length,), vocab_size),
    ]


def scenes_dataset(tensors: dict[str, Tensor], name: str) -> MultimodalDataset:
    """The dataset of :func:`generate_scenes` ``tensors``: image, caption (decoded by
    :data:`SCENE_VOCABULARY` in grids), ``labels`` and the 11 ``attributes``."""
    specs = caption_modalities(len(SCENE_VOCABULARY))
    return MultimodalDataset(
        {s.name: tensors[s.name] for s in specs},
        specs,
        tensors["labels"],
        name=name,
        attributes=tensors["attributes"],
        attribute_names=ATTRIBUTE_NAMES,
        text_decoders={"caption": SCENE_VOCABULARY.decode},
        attribute_parsers={"caption": parse_captions},
    )


@dataclass(frozen=True)
class Scenes:
    """The captioned-scenes provider. ``params``: ``num_train``/``num_test`` (examples generated
    per split; ``DataConfig.train_size``/``test_size`` then take a prefix)."""

    name: str = "scenes"
    summary: str = (
        "64x64 RGB scenes of 1-2 coloured shapes + a 32-word caption stating their attributes "
        "(offline stand-in for CUB and CelebA)"
    )

    @property
    def params(self) -> dict[str, Any]:
        return {"num_train": 20000, "num_test": 2000}

    def modality_specs(self) -> list[ModalitySpec]:
        return caption_modalities(len(SCENE_VOCABULARY))

    def load(self, cfg: DataConfig, split: str) -> MultimodalDataset:
        if cfg.root:
            raise ConfigError(
                f"dataset 'scenes' is generated offline and reads no files; data.root={cfg.root!r} "
                "must be unset (use dataset 'cub' or 'celeba' for real files)"
            )
        return scenes_dataset(self.tensors(cfg, split), f"{self.name}/{split}")

    def tensors(self, cfg: DataConfig, split: str) -> dict[str, Tensor]:
        """The generated ``split`` (see :func:`generate_scenes`), from the cache when built."""
        return cached_build(
            f"{self.name}-{split}",
            self.cache_spec(cfg, split),
            lambda: generate_scenes(self._count(cfg, split), [cfg.seed, SPLITS.index(split)]),
            cfg.data_dir,
        )

    def cache_spec(self, cfg: DataConfig, split: str) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "version": GENERATOR_VERSION,
            "seed": cfg.seed,
            "split": split,
            "count": self._count(cfg, split),
            "vocabulary": len(SCENE_VOCABULARY),
        }

    def info(self, cfg: DataConfig) -> dict[str, Any]:
        info: dict[str, Any] = {
            "modalities": [asdict(s) for s in self.modality_specs()],
            "source": "generated procedurally (numpy), no files needed",
            "attributes": {k: list(v) for k, v in ATTRIBUTE_VALUES.items()},
            "splits": {},
        }
        for split in SPLITS:
            info["splits"][split] = cache_info(f"{self.name}-{split}", partial(self.cache_spec, cfg, split), cfg.data_dir)
        return info

    def _count(self, cfg: DataConfig, split: str) -> int:
        key = f"num_{split}"
        value = cfg.params[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"data.params.{key}={value!r}; expected a positive integer")
        return value


# --------------------------------------------------------------------------------------------
# the stand-in for datasets of real files (cub, celeba)

#: The stand-in's ``data.params`` (the datasets that use it add these to their own).
STANDIN_PARAMS: dict[str, Any] = Scenes().params


@cache
def standin_notice(dataset: str) -> None:
    """Warn (once per process and dataset) that ``dataset`` is served by the scenes stand-in."""
    log.warning(
        "dataset %r: data.root is not set, so the real files are not read; using the offline "
        "captioned-scenes stand-in in %s form (see `crmvae data info %s`; set data.root for the real data)",
        dataset, dataset, dataset,
    )  # fmt: skip


def standin_config(cfg: DataConfig) -> DataConfig:
    """``cfg`` (of a dataset without ``data.root``) as the ``scenes`` config it stands on: the
    same seed and data directory, params ``num_train``/``num_test``, so the cache is shared."""
    params = {key: cfg.params.get(key, default) for key, default in STANDIN_PARAMS.items()}
    return replace(cfg, dataset=Scenes.name, root=None, params=params)


def standin_scenes(cfg: DataConfig, split: str) -> dict[str, Tensor]:
    """The scenes standing in for ``cfg.dataset`` (see :func:`generate_scenes`), after the notice."""
    standin_notice(cfg.dataset)
    return Scenes().tensors(standin_config(cfg), split)


def standin_info(cfg: DataConfig, modalities: Sequence[ModalitySpec], source: str, **extra: Any) -> dict[str, Any]:
    """:meth:`Scenes.info` of the stand-in for ``cfg.dataset`` with its own ``modalities``,
    ``source`` line and ``extra`` entries."""
    info = Scenes().info(standin_config(cfg))
    return {**info, "modalities": [asdict(m) for m in modalities], "source": source, **extra}
