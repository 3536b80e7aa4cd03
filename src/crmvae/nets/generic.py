"""Generic networks for data of any size: images ``[C, H, W]``, vectors ``[*shape]``, tokens ``[L]``.

Convolutional stacks halve each spatial size (``h -> ceil(h / 2)``, Conv(3, 2, 1)) while the
smallest side is above :data:`MIN_SIZE`, at most :data:`MAX_DOWNSAMPLINGS` times; the decoder
mirrors them with transposed convolutions whose ``output_padding = h - 2 * ceil(h / 2) + 1``
restores every size exactly, so any ``H x W`` (or length ``L``) round-trips.

- ``generic_conv`` (images): convs with widths 32, 64, 128, 256, 256, then Linear(HIDDEN); the
  decoder outputs a location ``[C, H, W]`` (Laplace/Normal/Bernoulli parameters).
- ``generic_mlp`` (vectors): two hidden layers of HIDDEN units each way; outputs ``[*shape]``.
- ``generic_tokens`` (token ids in ``[0, V)``): Embedding(V, EMBED) then the 1-D conv stack; the
  decoder outputs logits ``[L, V]`` (categorical likelihood).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import Tensor, nn

from ..config import ModalityConfig
from ..errors import ConfigError
from . import register_network
from .layers import relu
from .polymnist import GaussianHead

HIDDEN = 512
EMBED = 64
MIN_SIZE = 4
MAX_DOWNSAMPLINGS = 5
WIDTHS = (32, 64, 128, 256, 256)


def downsampled_sizes(size: Sequence[int]) -> list[tuple[int, ...]]:
    """The spatial sizes through the encoder's stride-2 stack, input first:
    ``s_{i+1} = ceil(s_i / 2)`` while ``min(s_i) > MIN_SIZE`` (at most ``MAX_DOWNSAMPLINGS`` steps)."""
    sizes = [tuple(size)]
    while min(sizes[-1]) > MIN_SIZE and len(sizes) <= MAX_DOWNSAMPLINGS:
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    return sizes


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv1d if dims == 1 else nn.Conv2d


def _conv_transpose(dims: int) -> type[nn.Module]:
    return nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d


class ConvEncoder(nn.Module):
    """``[B, C, *size]`` -> stride-2 convs (ReLU) -> Flatten -> Linear(HIDDEN) ReLU -> ``(mu, logvar)``."""

    def __init__(self, channels: int, size: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        sizes = downsampled_sizes(size)
        widths = [channels, *WIDTHS[: len(sizes) - 1]]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [_conv(len(size))(c_in, c_out, 3, 2, 1), relu()]
        features = widths[-1] * math.prod(sizes[-1])
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(features, HIDDEN), relu())
        self.head = GaussianHead(HIDDEN, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """``[N, D]`` -> Linear -> Unflatten -> (ReLU, stride-2 transposed conv) per encoder conv ->
    ``[N, channels, *size]``: the mirror of :class:`ConvEncoder`."""

    def __init__(self, channels: int, size: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        sizes = downsampled_sizes(size)
        widths = [channels, *WIDTHS[: len(sizes) - 1]]
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, widths[-1] * math.prod(sizes[-1])), nn.Unflatten(1, (widths[-1], *sizes[-1]))
        ]
        for i in range(len(sizes) - 1, 0, -1):
            padding = tuple(big - 2 * small + 1 for big, small in zip(sizes[i - 1], sizes[i]))
            layers += [relu(), _conv_transpose(len(size))(widths[i], widths[i - 1], 3, 2, 1, output_padding=padding)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class TokenEncoder(nn.Module):
    """Token ids ``[B, L]`` -> Embedding(V, EMBED) -> ``[B, EMBED, L]`` -> :class:`ConvEncoder`."""

    def __init__(self, vocab_size: int, length: int, latent_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, EMBED)
        self.conv = ConvEncoder(EMBED, [length], latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv(self.embed(x).transpose(1, 2))


class TokenDecoder(nn.Module):
    """``[N, D]`` -> :class:`ConvDecoder` with V output channels -> logits ``[N, L, V]``."""

    def __init__(self, vocab_size: int, length: int, latent_dim: int) -> None:
        super().__init__()
        self.conv = ConvDecoder(vocab_size, [length], latent_dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(z).transpose(1, 2)


class MLPEncoder(nn.Module):
    """Flatten -> Linear(HIDDEN) ReLU -> Linear(HIDDEN) ReLU -> ``(mu, logvar)``."""

    def __init__(self, shape: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(shape), HIDDEN), relu(), nn.Linear(HIDDEN, HIDDEN), relu()
        )
        self.head = GaussianHead(HIDDEN, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.features(x))


class MLPDecoder(nn.Module):
    """Linear(HIDDEN) ReLU -> Linear(HIDDEN) ReLU -> Linear(prod(shape)) -> ``[N, *shape]``."""

    def __init__(self, shape: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, HIDDEN), relu(), nn.Linear(HIDDEN, HIDDEN), relu(),
            nn.Linear(HIDDEN, math.prod(shape)), nn.Unflatten(1, tuple(shape)),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def _check_shape(modality: ModalityConfig, network: str, rank: int, what: str) -> None:
    shape = list(modality.shape)
    if len(shape) != rank or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"modality {modality.name!r}: network {network!r} takes shape {what}, got {shape}")


@register_network("generic_conv")
def generic_conv(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    _check_shape(modality, "generic_conv", 3, "[C, H, W]")
    channels, *size = modality.shape
    return ConvEncoder(channels, size, latent_dim), ConvDecoder(channels, size, latent_dim)


@register_network("generic_mlp")
def generic_mlp(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    if not modality.shape or any(s < 1 for s in modality.shape):
        raise ConfigError(f"modality {modality.name!r}: network 'generic_mlp' takes a non-empty shape, got {modality.shape}")
    return MLPEncoder(modality.shape, latent_dim), MLPDecoder(modality.shape, latent_dim)


@register_network("generic_tokens")
def generic_tokens(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    _check_shape(modality, "generic_tokens", 1, "[L]")
    if modality.vocab_size is None or modality.vocab_size < 2:
        raise ConfigError(
            f"modality {modality.name!r}: network 'generic_tokens' needs vocab_size >= 2, got {modality.vocab_size}"
        )
    (length,) = modality.shape
    return TokenEncoder(modality.vocab_size, length, latent_dim), TokenDecoder(modality.vocab_size, length, latent_dim)
