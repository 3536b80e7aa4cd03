"""The MNIST-SVHN-Text networks of Sutter et al. (2020): ``mnist_mlp``, ``svhn_conv``, ``text_conv``.

Image decoders output the location of a Laplace/Normal likelihood (MNIST through a Sigmoid, as
in the reference; SVHN unbounded, as in the reference) or, with ``likelihood: bernoulli``,
logits (no Sigmoid). The text decoder outputs categorical logits ``[B, 8, 71]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModalityConfig
from ..data.text import VOCAB_SIZE
from ..errors import ConfigError
from . import register_network
from .layers import WholeInputConv2d, WholeOutputConvTranspose2d, relu
from .polymnist import GaussianHead

MNIST_SHAPE = [1, 28, 28]
SVHN_SHAPE = [3, 32, 32]
TEXT_LENGTH = 8
HIDDEN = 400
FEATURES = 128


class MNISTEncoder(nn.Module):
    """Flatten(784) Linear(784,400) ReLU, then Linear(400, D) for mu and for logvar."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(784, HIDDEN), relu())
        self.head = GaussianHead(HIDDEN, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.features(x))


class MNISTDecoder(nn.Module):
    """Linear(D,400) ReLU Linear(400,784) [Sigmoid] Unflatten(1,28,28)."""

    def __init__(self, latent_dim: int, sigmoid: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, HIDDEN), relu(),
            nn.Linear(HIDDEN, 784), *([nn.Sigmoid()] if sigmoid else []),
            nn.Unflatten(1, tuple(MNIST_SHAPE)),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class SVHNEncoder(nn.Module):
    """Conv(3,32,4,2,1) Conv(32,64,4,2,1) Conv(64,64,4,2,1) Conv(64,128,4,2,0), ReLU after each
    (32 -> 16 -> 8 -> 4 -> 1), Flatten(128), then Linear(128, D) for mu and for logvar."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2, 1), relu(),
            nn.Conv2d(32, 64, 4, 2, 1), relu(),
            nn.Conv2d(64, 64, 4, 2, 1), relu(),
            WholeInputConv2d(64, FEATURES, 4, 2, 0), relu(),  # 4x4 -> 1x1: a matmul
            nn.Flatten(),
        )  # fmt: skip
        self.head = GaussianHead(FEATURES, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.features(x))


class SVHNDecoder(nn.Module):
    """Linear(D,128) Unflatten(128,1,1) ReLU ConvT(128,64,4,1,0) ReLU ConvT(64,64,4,2,1) ReLU
    ConvT(64,32,4,2,1) ReLU ConvT(32,3,4,2,1) (1 -> 4 -> 8 -> 16 -> 32)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, FEATURES), nn.Unflatten(1, (FEATURES, 1, 1)), relu(),
            WholeOutputConvTranspose2d(FEATURES, 64, 4, 1, 0), relu(),  # 1x1 -> 4x4: a matmul
            nn.ConvTranspose2d(64, 64, 4, 2, 1), relu(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), relu(),
            nn.ConvTranspose2d(32, 3, 4, 2, 1),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class TextEncoder(nn.Module):
    """One-hot ``[B, 8, 71]`` (token ids ``[B, 8]`` are one-hot encoded first), as ``[B, 71, 8]``:
    Conv1d(71,128,1) ReLU Conv1d(128,128,4,2,1) ReLU Conv1d(128,128,4,2,0) ReLU (8 -> 4 -> 1),
    Flatten(128), then Linear(128, D) for mu and for logvar."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(VOCAB_SIZE, FEATURES, 1), relu(),
            nn.Conv1d(FEATURES, FEATURES, 4, 2, 1), relu(),
            nn.Conv1d(FEATURES, FEATURES, 4, 2, 0), relu(),
            nn.Flatten(),
        )  # fmt: skip
        self.head = GaussianHead(FEATURES, latent_dim)

    def forward(self, text: Tensor) -> tuple[Tensor, Tensor]:
        one_hot = text if text.is_floating_point() else F.one_hot(text, VOCAB_SIZE).float()
        return self.head(self.features(one_hot.transpose(1, 2)))


class TextDecoder(nn.Module):
    """Linear(D,128) Unflatten(128,1) ConvT1d(128,128,4,1,0) ReLU ConvT1d(128,128,4,2,1) ReLU
    Conv1d(128,71,1) (1 -> 4 -> 8): logits ``[B, 8, 71]``."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, FEATURES), nn.Unflatten(1, (FEATURES, 1)),
            nn.ConvTranspose1d(FEATURES, FEATURES, 4, 1, 0), relu(),
            nn.ConvTranspose1d(FEATURES, FEATURES, 4, 2, 1), relu(),
            nn.Conv1d(FEATURES, VOCAB_SIZE, 1),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).transpose(1, 2)


def _check(modality: ModalityConfig, network: str, shape: list[int], likelihoods: tuple[str, ...]) -> None:
    if list(modality.shape) != shape:
        raise ConfigError(
            f"modality {modality.name!r}: network {network!r} takes shape {shape}, got {list(modality.shape)}"
        )
    if modality.likelihood not in likelihoods:
        raise ConfigError(
            f"modality {modality.name!r}: network {network!r} supports the likelihoods {list(likelihoods)}, "
            f"got {modality.likelihood!r}"
        )


IMAGE_LIKELIHOODS = ("laplace", "normal", "bernoulli")


@register_network("mnist_mlp")
def mnist_mlp(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    _check(modality, "mnist_mlp", MNIST_SHAPE, IMAGE_LIKELIHOODS)
    return MNISTEncoder(latent_dim), MNISTDecoder(latent_dim, sigmoid=modality.likelihood != "bernoulli")


@register_network("svhn_conv")
def svhn_conv(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    _check(modality, "svhn_conv", SVHN_SHAPE, IMAGE_LIKELIHOODS)
    return SVHNEncoder(latent_dim), SVHNDecoder(latent_dim)


@register_network("text_conv")
def text_conv(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    _check(modality, "text_conv", [TEXT_LENGTH], ("categorical",))
    if modality.vocab_size not in (None, VOCAB_SIZE):
        raise ConfigError(
            f"modality {modality.name!r}: network 'text_conv' uses the {VOCAB_SIZE}-symbol alphabet, "
            f"got vocab_size={modality.vocab_size}"
        )
    return TextEncoder(latent_dim), TextDecoder(latent_dim)
