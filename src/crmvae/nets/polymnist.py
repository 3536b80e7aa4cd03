"""The PolyMNIST networks of Sutter et al. (2021) / Daunhawer et al. (2022), for 3x28x28 images,
and MultiVae's variant of them (for comparisons with MultiVae's figures)."""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ModalityConfig
from ..errors import ConfigError
from . import register_network
from .layers import WholeInputConv2d, relu

SHAPE = [3, 28, 28]


class GaussianHead(nn.Module):
    """Two linear maps from features to ``(mu, logvar)``."""

    def __init__(self, features: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu(h), self.logvar(h)


def conv_features() -> list[nn.Module]:
    """Conv(3,32,3,2,1) ReLU Conv(32,64,3,2,1) ReLU Conv(64,128,3,2,1) ReLU: 3x28x28 -> 128x4x4."""
    return [
        nn.Conv2d(3, 32, 3, 2, 1), relu(),
        nn.Conv2d(32, 64, 3, 2, 1), relu(),
        nn.Conv2d(64, 128, 3, 2, 1), relu(),
    ]  # fmt: skip


class PolyMNISTEncoder(nn.Module):
    """Conv(3,32,3,2,1) ReLU Conv(32,64,3,2,1) ReLU Conv(64,128,3,2,1) ReLU Flatten
    Linear(2048,512) ReLU, then Linear(512, D) for mu and for logvar."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*conv_features(), nn.Flatten(), nn.Linear(2048, 512), relu())
        self.head = GaussianHead(512, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.features(x))


class PolyMNISTDecoder(nn.Module):
    """Linear(D,2048) ReLU Unflatten(128,4,4) ConvT(128,64,3,2,1) ReLU ConvT(64,32,3,2,1,op=1)
    ReLU ConvT(32,3,3,2,1,op=1): the Laplace location of a 3x28x28 image."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2048), relu(),
            nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, 3, 2, 1), relu(),
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), relu(),
            nn.ConvTranspose2d(32, 3, 3, 2, 1, output_padding=1),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MultiVaePolyMNISTEncoder(nn.Module):
    """MultiVae's ``EncoderConvMMNIST_adapted``: the three strided convs of
    :class:`PolyMNISTEncoder` (ReLU after each), then ``Conv2d(128, D, 4, 2, 0)`` over the 4x4
    features for mu and for logvar (computed as :class:`WholeInputConv2d`); no hidden linear layer."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*conv_features())
        self.mu = WholeInputConv2d(128, latent_dim, 4, 2, 0)
        self.logvar = WholeInputConv2d(128, latent_dim, 4, 2, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h).flatten(1), self.logvar(h).flatten(1)


def _check_shape(modality: ModalityConfig, network: str) -> None:
    if list(modality.shape) != SHAPE:
        raise ConfigError(
            f"modality {modality.name!r}: network {network!r} takes shape {SHAPE}, got {list(modality.shape)}"
        )


@register_network("polymnist_conv")
def polymnist_conv(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    _check_shape(modality, "polymnist_conv")
    return PolyMNISTEncoder(latent_dim), PolyMNISTDecoder(latent_dim)


@register_network("polymnist_multivae")
def polymnist_multivae(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """MultiVae's PolyMNIST networks: :class:`MultiVaePolyMNISTEncoder` and ``DecoderConvMMNIST``
    (= :class:`PolyMNISTDecoder`)."""
    _check_shape(modality, "polymnist_multivae")
    return MultiVaePolyMNISTEncoder(latent_dim), PolyMNISTDecoder(latent_dim)
