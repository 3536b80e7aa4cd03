"""Importance-sampled log-likelihoods against a linear-Gaussian model whose marginals are closed-form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from crmvae.config import DataConfig, ModalityConfig, ModelConfig
from crmvae.data import Batch
from crmvae.distributions import all_subsets
from crmvae.errors import ConfigError
from crmvae.evaluation.evaluate import EvalConfig, evaluate_model, resolve_metrics
from crmvae.evaluation.likelihood import (
    LogLikelihoods,
    importance_log_likelihoods,
    likelihood_summary,
    sample_posterior,
)
from crmvae.model import MultimodalVAE

NAMES = ["m0", "m1", "m2"]
LATENT, DIM, SCALE = 2, 3, 0.5


class LinearEncoder(nn.Module):
    """A diagonal Gaussian expert for ``x = W z + b + s eps``: the least-squares ``z`` as mean and
    ``s^2 / diag(W^T W)`` as variance (close to ``p(z | x)``, not equal: it drops the correlations)."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("pinv", torch.linalg.pinv(weight))
        self.register_buffer("bias", bias)
        self.register_buffer("logvar", torch.log(SCALE**2 / weight.square().sum(0)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = (x - self.bias) @ self.pinv.T
        return mu, self.logvar.expand_as(mu)


def linear_gaussian_model(objective: str) -> tuple[MultimodalVAE, Tensor, Tensor]:
    """The model ``z ~ N(0, I)``, ``x_m = W_m z + b_m + s eps``, and the stacked ``W`` ``[M*d, D]``, ``b``."""
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(len(NAMES) * DIM, LATENT, generator=g), torch.randn(len(NAMES) * DIM, generator=g)
    config = ModelConfig([ModalityConfig(n, [DIM], "generic_mlp", "normal", SCALE) for n in NAMES], latent_dim=LATENT,
                         objective=objective)
    model = MultimodalVAE(config).eval()
    for j, name in enumerate(NAMES):
        rows = slice(j * DIM, (j + 1) * DIM)
        decoder = nn.Linear(LATENT, DIM)
        decoder.weight.data, decoder.bias.data = weight[rows].clone(), bias[rows].clone()
        model.decoders[name] = decoder
        model.encoders[name] = LinearEncoder(weight[rows], bias[rows])
    return model, weight, bias


def closed_form_log_marginal(x: Tensor, weight: Tensor, bias: Tensor, modalities: list[int]) -> Tensor:
    """``log N(x_S; b_S, W_S W_S^T + s^2 I)`` ``[N]`` of the modalities ``modalities``."""
    rows = torch.cat([torch.arange(j * DIM, (j + 1) * DIM) for j in modalities])
    w = weight[rows].double()
    cov = w @ w.T + SCALE**2 * torch.eye(len(rows), dtype=torch.float64)
    normal = torch.distributions.MultivariateNormal(bias[rows].double(), cov)
    return normal.log_prob(x[:, rows].double()).float()


def data_from_the_model(weight: Tensor, bias: Tensor, n: int = 16) -> tuple[Tensor, Batch]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, LATENT, generator=g) @ weight.T + bias + SCALE * torch.randn(n, len(bias), generator=g)
    data = {name: x[:, j * DIM : (j + 1) * DIM] for j, name in enumerate(NAMES)}
    return x, Batch(data, torch.ones(n, len(NAMES), dtype=torch.bool))


def estimate(model: MultimodalVAE, batch: Batch, k: int, seed: int, chunk: int = 64) -> LogLikelihoods:
    return importance_log_likelihoods(model, [batch], k, chunk, torch.Generator().manual_seed(seed))


def exact_conditionals(x: Tensor, weight: Tensor, bias: Tensor, subsets: Tensor) -> Tensor:
    """``log p(x_m | X_S) = log p(x_m, X_S) - log p(X_S)`` ``[P, M, N]``, NaN for m in S."""
    out = torch.full((len(subsets), len(NAMES), len(x)), math.nan)
    for p, row in enumerate(subsets.bool()):
        given = row.nonzero().flatten().tolist()
        for m in (~row).nonzero().flatten().tolist():
            out[p, m] = closed_form_log_marginal(x, weight, bias, [*given, m]) - closed_form_log_marginal(x, weight, bias, given)
    return out


@pytest.mark.parametrize("objective", ["crmvae", "mmvae"])
def test_joint_estimate_rises_to_the_closed_form_and_its_spread_shrinks(objective: str) -> None:
    model, weight, bias = linear_gaussian_model(objective)
    x, batch = data_from_the_model(weight, bias, n=8)
    truth = closed_form_log_marginal(x, weight, bias, [0, 1, 2])
    repeats = 8  # each example 8 times in one batch: 8 independent estimates of it
    repeated = Batch({m: v.repeat(repeats, 1) for m, v in batch.data.items()}, batch.mask.repeat(repeats, 1))
    gaps, spreads = [], []
    for k in (1, 10, 100, 1000):
        joint = estimate(model, repeated, k, 0, chunk=k).joint.reshape(repeats, len(x))
        gaps.append(float((truth - joint).mean()))
        spreads.append(float(joint.std(0).mean()))
    # the proposal is not the posterior, so K = 1 (the ELBO) is loose; K = 1000 is within noise
    assert gaps[0] > 0.2 and gaps[0] > gaps[1] > gaps[2] > -0.02 and abs(gaps[3]) < 0.02, gaps
    assert all(a > b for a, b in zip(spreads, spreads[1:])), spreads


@pytest.mark.parametrize("objective", ["crmvae", "mmvae"])
def test_conditional_and_subset_estimates_converge_to_the_closed_form(objective: str) -> None:
    model, weight, bias = linear_gaussian_model(objective)
    x, batch = data_from_the_model(weight, bias, n=8)
    subsets = all_subsets(len(NAMES))
    conditionals = exact_conditionals(x, weight, bias, subsets)
    marginals = torch.stack([closed_form_log_marginal(x, weight, bias, row.nonzero().flatten().tolist()) for row in subsets])
    errors, marginal_errors = [], []
    for k in (10, 100, 10000):
        estimates = estimate(model, batch, k, 0, chunk=2000)
        assert torch.equal(conditionals.isnan(), estimates.conditional.isnan())
        errors.append(float((estimates.conditional - conditionals).abs().nanmean()))
        marginal_errors.append(float((estimates.marginal - marginals).abs().mean()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.03, errors
    assert marginal_errors[0] > marginal_errors[1] > marginal_errors[2] and marginal_errors[2] < 0.02, marginal_errors


def test_estimates_are_deterministic_for_a_seed_whatever_the_chunk() -> None:
    model, weight, bias = linear_gaussian_model("crmvae")
    _, batch = data_from_the_model(weight, bias)
    first, again = estimate(model, batch, 20, 3, chunk=20), estimate(model, batch, 20, 3, chunk=20)
    assert torch.equal(first.marginal, again.marginal)
    assert torch.equal(first.conditional.nan_to_num(), again.conditional.nan_to_num())
    chunked = estimate(model, batch, 20, 3, chunk=7)  # other draws, the same estimator
    assert (chunked.joint.mean() - first.joint.mean()).abs() < 0.1
    assert not torch.equal(estimate(model, batch, 20, 4).marginal, first.marginal)


def test_mixture_sampling_draws_only_from_weighted_experts() -> None:
    mu = torch.tensor([[[0.0]], [[100.0]]])  # M=2 experts, B=1, D=1
    logvar = torch.full_like(mu, -20.0)
    z = sample_posterior(mu, logvar, torch.tensor([[0.0, 1.0]]), 50, torch.Generator().manual_seed(0))
    assert z.shape == (50, 1, 1) and torch.allclose(z, torch.full_like(z, 100.0), atol=1e-3)
    z = sample_posterior(mu, logvar, torch.tensor([[0.5, 0.5]]), 400, torch.Generator().manual_seed(0))
    assert 0.4 < float((z > 50).float().mean()) < 0.6


def test_summary_layout() -> None:
    model, weight, bias = linear_gaussian_model("crmvae")
    _, batch = data_from_the_model(weight, bias, n=4)
    summary = likelihood_summary(estimate(model, batch, 5, 0), NAMES)
    assert set(summary) == {"joint", "conditional"} and math.isfinite(summary["joint"])
    table = summary["conditional"]["table"]
    assert {m: set(row) for m, row in table.items()} == {
        "m0": {"m1", "m2", "m1,m2"}, "m1": {"m0", "m2", "m0,m2"}, "m2": {"m0", "m1", "m0,m1"}}
    assert all(math.isfinite(v) for row in table.values() for v in row.values())
    assert set(summary["conditional"]["by_size"]) == {"1", "2"}


def test_likelihood_runs_only_when_asked_for_and_needs_no_labels() -> None:
    assert "likelihood" not in resolve_metrics(EvalConfig(), labelled=True)
    assert resolve_metrics(EvalConfig(metrics=["likelihood"]), labelled=False) == ["likelihood"]
    model, _, _ = linear_gaussian_model("crmvae")
    for setting in ({"likelihood_samples": 0}, {"likelihood_n_test": 0}, {"likelihood_batch_size": 0}):
        with pytest.raises(ConfigError, match=next(iter(setting))):
            evaluate_model(model, DataConfig(), EvalConfig(metrics=["likelihood"], **setting))
