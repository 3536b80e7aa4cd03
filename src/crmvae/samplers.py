"""Latent samplers for unconditional generation: the prior, or a density fitted to the aggregate
posterior after training (ex-post density estimation).

A model is trained against the prior ``p(z) = N(0, I)``, but its decoders have only seen latents
from the posteriors, whose average over the data, the aggregate posterior
``q(z) = (1/N) sum_n q(z | X_n)``, rarely fills the prior: prior samples that fall where no
posterior puts mass decode to incoherent or blurry outputs. Fitting a density to draws from
``q(z)`` and sampling from it instead (Ghosh et al. 2020, *From variational to deterministic
autoencoders*, Sec. 4; the ``GaussianMixtureSampler`` of MultiVae and pythae) improves joint
coherence and unconditional FID without retraining.

A sampler is a :class:`LatentSampler` class registered under a name in :data:`SAMPLERS` and
built by :func:`fit_sampler` from a :class:`SamplerConfig`:

- ``prior``: ``z ~ N(0, I)``, drawn exactly as :meth:`MultimodalVAE.sample` draws it.
- ``gmm``: a Gaussian mixture with ``n_components`` components (full or diagonal covariances)
  fitted by EM (scikit-learn) to one draw ``z ~ q(z | X_n)`` per training example, conditioned
  on every modality the example has.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .config import check_choice, check_minimums
from .data.base import BatchSource
from .distributions import LOG_2PI
from .errors import ConfigError
from .flows import MAF, fit_maf
from .model import MultimodalVAE
from .registry import Registry
from .seeding import private_rng


@dataclass
class SamplerConfig:
    """How unconditional latents are drawn (see the module docstring).

    ``name``: a sampler of :data:`SAMPLERS` (``prior``, ``gmm``, ``maf``). A fitted sampler uses
    ``fit_size`` training examples drawn without replacement with ``seed`` (None: all of them).
    For ``gmm``: ``n_components`` Gaussians with ``covariance`` ``full`` or ``diag``, for at most
    ``max_iter`` EM iterations or until the mean log-likelihood gains less than ``tol``. For
    ``maf``: ``flow_blocks`` MADE blocks of ``flow_layers`` hidden layers of ``flow_hidden`` units
    (pythae's ``MAFSampler`` defaults), trained by Adam with ``flow_lr`` for ``flow_epochs``
    passes in batches of ``flow_batch_size``.
    """

    name: str = "prior"
    n_components: int = 10
    covariance: Literal["full", "diag"] = "full"
    fit_size: int | None = 10_000
    max_iter: int = 200
    tol: float = 1e-3
    seed: int = 0
    flow_blocks: int = 2
    flow_hidden: int = 128
    flow_layers: int = 3
    flow_epochs: int = 50
    flow_lr: float = 1e-3
    flow_batch_size: int = 256

    def __post_init__(self) -> None:
        check_minimums("sampler.", self, {"n_components": 1, "fit_size": 1, "max_iter": 1, "tol": 0.0,
                                          "flow_blocks": 1, "flow_hidden": 1, "flow_layers": 1, "flow_epochs": 1,
                                          "flow_batch_size": 1})
        if not 0 < self.flow_lr < math.inf:
            raise ConfigError(f"sampler.flow_lr must be a positive number, got {self.flow_lr}")
        check_choice("sampler.", self, "covariance")
        SAMPLERS.lookup(self.name, "sampler.name")


# ------------------------------------------------------------------------------ mixture math


def gaussian_mixture_log_prob(z: Tensor, weights: Tensor, means: Tensor, scale_tril: Tensor) -> Tensor:
    """``log sum_k w_k N(z; mu_k, L_k L_k^T)`` for points ``z`` ``[n, D]``; weights ``[K]`` (sum
    1), means ``[K, D]``, lower-triangular Cholesky factors ``[K, D, D]``. Returns ``[n]``.

    Per component: ``log N = -(D log 2 pi + 2 sum_i log L_ii + |L^-1 (z - mu)|^2) / 2``.
    """
    centred = (z[None] - means[:, None]).transpose(1, 2)  # [K, D, n]
    solved = torch.linalg.solve_triangular(scale_tril, centred, upper=False)
    mahalanobis = solved.square().sum(1)  # [K, n]
    log_det = 2.0 * torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)  # [K]
    log_normal = -0.5 * (z.shape[-1] * LOG_2PI + log_det[:, None] + mahalanobis)
    return torch.logsumexp(weights.log()[:, None] + log_normal, dim=0)


def sample_gaussian_mixture(
    n: int, weights: Tensor, means: Tensor, scale_tril: Tensor, generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` draws ``[n, D]`` from the mixture of :func:`gaussian_mixture_log_prob`: component
    ``k ~ Categorical(w)``, then ``z = mu_k + L_k eps`` with ``eps ~ N(0, I)``."""
    component = torch.multinomial(weights, n, replacement=True, generator=generator)
    eps = torch.randn(n, means.shape[1], generator=generator, device=means.device, dtype=means.dtype)
    z = torch.empty_like(eps)
    for k in component.unique().tolist():
        rows = component == k
        z[rows] = means[k] + eps[rows] @ scale_tril[k].T
    return z


# ---------------------------------------------------------------------------------- samplers


class LatentSampler(ABC):
    """Draws latents ``[n, D]`` for unconditional generation.

    A sampler is built by :meth:`build` from a model, the training split (for one fitted to the
    data) and a :class:`SamplerConfig`. A fitted one (``fitted = True``) is saved as
    :meth:`state_dict` plus :meth:`describe`'s facts and restored by :meth:`from_state_dict`.
    """

    name: str
    #: Whether :meth:`build` fits the sampler to the training split (so that it is worth saving).
    fitted: bool = False

    @classmethod
    @abstractmethod
    def build(cls, model: MultimodalVAE, dataset: BatchSource | None, config: SamplerConfig) -> LatentSampler:
        """The sampler for ``model``, fitted on ``dataset`` where it needs data."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None) -> Tensor:
        """``n`` latents on ``device``, from ``generator`` (which lives on that device)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the sampler, for results and reports."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors that define a fitted sampler, for ``torch.save`` (load with ``weights_only=True``)."""
        return {}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], facts: dict[str, Any] | None = None) -> LatentSampler:
        """The fitted sampler saved as ``state`` (and ``facts``, as :meth:`describe` gave them)."""
        raise ConfigError(f"the {cls.name} sampler is not fitted, and has no saved state")


