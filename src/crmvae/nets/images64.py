"""Conv encoder/decoder for 64x64 RGB images (CUB, CelebA, captioned scenes).

Four stride-2 convolutions halve the side 64 -> 32 -> 16 -> 8 -> 4 with channels 32-64-128-256
(kernel 4, padding 1), the style of the PolyMNIST networks one level deeper; the decoder mirrors
them with transposed convolutions and outputs the Laplace location of the image.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ModalityConfig
from ..errors import ConfigError
from . import register_network
from .layers import relu
from .polymnist import GaussianHead

SHAPE = [3, 64, 64]
CHANNELS = (32, 64, 128, 256)
FEATURES = CHANNELS[-1] * 4 * 4


class Image64Encoder(nn.Module):
    """Conv(3,32,4,2,1) ReLU Conv(32,64,4,2,1) ReLU Conv(64,128,4,2,1) ReLU Conv(128,256,4,2,1)
    ReLU Flatten(4096) Linear(4096,512) ReLU, then Linear(512, D) for mu and for logvar."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((3, *CHANNELS[:-1]), CHANNELS, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), relu()]
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(FEATURES, 512), relu())
        self.head = GaussianHead(512, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.features(x))


class Image64Decoder(nn.Module):
    """Linear(D,4096) ReLU Unflatten(256,4,4) ConvT(256,128,4,2,1) ReLU ConvT(128,64,4,2,1) ReLU
    ConvT(64,32,4,2,1) ReLU ConvT(32,3,4,2,1): the Laplace location of a 3x64x64 image."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, FEATURES), relu(), nn.Unflatten(1, (CHANNELS[-1], 4, 4)),
        ]  # fmt: skip
        outs = (*CHANNELS[-2::-1], 3)
        for i, (c_in, c_out) in enumerate(zip(CHANNELS[::-1], outs, strict=True)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))
            if i < len(outs) - 1:
                layers.append(relu())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


@register_network("images64_conv")
def images64_conv(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    if list(modality.shape) != SHAPE:
        raise ConfigError(
            f"modality {modality.name!r}: network 'images64_conv' takes shape {SHAPE}, "
            f"got {list(modality.shape)}"
        )
    return Image64Encoder(latent_dim), Image64Decoder(latent_dim)
