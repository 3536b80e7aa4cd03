"""The masked autoregressive flow: the autoregressive masks, the log-determinant against autograd,
the exact inverse, a maximum-likelihood fit to a known Gaussian, and the ``maf`` sampler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crmvae.config import from_dict
from crmvae.errors import ConfigError
from crmvae.evaluation.coherence import joint_coherence
from crmvae.flows import MADE, MAF, fit_maf, made_masks
from crmvae.samplers import FlowSampler, SamplerConfig, fit_sampler

from test_evaluation_metrics import NAMES, ORACLE_CLASSIFIERS, oracle_model, template_dataset
from test_samplers import FragileDecoder


def randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` with every weight and bias drawn at random (a new block starts as the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]])
def test_made_outputs_depend_only_on_earlier_inputs(order: list[int]) -> None:
    made = randomised(MADE(torch.tensor(order), hidden=16, layers=2)).double()
    x = torch.randn(5, dtype=torch.float64)
    jacobians = torch.autograd.functional.jacobian(lambda v: torch.cat(made(v[None]), -1)[0], x)  # [2D, D]
    position = {i: t for t, i in enumerate(order)}
    for out in range(10):
        for inp in range(5):
            allowed = position[inp] < position[out % 5]
            assert allowed or jacobians[out, inp] == 0.0, (out, inp)
    assert (jacobians[:, order[0]].abs() > 0).any()  # the first input does reach later outputs


def test_made_masks_of_one_dimension_leave_only_the_bias() -> None:
    masks = made_masks(torch.tensor([0]), hidden=4, layers=1)
    assert [m.shape for m in masks] == [(4, 1), (2, 4)] and masks[-1].sum() == 0


def test_the_flow_log_density_is_the_change_of_variables_and_the_inverse_is_exact() -> None:
    flow = randomised(MAF(4, blocks=3, hidden=12, layers=2)).double()
    flow.loc.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    flow.scale.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]))
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u, log_det = flow.to_base(x)
    for row in range(6):
        jacobian = torch.autograd.functional.jacobian(lambda v: flow.to_base(v[None])[0][0], x[row])
        assert log_det[row].item() == pytest.approx(torch.linalg.slogdet(jacobian).logabsdet.item(), abs=1e-10)
    normal = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), 1.0)
    torch.testing.assert_close(flow.log_prob(x), normal.log_prob(u).sum(-1) + log_det)
    torch.testing.assert_close(flow.from_base(u), x, atol=1e-10, rtol=0)


def test_a_fit_to_a_correlated_gaussian_reaches_its_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.4]])
    mean = torch.tensor([3.0, -2.0, 0.5])
    points = mean + torch.randn(4000, 3, generator=g) @ a.T
    flow, history = fit_maf(points, blocks=2, hidden=32, layers=2, epochs=30, lr=3e-3, batch_size=128, generator=g)
    truth = torch.distributions.MultivariateNormal(mean, scale_tril=a)
    held_out = mean + torch.randn(4000, 3, generator=g) @ a.T  # the test's own stream, not the global one
    entropy = truth.entropy().item()
    assert history[-1] < history[0]
    assert -flow.log_prob(held_out).mean().item() == pytest.approx(entropy, abs=0.05)
    drawn = flow.from_base(torch.randn(20_000, 3, generator=g))
    torch.testing.assert_close(drawn.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(drawn.T), a @ a.T, atol=0.1, rtol=0)


def test_a_flow_follows_a_curved_density_that_one_gaussian_misses() -> None:
    """Points on the parabola z2 = z1^2 (plus noise 0.1): most flow samples land on it, while a
    Gaussian of the same mean and covariance puts most of its mass off it."""
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4000, generator=g)
    points = torch.stack([z1, z1.square() + 0.1 * torch.randn(4000, generator=g)], dim=1)
    flow, _ = fit_maf(points, blocks=2, hidden=64, layers=2, epochs=40, lr=3e-3, batch_size=128, generator=g)
    drawn = flow.from_base(torch.randn(5000, 2, generator=g))
    gaussian = torch.distributions.MultivariateNormal(points.mean(0), torch.cov(points.T)).sample((5000,))
    on_curve = lambda z: ((z[:, 1] - z[:, 0].square()).abs() < 0.3).float().mean().item()  # noqa: E731
    assert on_curve(points) > 0.99
    assert on_curve(drawn) > 0.8 > 0.5 > on_curve(gaussian), (on_curve(drawn), on_curve(gaussian))


def test_the_maf_sampler_beats_the_prior_and_is_saved_and_restored() -> None:
    """On the oracle's ten well-separated clusters a flow, a continuous bijection, leaves mass
    between them: better than the prior, below the mixture of ``test_samplers``."""
    model = oracle_model()
    for k, name in enumerate(NAMES):
        model.decoders[name] = FragileDecoder(k)
    config = SamplerConfig(name="maf", flow_hidden=32, flow_layers=1, flow_epochs=15)
    sampler = fit_sampler(model, template_dataset(500), config)
    assert isinstance(sampler, FlowSampler) and sampler.describe()["fit_examples"] == 500
    prior = joint_coherence(model, ORACLE_CLASSIFIERS, 1000, 250, generator=torch.Generator().manual_seed(0)).fraction
    fitted = joint_coherence(model, ORACLE_CLASSIFIERS, 1000, 250, generator=torch.Generator().manual_seed(0),
                             sampler=sampler).fraction
    assert prior < 0.15 and fitted > 0.3, (prior, fitted)
    restored = FlowSampler.from_state_dict(sampler.state_dict(), sampler.describe())
    torch.testing.assert_close(restored.sample(8, torch.Generator().manual_seed(3)),
                               sampler.sample(8, torch.Generator().manual_seed(3)))
    with pytest.raises(ConfigError, match="does not fit its flow"):
        FlowSampler.from_state_dict(sampler.state_dict(), {**sampler.describe(), "flow_hidden": 16})
    with pytest.raises(ConfigError, match="facts giving flow_blocks"):
        FlowSampler.from_state_dict(sampler.state_dict(), {})


@pytest.mark.parametrize(("values", "message"), [
    ({"flow_lr": 0.0}, "sampler.flow_lr must be a positive number"), ({"flow_epochs": 0}, "sampler.flow_epochs"),
    ({"flow_hidden": 0}, "sampler.flow_hidden"), ({"flow_blocks": 0}, "sampler.flow_blocks"),
])
def test_bad_flow_settings_are_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(SamplerConfig, {"name": "maf", **values}, where="sampler")


def test_a_fit_depends_on_its_generator_alone() -> None:
    points = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    fits = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        flow, history = fit_maf(points, 2, 8, 1, 2, 1e-3, 64, torch.Generator().manual_seed(5))
        fits.append((flow.state_dict(), history))
    assert fits[0][1] == fits[1][1]
    assert all(torch.equal(fits[0][0][k], fits[1][0][k]) for k in fits[0][0])


def test_a_diverging_fit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="try a lower sampler.flow_lr"):
        fit_sampler(oracle_model(), template_dataset(40), SamplerConfig(name="maf", flow_lr=1e30, flow_epochs=3))
