"""Decoder likelihoods against torch.distributions, with K stacked parameter sets."""

from __future__ import annotations

import pytest
import torch

from crmvae.errors import ConfigError
from crmvae.likelihoods import Bernoulli, Categorical, Laplace, Normal, build_likelihood

K, B, EVENT = 3, 4, (2, 5, 5)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference(dist: torch.distributions.Distribution, x: torch.Tensor) -> torch.Tensor:
    """Log-density of x (broadcast over K) summed over the event: [K, B]."""
    return dist.log_prob(x.unsqueeze(0).expand(dist.batch_shape)).flatten(2).sum(-1)


@pytest.mark.parametrize(
    "name, dist_cls, scale, sample_x",
    [
        ("laplace", torch.distributions.Laplace, 0.75, torch.rand),
        ("laplace", torch.distributions.Laplace, 0.3, torch.rand),
        ("normal", torch.distributions.Normal, 1.0, torch.randn),
        ("normal", torch.distributions.Normal, 0.4, torch.randn),
    ],
)
def test_location_scale_log_prob_matches_torch(name, dist_cls, scale, sample_x):
    params = torch.randn(K, B, *EVENT, generator=_gen(0))
    x = sample_x(B, *EVENT, generator=_gen(1))
    got = build_likelihood(name, scale).log_prob(params, x)
    expected = _reference(dist_cls(params, scale), x)
    assert got.shape == (K, B)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


def test_bernoulli_log_prob_matches_torch():
    logits = 3 * torch.randn(K, B, *EVENT, generator=_gen(4))
    x = (torch.rand(B, *EVENT, generator=_gen(5)) > 0.5).float()
    got = build_likelihood("bernoulli").log_prob(logits, x)
    expected = _reference(torch.distributions.Bernoulli(logits=logits), x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


def test_categorical_log_prob_matches_torch():
    length, vocab = 6, 11
    logits = torch.randn(K, B, length, vocab, generator=_gen(6))
    x = torch.randint(0, vocab, (B, length), generator=_gen(7))
    got = build_likelihood("categorical").log_prob(logits, x)
    expected = torch.distributions.Categorical(logits=logits).log_prob(x.expand(K, B, length)).sum(-1)
    assert got.shape == (K, B)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_log_prob_scores_each_stacked_sample_separately():
    params = torch.randn(K, B, *EVENT, generator=_gen(8))
    x = torch.rand(B, *EVENT, generator=_gen(9))
    lik = Laplace(0.75)
    stacked = lik.log_prob(params, x)
    for k in range(K):
        torch.testing.assert_close(stacked[k], lik.log_prob(params[k : k + 1], x)[0])


@pytest.mark.parametrize("lik", [Laplace(0.75), Normal(1.0), Bernoulli()], ids=lambda lik: lik.name)
def test_log_prob_is_the_same_for_channels_last_images(lik):
    """A decoder's channels-last output ``[K*B, C, H, W]``, viewed as ``[K, B, C, H, W]``, and
    channels-last data score as their contiguous copies do."""
    params = torch.randn(K * B, *EVENT, generator=_gen(20)).contiguous(memory_format=torch.channels_last)
    x = torch.rand(B, *EVENT, generator=_gen(21)).contiguous(memory_format=torch.channels_last)
    stacked = params.view(K, B, *EVENT)
    assert not stacked.is_contiguous()
    expected = lik.log_prob(stacked.contiguous(), x.contiguous())
    torch.testing.assert_close(lik.log_prob(stacked, x), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("lik", [Laplace(0.75), Normal(1.0), Bernoulli()], ids=lambda lik: lik.name)
def test_mean_and_sample_shapes_for_dense_likelihoods(lik):
    params = torch.randn(K, B, *EVENT, generator=_gen(10))
    assert lik.mean(params).shape == params.shape
    assert lik.sample(params).shape == params.shape


def test_bernoulli_mean_is_sigmoid_and_samples_are_binary():
    logits = torch.randn(B, *EVENT, generator=_gen(11))
    lik = Bernoulli()
    torch.testing.assert_close(lik.mean(logits), torch.sigmoid(logits))
    assert set(lik.sample(logits).unique().tolist()) <= {0.0, 1.0}


def test_categorical_mean_is_mode_and_sample_shapes():
    logits = torch.randn(B, 6, 11, generator=_gen(12))
    lik = Categorical()
    assert torch.equal(lik.mean(logits), logits.argmax(-1))
    sample = lik.sample(logits)
    assert sample.shape == (B, 6) and sample.dtype == torch.int64
    assert ((sample >= 0) & (sample < 11)).all()


def test_unknown_likelihood_is_config_error():
    with pytest.raises(ConfigError, match="unknown likelihood 'poisson'.*available"):
        build_likelihood("poisson")


def test_non_positive_scale_is_config_error():
    with pytest.raises(ConfigError, match="scale must be positive"):
        build_likelihood("laplace", 0.0)
