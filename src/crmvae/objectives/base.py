"""What every objective shares: its inputs, its output, and the registry that names it.

An objective is a pure function ``loss(config, ctx) -> ObjectiveOutput``. ``ctx`` holds the
unimodal Gaussian experts of a batch, the presence mask, and a callback that decodes stacked
latent samples of one modality and scores the batch's data under them. Objectives never touch
networks or data directly.

Loss convention (identical for every objective, so figures are comparable): each term is a
per-example quantity (summed over data and latent dimensions), the loss is
``mean over examples of sum_t coef_t * term_t``; reconstruction terms are negative
log-likelihoods, divergence terms are KLs, so the loss is the negative objective ``-L``.
A modality missing from an example contributes no term and receives no gradient.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..distributions import subset_poe
from ..errors import ConfigError
from ..registry import Registry

Aggregation = Literal["poe", "mixture"]


@dataclass
class ObjectiveContext:
    """Inputs of an objective for one batch.

    Attributes:
        mu: means of the unimodal experts ``q_m(z|x_m)``, ``[M, B, D]`` (zeros where absent).
        logvar: their log-variances, ``[M, B, D]``.
        mask: presence ``[B, M]`` as float 0/1.
        modality_names: the M names, in expert order.
        log_likelihood: ``(m, z [K, B, D]) -> [K, B]``: ``w_m * log p(x_m | z_k)`` for each of the K
            samples, zero where modality m is absent; decodes all K samples in one call.
    """

    mu: Tensor
    logvar: Tensor
    mask: Tensor
    modality_names: list[str]
    log_likelihood: Callable[[int, Tensor], Tensor]

    @property
    def num_modalities(self) -> int:
        return self.mu.shape[0]

    def joint_and_unimodal(self, prior_weight: float) -> tuple[Tensor, Tensor]:
        """PoE posteriors of the full set and of each single modality, ``[1 + M, B, D]``.

        Row 0 is ``q(z|X)``, row ``1 + m`` is ``q(z|x_m)``; one batched PoE for all of them.
        """
        m = self.num_modalities
        rows = torch.cat([torch.ones(1, m), torch.eye(m)]).to(self.mu.device)
        return subset_poe(self.mu, self.logvar, rows, self.mask, prior_weight)


@dataclass
class ObjectiveOutput:
    """The loss to minimise and the per-term batch means for logging (detached)."""

    loss: Tensor
    terms: dict[str, Tensor]


def combine(
    weighted: dict[str, tuple[float, Tensor]], logged: dict[str, Tensor] | None = None
) -> ObjectiveOutput:
    """Loss ``= mean_b sum_t c_t * term_t[b]`` from ``{name: (c_t, term_t [B])}``.

    ``logged`` holds extra per-example diagnostics that are reported but not optimised.
    """
    total = sum(coef * term for coef, term in weighted.values())
    assert isinstance(total, Tensor)
    terms = {name: term.detach().mean() for name, (_, term) in weighted.items()}
    terms.update({name: value.detach().mean() for name, value in (logged or {}).items()})
    return ObjectiveOutput(total.mean(), terms)


@dataclass
class ObjectiveConfig:
    """Fields shared by every objective. ``beta`` multiplies every divergence term."""

    beta: float = 1.0

    #: How the objective infers ``q(z | X_S)`` from a subset: product or mixture of experts.
    aggregation: ClassVar[Aggregation] = "poe"

    @property
    def inference(self) -> Aggregation:
        """Aggregation used by inference and generation from any subset."""
        return self.aggregation

    @property
    def prior_weight(self) -> float:
        """Weight of the prior expert ``N(0, I)`` in inference PoEs (1: included, 0: omitted)."""
        return 1.0 if getattr(self, "prior_expert", True) else 0.0

    def validate(self, num_modalities: int) -> None:
        """Raise :class:`ConfigError` when the settings cannot apply to ``num_modalities``."""
        if not 0 <= self.beta < math.inf:
            raise ConfigError(f"beta must be a number >= 0, got {self.beta}")


LossFn = Callable[[Any, ObjectiveContext], ObjectiveOutput]


@dataclass(frozen=True)
class ObjectiveEntry:
    """A registered objective: its name, settings class, loss function and one-line summary."""

    name: str
    config_cls: type[ObjectiveConfig]
    loss: LossFn
    summary: str


OBJECTIVES: Registry[ObjectiveEntry] = Registry("model/objective")


def register_objective(name: str, config_cls: type[ObjectiveConfig], summary: str) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss function to :data:`OBJECTIVES` under ``name``."""

    def decorate(fn: LossFn) -> LossFn:
        OBJECTIVES.add(name, ObjectiveEntry(name, config_cls, fn, summary))
        return fn

    return decorate


def get_objective(name: str) -> ObjectiveEntry:
    """The registered objective ``name`` (case and ``-``/``_`` do not matter)."""
    key = name.lower().replace("-", "_")
    return OBJECTIVES[key] if key in OBJECTIVES else OBJECTIVES.lookup(name)


def build_objective_config(name: str, params: dict[str, Any], num_modalities: int) -> ObjectiveConfig:
    """Validated settings of objective ``name`` from a plain dict (unknown keys are errors)."""
    from ..config import from_dict  # local import: config does not depend on objectives

    entry = get_objective(name)
    cfg = from_dict(entry.config_cls, params, where=f"objective {entry.name!r}")
    cfg.validate(num_modalities)
    return cfg


def objective_params(cfg: ObjectiveConfig) -> dict[str, Any]:
    """All settings of ``cfg`` as a plain dict (defaults included), for saving next to a run."""
    return dataclasses.asdict(cfg)
