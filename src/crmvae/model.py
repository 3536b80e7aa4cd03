"""One multimodal VAE class for every objective.

``MultimodalVAE`` owns a dict of per-modality encoders and decoders, one likelihood per modality,
and an objective (by name, from :mod:`crmvae.objectives`). It infers ``q(z | X_S)`` from any subset
S of the modalities (product or mixture of the experts, as the objective prescribes), generates
the missing modalities, and samples from the prior. Missing modalities are given by a boolean
mask ``[B, M]`` or by leaving them out of the input dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .distributions import (
    product_of_experts,
    reparameterize,
    sample_mixture,
)
from .errors import ConfigError, DataError
from .likelihoods import build_likelihood
from .nets import build_networks
from .objectives import (
    ObjectiveContext,
    ObjectiveOutput,
    build_objective_config,
    get_objective,
    objective_params,
)


@dataclass
class Posterior:
    """``q(z | X_S)`` for a batch: a Gaussian ``[B, D]`` (PoE) or a mixture of ``[M, B, D]`` experts
    with weights ``[B, M]`` (rows with no present expert fall back to the prior ``N(0, I)``)."""

    mu: Tensor
    logvar: Tensor
    weights: Tensor | None = None

    @property
    def is_mixture(self) -> bool:
        return self.weights is not None

    def mean(self) -> Tensor:
        """The posterior mean: ``mu`` for a Gaussian, ``sum_m w_m mu_m`` for a mixture."""
        if self.weights is None:
            return self.mu
        return torch.einsum("bm,mbd->bd", self.weights, self.mu)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One reparameterised sample per example (a mixture first draws its component)."""
        if self.weights is None:
            return reparameterize(self.mu, self.logvar)
        return sample_mixture(self.mu, self.logvar, self.weights, generator)