#: Sampler classes by name (``SamplerConfig.name``).
SAMPLERS: Registry[type[LatentSampler]] = Registry("sampler")


@SAMPLERS.register("prior")
class PriorSampler(LatentSampler):
    """``z ~ N(0, I)``, the same draws as :meth:`MultimodalVAE.sample` for the same generator."""

    name = "prior"

    @classmethod
    def build(cls, model: MultimodalVAE, dataset: BatchSource | None, config: SamplerConfig) -> PriorSampler:
        return cls(model.latent_dim)

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = latent_dim

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)


@SAMPLERS.register("gmm")
class GaussianMixtureSampler(LatentSampler):
    """A Gaussian mixture over the latent space: ``weights`` ``[K]``, ``means`` ``[K, D]`` and
    lower-triangular covariance factors ``scale_tril`` ``[K, D, D]`` (diagonal for ``diag``)."""

    name = "gmm"
    fitted = True

    def __init__(self, weights: Tensor, means: Tensor, scale_tril: Tensor, facts: dict[str, Any] | None = None) -> None:
        k, d = means.shape
        if weights.shape != (k,) or scale_tril.shape != (k, d, d):
            raise ConfigError(f"gmm sampler: weights {tuple(weights.shape)}, means {tuple(means.shape)} and "
                              f"scale_tril {tuple(scale_tril.shape)} do not describe one mixture of {k} components")
        self.weights, self.means, self.scale_tril = weights.float(), means.float(), scale_tril.float()
        self.facts = dict(facts or {})
        self._on_device: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    @classmethod
    def build(cls, model: MultimodalVAE, dataset: BatchSource | None, config: SamplerConfig) -> GaussianMixtureSampler:
        """:meth:`fit` to ``config.fit_size`` posterior draws on ``dataset``; the fit time is one of its facts."""
        if dataset is None:
            raise ConfigError("the gmm sampler is fitted on the training split, and none was given")
        start = time.perf_counter()
        sampler = cls.fit(aggregate_posterior_draws(model, dataset, config.fit_size, config.seed), config)
        sampler.facts["fit_seconds"] = round(time.perf_counter() - start, 3)
        return sampler

    @classmethod
    def fit(cls, latents: Tensor, config: SamplerConfig) -> GaussianMixtureSampler:
        """EM fit of ``config.n_components`` Gaussians to ``latents`` ``[n, D]`` (in float64)."""
        from sklearn.mixture import GaussianMixture

        n = latents.shape[0]
        if config.n_components > n:
            raise ConfigError(f"sampler.n_components is {config.n_components}, more than the {n} latents to fit")
        points = latents.double().cpu().numpy()
        if not np.isfinite(points).all():
            raise ConfigError("gmm sampler: the posterior draws to fit hold NaN or inf; the model is broken")
        mixture = GaussianMixture(config.n_components, covariance_type=config.covariance, max_iter=config.max_iter,
                                  tol=config.tol, random_state=config.seed)
        try:
            mixture.fit(points)
        except ValueError as exc:  # a covariance EM cannot factorise: collapsed or duplicated latents
            raise ConfigError(f"gmm sampler: EM failed on {n} posterior draws ({str(exc).splitlines()[0]}); "
                              f"try sampler.covariance=diag or fewer sampler.n_components") from None
        covariances = mixture.covariances_
        scale_tril = (np.linalg.cholesky(covariances) if config.covariance == "full"
                      else np.sqrt(covariances)[:, :, None] * np.eye(points.shape[1]))
        facts = {"n_components": config.n_components, "covariance": config.covariance, "fit_examples": n,
                 "em_iterations": int(mixture.n_iter_), "converged": bool(mixture.converged_),
                 "mean_log_likelihood": float(mixture.score(points))}
        return cls(torch.from_numpy(mixture.weights_), torch.from_numpy(mixture.means_),
                   torch.from_numpy(scale_tril), facts)

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None) -> Tensor:
        device = torch.device(device or "cpu")
        if device not in self._on_device:  # copied once per device, not once per batch
            self._on_device[device] = (self.weights.to(device), self.means.to(device), self.scale_tril.to(device))
        return sample_gaussian_mixture(n, *self._on_device[device], generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """The mixture's log-density at ``z`` ``[n, D]``."""
        return gaussian_mixture_log_prob(z.float(), self.weights.to(z.device), self.means.to(z.device),
                                         self.scale_tril.to(z.device))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.facts}

    def state_dict(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "means": self.means, "scale_tril": self.scale_tril}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], facts: dict[str, Any] | None = None) -> GaussianMixtureSampler:
        missing = sorted({"weights", "means", "scale_tril"} - set(state))
        if missing:
            raise ConfigError(f"gmm sampler state lacks {missing}")
        if not all(isinstance(state[k], Tensor) for k in ("weights", "means", "scale_tril")):
            raise ConfigError("gmm sampler state: weights, means and scale_tril must be tensors")
        if facts is not None and not isinstance(facts, dict):
            raise ConfigError(f"gmm sampler facts must be a mapping, got {type(facts).__name__}")
        return cls(state["weights"], state["means"], state["scale_tril"],
                   {k: v for k, v in (facts or {}).items() if k != "name"})


