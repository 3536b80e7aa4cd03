"""Fitted latent samplers, saved once per (model weights, sampler settings, dataset) and reused.

A sampler fitted to the aggregate posterior (``gmm``, ``maf``) costs a pass of the encoders over
``fit_size`` training examples and a fit (EM, or gradient steps). :func:`load_or_fit_sampler`
saves it beside the dataset cache as ``sampler-<dataset>-<key>.pt``, where ``key`` hashes the model's weights
(:func:`model_digest`), the :class:`SamplerConfig`, the device type and the autocast precision
(the posterior draws depend on both) and the dataset's identity; a later ``evaluate`` or
``generate`` of the same model loads it. A damaged file is logged and fitted again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ..config import DataConfig
from ..data import load_dataset
from ..model import MultimodalVAE
from ..samplers import SAMPLERS, LatentSampler, SamplerConfig, fit_sampler
from .cache import cache_file, read_cached, write_cached

log = logging.getLogger(__name__)


def model_digest(model: nn.Module) -> str:
    """A SHA-256 (16 hex digits) of ``model``'s state: every entry's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        values = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{values.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def load_or_fit_sampler(
    model: MultimodalVAE, data_cfg: DataConfig, config: SamplerConfig, precision: str = "fp32",
) -> LatentSampler:
    """The sampler ``config`` names for ``model``: built directly when it needs no data, else
    loaded from its file (see the module doc) or fitted on ``data_cfg``'s training split and saved."""
    kind = SAMPLERS.lookup(config.name, "sampler.name")
    if not kind.fitted:
        return fit_sampler(model, None, config)
    device = next(model.parameters()).device
    path = cache_file(data_cfg, "sampler", {"sampler": asdict(config), "model": model_digest(model),
                                            "device": device.type, "precision": precision})
    cached = read_cached(path, lambda payload: _restore(kind, payload, model.latent_dim))
    if cached is not None:
        log.info("%s sampler loaded from %s", config.name, path)
        return cached
    sampler = fit_sampler(model, load_dataset(data_cfg, "train"), config)
    write_cached(path, {"name": config.name, "state": sampler.state_dict(), "facts": sampler.describe()})
    log.info("%s sampler fitted and saved to %s", config.name, path)
    return sampler


def _restore(kind: type[LatentSampler], payload: dict[str, Any], latent_dim: int) -> LatentSampler:
    """The saved sampler; a ``ValueError`` (a damaged file) unless it is one over ``latent_dim`` latents."""
    sampler = kind.from_state_dict(payload["state"], payload["facts"])
    drawn = sampler.sample(1, torch.Generator().manual_seed(0))  # not from the caller's random stream
    if drawn.shape != (1, latent_dim):
        raise ValueError(f"it draws latents of shape {tuple(drawn.shape[1:])}, the model has {latent_dim}")
    return sampler