class MultimodalVAE(nn.Module):
    """A multimodal VAE trained with any registered objective.

    Args:
        config: modalities (shape, network, likelihood, weight), latent size, objective name and
            objective parameters (validated against the objective's own settings class).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        names = [m.name for m in config.modalities]
        if not names:  # the other values are checked when the configuration is built
            raise ConfigError("model: at least one modality is required")
        self.modality_names = names
        self.latent_dim = config.latent_dim
        self.objective = get_objective(config.objective)
        self.objective_config = build_objective_config(self.objective.name, config.objective_params, len(names))
        self.config = replace(config, objective=self.objective.name, objective_params=objective_params(self.objective_config))
        networks = {m.name: build_networks(m, config.latent_dim) for m in config.modalities}
        self.encoders = nn.ModuleDict({name: enc for name, (enc, _) in networks.items()})
        self.decoders = nn.ModuleDict({name: dec for name, (_, dec) in networks.items()})
        self.likelihoods = {m.name: build_likelihood(m.likelihood, m.likelihood_scale) for m in config.modalities}
        self.modality_weights = {m.name: m.weight for m in config.modalities}
        self.shapes = {m.name: tuple(m.shape) for m in config.modalities}

    # ------------------------------------------------------------------------------- inputs

    def _prepare(self, data: Mapping[str, Tensor], mask: Tensor | None) -> tuple[dict[str, Tensor], Tensor]:
        """Validate inputs; return them with absent entries zeroed, and the presence mask ``[B, M]``.

        Zeroing keeps garbage (even NaN) in an absent modality's slot out of every value and
        gradient: such an entry reaches neither an encoder's nor a likelihood's backward pass.
        """
        unknown = sorted(set(data) - set(self.modality_names))
        if unknown:
            raise DataError(f"input has unknown modalities {unknown}; the model has {self.modality_names}")
        if not data:
            raise DataError("input has no modality")
        sizes = {name: x.shape[0] for name, x in data.items()}
        batch = next(iter(sizes.values()))
        if any(s != batch for s in sizes.values()):
            raise DataError(f"input modalities have different batch sizes {sizes}")
        for name, x in data.items():
            if tuple(x.shape[1:]) != self.shapes[name]:
                raise DataError(
                    f"modality {name!r}: got examples of shape {tuple(x.shape[1:])}, "
                    f"the model expects {self.shapes[name]}"
                )
        given = torch.tensor([name in data for name in self.modality_names], device=_device(data))
        if mask is None:
            return dict(data), given.expand(batch, -1)
        if mask.shape != (batch, len(self.modality_names)):
            raise DataError(
                f"mask has shape {tuple(mask.shape)}, expected ({batch}, {len(self.modality_names)}) "
                f"for modalities {self.modality_names}"
            )
        present = mask.to(given.device).bool() & given
        cleaned = {}
        for m, name in enumerate(self.modality_names):
            if name in data:
                keep = present[:, m].reshape((batch,) + (1,) * (data[name].dim() - 1))
                cleaned[name] = torch.where(keep, data[name], torch.zeros_like(data[name]))
        return cleaned, present

    def encode(self, data: Mapping[str, Tensor], mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Unimodal experts ``(mu, logvar)`` ``[M, B, D]`` (zero where absent) and the float mask ``[B, M]``."""
        return self._encode_prepared(*self._prepare(data, mask))

    def _encode_prepared(self, data: Mapping[str, Tensor], present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch = present.shape[0]
        zeros = torch.zeros(batch, self.latent_dim, device=present.device)
        mus, logvars = [], []
        for m, name in enumerate(self.modality_names):
            if name in data:
                mu, logvar = self.encoders[name](data[name])
                keep = present[:, m : m + 1]
                mus.append(torch.where(keep, mu.float(), zeros))
                logvars.append(torch.where(keep, logvar.float(), zeros))
            else:
                mus.append(zeros)
                logvars.append(zeros)
        return torch.stack(mus), torch.stack(logvars), present.float()

    def decode_params(self, name: str, z: Tensor) -> Tensor:
        """Likelihood parameters of modality ``name`` for latents ``[..., D]`` (one decoder call)."""
        lead = z.shape[:-1]
        params = self.decoders[name](z.reshape(-1, self.latent_dim))
        return params.reshape(lead + params.shape[1:])

    # ------------------------------------------------------------------------------- training

    def loss(self, data: Mapping[str, Tensor], mask: Tensor | None = None, beta_scale: float = 1.0) -> ObjectiveOutput:
        """The objective's loss and named terms for a batch (see :mod:`crmvae.objectives.base`).

        ``beta_scale`` multiplies the objective's ``beta``, which weighs every divergence term of
        every objective: the one mechanism behind KL warm-up (``train.kl_warmup_steps``).
        """
        data, present = self._prepare(data, mask)
        empty = ~present.any(1)
        if empty.any():
            raise DataError(f"example {int(empty.nonzero()[0])} has no modality present in this batch (all-False mask row)")
        mu, logvar, maskf = self._encode_prepared(data, present)

        def log_likelihood(m: int, z: Tensor) -> Tensor:
            name = self.modality_names[m]
            if name not in data:
                return z.new_zeros(z.shape[:2])
            log_p = self.likelihoods[name].log_prob(self.decode_params(name, z), data[name])
            return torch.where(present[:, m], log_p, torch.zeros_like(log_p)) * self.modality_weights[name]

        ctx = ObjectiveContext(mu, logvar, maskf, self.modality_names, log_likelihood)
        cfg = self.objective_config
        if beta_scale != 1.0:
            cfg = replace(cfg, beta=cfg.beta * beta_scale)
        return self.objective.loss(cfg, ctx)

    forward = loss

    # ------------------------------------------------------------------------------- inference

    def posterior(
        self, data: Mapping[str, Tensor], subset: Iterable[str] | None = None, mask: Tensor | None = None
    ) -> Posterior:
        """``q(z | X_S)`` from the modalities in ``subset`` (default: all given in ``data``)."""
        names = list(data) if subset is None else list(subset)
        missing = sorted(set(names) - set(data))
        if missing:
            raise DataError(f"subset names modalities {missing} that are not in the input")
        inputs = {name: data[name] for name in names}
        mu, logvar, maskf = self.encode(inputs, mask)
        if self.objective_config.inference == "mixture":
            return Posterior(mu, logvar, maskf / maskf.sum(1, keepdim=True).clamp_min(1.0))
        joint_mu, joint_logvar = product_of_experts(mu, logvar, maskf, self.objective_config.prior_weight)
        return Posterior(joint_mu, joint_logvar)

    def decode(self, z: Tensor, targets: Iterable[str] | None = None, sample: bool = False) -> dict[str, Tensor]:
        """Decode latents ``[B, D]`` into each target modality: the likelihood mean, or a sample."""
        out = {}
        for name in self._targets(targets):
            params = self.decode_params(name, z)
            likelihood = self.likelihoods[name]
            out[name] = likelihood.sample(params) if sample else likelihood.mean(params)
        return out

    @torch.no_grad()
    def generate(
        self,
        data: Mapping[str, Tensor],
        subset: Iterable[str] | None = None,
        targets: Iterable[str] | None = None,
        mask: Tensor | None = None,
        use_mean: bool = False,
        sample_output: bool = False,
    ) -> dict[str, Tensor]:
        """Generate ``targets`` (default: all modalities) conditioned on ``subset``.

        ``z`` is one posterior sample (or the posterior mean with ``use_mean``); outputs are the
        likelihood means (or samples with ``sample_output``).
        """
        post = self.posterior(data, subset, mask)
        z = post.mean() if use_mean else post.sample()
        return self.decode(z, targets, sample_output)

    @torch.no_grad()
    def sample(
        self, n: int, targets: Iterable[str] | None = None, sample_output: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Unconditional generation: ``z ~ N(0, I)``, decoded into every target modality."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode(z, targets, sample_output)

    def _targets(self, targets: Iterable[str] | None) -> list[str]:
        names = self.modality_names if targets is None else list(targets)
        unknown = sorted(set(names) - set(self.modality_names))
        if unknown:
            raise ConfigError(f"unknown target modalities {unknown}; the model has {self.modality_names}")
        return names


def _device(data: Mapping[str, Tensor]) -> torch.device:
    return next(iter(data.values())).device
