"""Conv encoder/decoder for token sequences (word captions, character text).

The encoder embeds ids ``[B, L]`` (128-d), then stride-2 Conv1d layers (kernel 4, padding 1)
halve the length until it is 4 (32 -> 16 -> 8 -> 4 for captions, 256 -> ... -> 4 for CelebA
text), channels 128 then 256. The decoder mirrors it with ConvTranspose1d layers and a final
Conv1d(128, V, 1): logits ``[B, L, V]`` of a categorical likelihood.

``caption_conv_norm`` adds ``GroupNorm(1, C)`` (each example's feature map normalised over its
channels and positions, then a per-channel affine) after every hidden (transposed) convolution,
as the reference CelebA text networks normalise theirs (Sutter et al. 2020 use BatchNorm; a
per-example norm does not mix examples, so absent modalities' rows and DDP shards cannot leak
into one another). Without it the six-stage stack on CelebA's 256-character text diverges at
lr 1e-3: within a few Adam steps the encoder's means and log-variances grow until ``exp``
overflows and every loss term is NaN.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ModalityConfig
from ..errors import ConfigError
from . import register_network
from .layers import relu
from .polymnist import GaussianHead

EMBEDDING = 128
BOTTOM = 4  # sequence length after the last downsampling


def downsamplings(length: int) -> int:
    """How many halvings take ``length`` to :data:`BOTTOM`; ``length = 4 * 2^k`` is required."""
    k, rest = 0, length
    while rest > BOTTOM and rest % 2 == 0:
        rest //= 2
        k += 1
    if rest != BOTTOM or k == 0:
        raise ValueError(f"sequence length must be 4 * 2^k with k >= 1 (8, 16, 32, ...), got {length}")
    return k


def _widths(k: int) -> list[int]:
    """Channels after each of the ``k`` stages: 128 for the first, 256 after."""
    return [EMBEDDING] + [256] * (k - 1)


def _stage(conv: nn.Module, channels: int, normalize: bool) -> list[nn.Module]:
    """``conv`` [GroupNorm(1, channels)] ReLU."""
    return [conv, *([nn.GroupNorm(1, channels)] if normalize else []), relu()]


class SequenceEncoder(nn.Module):
    """Embedding(V,128), then per stage Conv1d(c_in,c_out,4,2,1) [GroupNorm] ReLU, Flatten(256*4
    or 128*4) Linear(.,512) ReLU, then Linear(512, D) for mu and for logvar."""

    def __init__(self, vocab_size: int, length: int, latent_dim: int, normalize: bool = False) -> None:
        super().__init__()
        widths = _widths(downsamplings(length))
        self.embed = nn.Embedding(vocab_size, EMBEDDING)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([EMBEDDING, *widths[:-1]], widths, strict=True):
            layers += _stage(nn.Conv1d(c_in, c_out, 4, 2, 1), c_out, normalize)
        self.features = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(widths[-1] * BOTTOM, 512), relu()
        )
        self.head = GaussianHead(512, latent_dim)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        h = self.embed(tokens).transpose(1, 2)  # [B, 128, L]
        return self.head(self.features(h))


class SequenceDecoder(nn.Module):
    """Linear(D, c*4) ReLU Unflatten(c,4), per stage ConvTranspose1d(c_in,c_out,4,2,1) [GroupNorm]
    ReLU, Conv1d(128,V,1): logits ``[B, L, V]``."""

    def __init__(self, vocab_size: int, length: int, latent_dim: int, normalize: bool = False) -> None:
        super().__init__()
        widths = _widths(downsamplings(length))[::-1]
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, widths[0] * BOTTOM), relu(), nn.Unflatten(1, (widths[0], BOTTOM)),
        ]  # fmt: skip
        for c_in, c_out in zip(widths, [*widths[1:], EMBEDDING], strict=True):
            layers += _stage(nn.ConvTranspose1d(c_in, c_out, 4, 2, 1), c_out, normalize)
        self.net = nn.Sequential(*layers, nn.Conv1d(EMBEDDING, vocab_size, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).transpose(1, 2)


def _sequence_networks(modality: ModalityConfig, latent_dim: int, normalize: bool) -> tuple[nn.Module, nn.Module]:
    network = "caption_conv_norm" if normalize else "caption_conv"
    where = f"modality {modality.name!r}: network {network!r}"
    if len(modality.shape) != 1:
        raise ConfigError(f"{where} takes token sequences of shape [L], got {list(modality.shape)}")
    if modality.vocab_size is None or modality.vocab_size < 2:
        raise ConfigError(f"{where} needs vocab_size >= 2, got {modality.vocab_size}")
    if modality.likelihood != "categorical":
        raise ConfigError(f"{where} outputs logits: likelihood must be 'categorical', got {modality.likelihood!r}")
    try:
        downsamplings(modality.shape[0])
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    length, vocab = modality.shape[0], modality.vocab_size
    return (
        SequenceEncoder(vocab, length, latent_dim, normalize),
        SequenceDecoder(vocab, length, latent_dim, normalize),
    )


@register_network("caption_conv")
def caption_conv(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    return _sequence_networks(modality, latent_dim, normalize=False)


@register_network("caption_conv_norm")
def caption_conv_norm(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    return _sequence_networks(modality, latent_dim, normalize=True)
