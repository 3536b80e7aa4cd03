"""Latent samplers: the mixture density against SciPy and scikit-learn, sample moments, EM
recovery of known clusters, posterior draws, and a decoder on which the fitted mixture makes
prior-incoherent samples coherent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from crmvae.config import from_dict
from crmvae.data import ModalitySpec, MultimodalDataset
from crmvae.errors import ConfigError
from crmvae.evaluation.coherence import joint_coherence
from crmvae.samplers import (
    SAMPLERS,
    GaussianMixtureSampler,
    PriorSampler,
    SamplerConfig,
    aggregate_posterior_draws,
    fit_sampler,
    gaussian_mixture_log_prob,
    sample_gaussian_mixture,
)

from test_evaluation_metrics import NAMES, ORACLE_CLASSIFIERS, TEMPLATES, oracle_model, template_dataset, tiny_model


def random_mixture(k: int = 3, d: int = 4, seed: int = 0, spread: float = 6.0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(k, generator=g) + 0.2
    means = spread * torch.randn(k, d, generator=g, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    covariances = a @ a.transpose(1, 2) / d + 0.3 * torch.eye(d, dtype=torch.float64)
    return weights.double() / weights.sum(), means, torch.linalg.cholesky(covariances)


def test_mixture_log_prob_matches_scipy() -> None:
    weights, means, tril = random_mixture()
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4
    expected = np.log(sum(float(w) * multivariate_normal(m.numpy(), (l @ l.T).numpy()).pdf(z.numpy())
                          for w, m, l in zip(weights, means, tril)))
    np.testing.assert_allclose(gaussian_mixture_log_prob(z, weights, means, tril).numpy(), expected, rtol=1e-10)


def test_mixture_samples_have_the_mixture_moments() -> None:
    weights, means, tril = random_mixture(spread=20.0)
    z = sample_gaussian_mixture(60_000, weights, means, tril, torch.Generator().manual_seed(2))
    nearest = torch.cdist(z, means).argmin(1)  # components 20 sd apart: assignment is exact
    for k in range(3):
        rows = z[nearest == k]
        assert abs(len(rows) / len(z) - float(weights[k])) < 0.01
        torch.testing.assert_close(rows.mean(0), means[k], atol=0.05, rtol=0)
        torch.testing.assert_close(torch.cov(rows.T), tril[k] @ tril[k].T, atol=0.06, rtol=0)


def test_samplers_are_reproducible_and_the_prior_draws_as_model_sample() -> None:
    model = tiny_model(latent_dim=6)
    z = PriorSampler(6).sample(5, torch.Generator().manual_seed(3))
    expected = model.sample(5, generator=torch.Generator().manual_seed(3))
    for name, images in model.decode(z).items():
        torch.testing.assert_close(images, expected[name], rtol=0, atol=0)
    gmm = GaussianMixtureSampler(*random_mixture(d=6))
    first, second = (gmm.sample(7, torch.Generator().manual_seed(4)) for _ in range(2))
    assert torch.equal(first, second) and first.dtype == torch.float32 and first.shape == (7, 6)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_fit_recovers_known_clusters_and_agrees_with_scikit_learn(covariance: str) -> None:
    weights, means, tril = random_mixture(spread=15.0)
    if covariance == "diag":
        tril = torch.diag_embed(torch.diagonal(tril, dim1=1, dim2=2))
    points = sample_gaussian_mixture(6_000, weights, means, tril, torch.Generator().manual_seed(5)).float()
    config = SamplerConfig(name="gmm", n_components=3, covariance=covariance)
    sampler = GaussianMixtureSampler.fit(points, config)
    order = [int(torch.cdist(m[None].float(), sampler.means).argmin()) for m in means]
    assert sorted(order) == [0, 1, 2]
    truth = torch.cdist(points, means.float()).argmin(1)  # components 15 sd apart: EM's clusters are these
    empirical_means = torch.stack([points[truth == k].mean(0) for k in range(3)])
    empirical_weights = torch.bincount(truth, minlength=3) / len(points)
    torch.testing.assert_close(sampler.means[order], empirical_means, atol=1e-3, rtol=0)
    torch.testing.assert_close(sampler.weights[order], empirical_weights, atol=1e-4, rtol=0)
    if covariance == "diag":
        assert torch.equal(sampler.scale_tril, torch.diag_embed(torch.diagonal(sampler.scale_tril, dim1=1, dim2=2)))
    reference = GaussianMixture(3, covariance_type=covariance, random_state=0, tol=config.tol,
                                max_iter=config.max_iter).fit(points.double().numpy())
    np.testing.assert_allclose(sampler.log_prob(points[:100]).numpy(), reference.score_samples(points[:100].double().numpy()),
                               rtol=1e-4)
    assert sampler.describe()["fit_examples"] == 6_000 and sampler.describe()["converged"]
    restored = GaussianMixtureSampler.from_state_dict(sampler.state_dict())
    assert torch.equal(restored.sample(4, torch.Generator().manual_seed(0)), sampler.sample(4, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("values, message", [
    ({"name": "flow"}, "unknown sampler 'flow'; available: ['gmm', 'maf', 'prior']"),
    ({"covariance": "tied"}, "sampler.covariance: 'tied' is not one of ['full', 'diag']"),
    ({"n_components": 0}, "sampler.n_components must be >= 1"),
    ({"fit_size": 0}, "sampler.fit_size must be >= 1 or null"),
])
def test_bad_sampler_settings_are_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        from_dict(SamplerConfig, values, where="sampler")


def test_more_components_than_latents_and_a_missing_training_split_are_refused() -> None:
    with pytest.raises(ConfigError, match="n_components is 5, more than the 4 latents"):
        GaussianMixtureSampler.fit(torch.randn(4, 2), SamplerConfig(name="gmm", n_components=5))
    with pytest.raises(ConfigError, match="fitted on the training split"):
        fit_sampler(tiny_model(), None, SamplerConfig(name="gmm"))
    assert set(SAMPLERS) == {"prior", "gmm", "maf"}



def test_an_em_failure_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: GaussianMixture, points: np.ndarray) -> None:
        raise ValueError("Fitting the mixture model failed because some components have ill-defined empirical covariance")

    monkeypatch.setattr(GaussianMixture, "fit", fail)
    with pytest.raises(ConfigError, match="EM failed on 30 posterior draws .*ill-defined.*covariance=diag"):
        GaussianMixtureSampler.fit(torch.randn(30, 2), SamplerConfig(name="gmm", n_components=2))


@pytest.mark.parametrize("objective", ["crmvae", "mmvae"])  # a product and a mixture of experts
def test_posterior_draws_use_present_modalities_and_leave_the_global_rng_alone(objective: str) -> None:
    model = oracle_model(objective=objective).train()
    data = template_dataset(40)
    state = torch.get_rng_state()
    draws = aggregate_posterior_draws(model, data, size=25, seed=1, batch_size=8)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert draws.shape == (25, 10)
    assert torch.equal(draws, aggregate_posterior_draws(model, data, size=25, seed=1, batch_size=8))
    chosen = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:25].sort().values
    assert torch.equal(draws.argmax(1), data.labels[chosen])  # the oracle's posterior sits on the label
    # an example with two modalities missing is encoded from the third
    masked = MultimodalDataset(data.tensors, [ModalitySpec(n, "image", TEMPLATES.shape[1:]) for n in NAMES], data.labels,
                               mask=torch.tensor([[True, False, False]] * 40))
    assert torch.equal(aggregate_posterior_draws(model, masked).argmax(1), data.labels)


class FragileDecoder(nn.Module):
    """Decodes ``argmax z`` where ``max z > 2.5`` (where the oracle's posteriors put mass), and an
    independent random label elsewhere, as a decoder that has never seen those latents might."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, z: Tensor) -> Tensor:
        noise = torch.randint(0, 10, z.shape[:1], generator=self.generator)
        return TEMPLATES[torch.where(z.max(-1).values > 2.5, z.argmax(-1), noise)]


def test_a_mixture_fitted_to_the_aggregate_posterior_makes_unconditional_samples_coherent() -> None:
    model = oracle_model()
    for k, name in enumerate(NAMES):
        model.decoders[name] = FragileDecoder(k)
    sampler = fit_sampler(model, template_dataset(500), SamplerConfig(name="gmm", n_components=10))
    prior = joint_coherence(model, ORACLE_CLASSIFIERS, 1000, 250, generator=torch.Generator().manual_seed(0)).fraction
    fitted = joint_coherence(model, ORACLE_CLASSIFIERS, 1000, 250, generator=torch.Generator().manual_seed(0),
                             sampler=sampler).fraction
    assert prior < 0.15 and fitted > 0.95, (prior, fitted)
    assert sampler.describe()["name"] == "gmm" and sampler.describe()["fit_seconds"] >= 0