@SAMPLERS.register("maf")
class FlowSampler(LatentSampler):
    """A masked autoregressive flow over the latent space (:class:`crmvae.flows.MAF`): latents
    are ``flow^-1(u)`` for ``u ~ N(0, I)``."""

    name = "maf"
    fitted = True

    def __init__(self, flow: MAF, facts: dict[str, Any] | None = None) -> None:
        self.flow = flow.eval()
        self.facts = dict(facts or {})

    @classmethod
    def build(cls, model: MultimodalVAE, dataset: BatchSource | None, config: SamplerConfig) -> FlowSampler:
        """A flow fitted by maximum likelihood to ``config.fit_size`` posterior draws on ``dataset``."""
        if dataset is None:
            raise ConfigError("the maf sampler is fitted on the training split, and none was given")
        start = time.perf_counter()
        latents = aggregate_posterior_draws(model, dataset, config.fit_size, config.seed)
        try:
            flow, history = fit_maf(latents, config.flow_blocks, config.flow_hidden, config.flow_layers,
                                    config.flow_epochs, config.flow_lr, config.flow_batch_size,
                                    torch.Generator().manual_seed(config.seed))
        except FloatingPointError as exc:
            raise ConfigError(f"maf sampler: {exc}; try a lower sampler.flow_lr") from None
        facts = {"flow_blocks": config.flow_blocks, "flow_hidden": config.flow_hidden, "flow_layers": config.flow_layers,
                 "flow_epochs": config.flow_epochs, "fit_examples": len(latents),
                 "mean_log_likelihood": -history[-1], "fit_seconds": round(time.perf_counter() - start, 3)}
        return cls(flow, facts)

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None) -> Tensor:
        device = torch.device(device or "cpu")
        u = torch.randn(n, self.flow.dim, generator=generator, device=device)
        return self.flow.to(device).from_base(u)

    def log_prob(self, z: Tensor) -> Tensor:
        """The flow's log-density at ``z`` ``[n, D]``."""
        with torch.no_grad():
            return self.flow.to(z.device).log_prob(z.float())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.facts}

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.flow.state_dict().items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], facts: dict[str, Any] | None = None) -> FlowSampler:
        if not isinstance(state, dict) or not isinstance(facts, dict) or not all(
                isinstance(facts.get(k), int) for k in ("flow_blocks", "flow_hidden", "flow_layers")):
            raise ConfigError("maf sampler: a state mapping, and facts giving flow_blocks, flow_hidden and flow_layers, are needed")
        if not isinstance(state.get("loc"), Tensor) or state["loc"].ndim != 1:
            raise ConfigError("maf sampler state lacks its loc vector")
        flow = MAF(state["loc"].numel(), facts["flow_blocks"], facts["flow_hidden"], facts["flow_layers"])
        try:
            flow.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"maf sampler state does not fit its flow: {str(exc).splitlines()[0]}") from None
        return cls(flow, {k: v for k, v in facts.items() if k != "name"})


