"""Decoder likelihoods ``p(x | z)``: log-densities summed over each example's dimensions.

A decoder outputs distribution parameters ``params`` for ``K`` stacked latent samples of a batch:
shape ``[K, B, *event]``. ``log_prob(params, x)`` broadcasts the data ``x`` ``[B, *event]`` over
``K`` and returns ``[K, B]``, so one decoder call can serve several latent samples.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .distributions import standard_normal_like
from .errors import ConfigError
from .registry import Registry


def _sum_event(x: Tensor) -> Tensor:
    """Sum everything after the leading ``[K, B]`` dimensions without copying (``flatten`` copies
    a channels-last image batch first; ``sum(dim=())`` would sum everything)."""
    return x.sum(dim=tuple(range(2, x.ndim))) if x.ndim > 2 else x


class Likelihood(ABC):
    """A family of decoder distributions."""

    name: str

    @abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x | params)`` summed over the event, ``[K, B]``."""

    @abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """The distribution's mean (images) or mode (tokens): what generation returns."""

    @abstractmethod
    def sample(self, params: Tensor) -> Tensor:
        """One sample from the distribution."""


LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")
_L = TypeVar("_L", bound=type[Likelihood])


def _registered(cls: _L) -> _L:
    """Class decorator adding a likelihood to :data:`LIKELIHOODS` under its ``name``."""
    LIKELIHOODS.add(cls.name, cls)
    return cls


@_registered
class Laplace(Likelihood):
    """Laplace with location ``params`` and fixed scale ``s``:
    ``log p(x) = sum(-|x - loc| / s - log(2 s))``."""

    name = "laplace"

    def __init__(self, scale: float = 0.75) -> None:
        self.scale = scale

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        dist = (x.unsqueeze(0) - params.float()).abs()
        n = x[0].numel()
        return -_sum_event(dist) / self.scale - n * math.log(2.0 * self.scale)

    def mean(self, params: Tensor) -> Tensor:
        return params.float()

    def sample(self, params: Tensor) -> Tensor:
        return torch.distributions.Laplace(params.float(), self.scale).sample()


@_registered
class Normal(Likelihood):
    """Normal with mean ``params`` and fixed standard deviation ``s``:
    ``log p(x) = sum(-(x - mu)^2 / (2 s^2) - log s - log(2 pi) / 2)``."""

    name = "normal"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        sq = (x.unsqueeze(0) - params.float()).square()
        n = x[0].numel()
        return -_sum_event(sq) / (2 * self.scale**2) - n * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))

    def mean(self, params: Tensor) -> Tensor:
        return params.float()

    def sample(self, params: Tensor) -> Tensor:
        mean = params.float()
        return mean + self.scale * standard_normal_like(mean)


@_registered
class Bernoulli(Likelihood):
    """Bernoulli with logits ``params``: ``log p(x) = sum(x * l - softplus(l))`` for x in [0, 1]."""

    name = "bernoulli"

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params.float()
        return _sum_event(x.unsqueeze(0) * logits - F.softplus(logits))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params.float())

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params.float()))


@_registered
class Categorical(Likelihood):
    """Categorical over a vocabulary with logits ``params`` ``[K, B, L, V]`` and token ids
    ``x`` ``[B, L]``: ``log p(x) = sum_l log_softmax(params)[l, x_l]``."""

    name = "categorical"

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_p = torch.log_softmax(params.float(), dim=-1)
        index = x.unsqueeze(0).expand(log_p.shape[:-1]).unsqueeze(-1)
        return _sum_event(log_p.gather(-1, index).squeeze(-1))

    def mean(self, params: Tensor) -> Tensor:
        return params.argmax(-1)

    def sample(self, params: Tensor) -> Tensor:
        return torch.distributions.Categorical(logits=params.float()).sample()


def build_likelihood(name: str, scale: float = 0.75) -> Likelihood:
    """The likelihood called ``name``; ``scale`` is used by the location-scale families."""
    cls = LIKELIHOODS.lookup(name)
    if cls in (Laplace, Normal):
        if scale <= 0:
            raise ConfigError(f"likelihood {name!r}: scale must be positive, got {scale}")
        return cls(scale)
    return cls()
