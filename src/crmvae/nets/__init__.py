"""Encoder/decoder networks per modality, found by name.

A network factory takes a :class:`~crmvae.config.ModalityConfig` and the latent size and returns
``(encoder, decoder)``: the encoder maps a batch ``[B, *shape]`` to ``(mu, logvar)`` ``[B, D]``;
the decoder maps ``[N, D]`` to likelihood parameters ``[N, *event]``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import ModalityConfig
from ..registry import Registry

NetworkFactory = Callable[[ModalityConfig, int], tuple[nn.Module, nn.Module]]
NETWORKS: Registry[NetworkFactory] = Registry("network")
#: Decorator adding an encoder/decoder factory to :data:`NETWORKS` under a name.
register_network = NETWORKS.register


def build_networks(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder named by ``modality.network``."""
    return NETWORKS.lookup(modality.network, f"modality {modality.name!r}")(modality, latent_dim)


from . import generic, images64, mnist_svhn_text, polymnist, sequence  # noqa: F401  (registration)