# ------------------------------------------------------------------------------------ fitting

@torch.no_grad()
def aggregate_posterior_draws(
    model: MultimodalVAE, dataset: BatchSource, size: int | None = None, seed: int = 0, batch_size: int = 256,
) -> Tensor:
    """One draw ``z ~ q(z | X_n)`` ``[n, D]`` per example of ``dataset`` (given every modality it
    has), from ``size`` examples chosen without replacement with ``seed`` (None: all), in order."""
    device = next(model.parameters()).device
    total = len(dataset)
    if total == 0:
        raise ConfigError("cannot fit a latent sampler on an empty dataset")
    chosen = (torch.arange(total) if size is None or size >= total
              else torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:size].sort().values)
    was_training = model.training
    model.eval()
    draws = []
    try:
        with private_rng(seed, device):
            for start in range(0, len(chosen), batch_size):
                batch = dataset.batch(chosen[start:start + batch_size]).to(device)
                draws.append(model.posterior(batch.data, mask=batch.mask).sample().float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(draws)


def fit_sampler(model: MultimodalVAE, train: BatchSource | None, config: SamplerConfig | None = None) -> LatentSampler:
    """The sampler ``config`` names, fitted to ``model``'s posteriors on ``train`` where it needs
    data (``prior`` needs none)."""
    config = config or SamplerConfig()
    return SAMPLERS.lookup(config.name, "sampler.name").build(model, train, config)

