"""Gaussian KLs, products and mixtures of experts, each against an independent computation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from crmvae.distributions import (
    all_subsets,
    gather_components,
    kl_diag_gaussians,
    kl_standard_normal,
    log_mixture_density,
    log_normal,
    log_standard_normal,
    product_of_experts,
    reparameterize,
    sample_mixture,
    stratified_choice,
    subset_poe,
)

D = 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussians(*shape: int, seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    mu = torch.randn(*shape, generator=g, dtype=dtype)
    logvar = 0.8 * torch.randn(*shape, generator=g, dtype=dtype)
    return mu, logvar


# ------------------------------------------------------------------------------ sampling


def test_reparameterize_is_mu_plus_sigma_times_standard_normal_draws() -> None:
    mu, logvar = _gaussians(4, 5, D)
    torch.manual_seed(3)
    z = reparameterize(mu, logvar)
    torch.manual_seed(3)
    eps = torch.randn(4, 5, D)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)


def test_reparameterize_draws_do_not_depend_on_memory_layout() -> None:
    """A transposed (non-contiguous) stack gets the same sample as its contiguous copy."""
    mu, logvar = _gaussians(5, 4, D)
    mu_t, logvar_t = mu.transpose(0, 1), logvar.transpose(0, 1)  # [4, 5, D], strided
    assert not mu_t.is_contiguous()
    torch.manual_seed(7)
    strided = reparameterize(mu_t, logvar_t)
    torch.manual_seed(7)
    contiguous = reparameterize(mu_t.contiguous(), logvar_t.contiguous())
    torch.testing.assert_close(strided, contiguous, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- KL


def test_kl_matches_torch_distributions():
    mu_q, lv_q = _gaussians(5, D, seed=1)
    mu_p, lv_p = _gaussians(5, D, seed=2)
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * lv_q))
    p = torch.distributions.Normal(mu_p, torch.exp(0.5 * lv_p))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p), expected, rtol=1e-5, atol=1e-6)


def test_kl_matches_monte_carlo_estimate():
    mu_q, lv_q = torch.tensor([0.3, -1.0, 0.5]), torch.tensor([-0.5, 0.2, 0.0])
    mu_p, lv_p = torch.tensor([0.0, 0.5, -0.2]), torch.tensor([0.3, -0.4, 0.1])
    n = 400_000
    z = mu_q + torch.exp(0.5 * lv_q) * torch.randn(n, D, generator=_gen(3))

    def log_density(x, mu, lv):  # written out per dimension
        return (-0.5 * (math.log(2 * math.pi) + lv + (x - mu) ** 2 / torch.exp(lv))).sum(-1)

    mc = (log_density(z, mu_q, lv_q) - log_density(z, mu_p, lv_p)).mean()
    assert kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p).item() == pytest.approx(mc.item(), abs=0.01)


def test_kl_of_identical_gaussians_is_zero():
    mu, lv = _gaussians(4, D)
    torch.testing.assert_close(kl_diag_gaussians(mu, lv, mu, lv), torch.zeros(4), rtol=0, atol=1e-6)


def test_kl_standard_normal_equals_kl_to_zero_mean_unit_variance():
    mu, lv = _gaussians(6, D)
    zeros = torch.zeros_like(mu)
    torch.testing.assert_close(kl_standard_normal(mu, lv), kl_diag_gaussians(mu, lv, zeros, zeros))


def test_log_normal_matches_torch_distributions():
    mu, lv = _gaussians(5, D, seed=4)
    z = torch.randn(5, D, generator=_gen(5))
    expected = torch.distributions.Normal(mu, torch.exp(0.5 * lv)).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal(z, mu, lv), expected)
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(log_standard_normal(z), standard)


# ---------------------------------------------------------------------------------------- PoE


def _poe_loop(mu, logvar, weights, prior_weight):
    """Precision-weighted product written with explicit loops: mu, logvar [M, B, D]; weights [B, M]."""
    m_count, batch, dim = mu.shape
    out_mu, out_lv = torch.zeros(batch, dim, dtype=torch.float64), torch.zeros(batch, dim, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            precision = prior_weight * 1.0
            numerator = prior_weight * 0.0
            for m in range(m_count):
                t = math.exp(-float(logvar[m, b, d]))
                precision += float(weights[b, m]) * t
                numerator += float(weights[b, m]) * t * float(mu[m, b, d])
            if precision == 0.0:
                precision, numerator = 1.0, 0.0
            out_mu[b, d] = numerator / precision
            out_lv[b, d] = -math.log(precision)
    return out_mu, out_lv


def test_poe_of_identical_experts_divides_variance():
    n = 4
    mu, lv = _gaussians(1, 2, D)
    got_mu, got_lv = product_of_experts(mu.expand(n, -1, -1), lv.expand(n, -1, -1), torch.ones(2, n), prior_weight=0.0)
    torch.testing.assert_close(got_mu, mu[0])
    torch.testing.assert_close(torch.exp(got_lv), torch.exp(lv[0]) / n)


@pytest.mark.parametrize("prior_weight", [1.0, 0.0])
def test_poe_matches_precision_weighted_loop(prior_weight):
    mu, lv = _gaussians(3, 4, D, seed=6)
    weights = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    got_mu, got_lv = product_of_experts(mu, lv, weights, prior_weight)
    ref_mu, ref_lv = _poe_loop(mu, lv, weights, prior_weight)
    torch.testing.assert_close(got_mu.double(), ref_mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_lv.double(), ref_lv, rtol=1e-5, atol=1e-6)


def test_weighted_poe_matches_loop():
    mu, lv = _gaussians(3, 4, D, seed=7)
    weights = torch.rand(4, 3, generator=_gen(8))
    got_mu, got_lv = product_of_experts(mu, lv, weights, prior_weight=0.25)
    ref_mu, ref_lv = _poe_loop(mu, lv, weights, 0.25)
    torch.testing.assert_close(got_mu.double(), ref_mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_lv.double(), ref_lv, rtol=1e-5, atol=1e-6)


def test_poe_without_prior_and_without_expert_is_standard_normal():
    mu, lv = _gaussians(2, 3, D)
    weights = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    got_mu, got_lv = product_of_experts(mu, lv, weights, prior_weight=0.0)
    assert torch.isfinite(got_mu).all() and torch.isfinite(got_lv).all()
    assert torch.equal(got_mu[0], torch.zeros(D)) and torch.equal(got_lv[0], torch.zeros(D))
    assert torch.equal(got_mu[2], torch.zeros(D)) and torch.equal(got_lv[2], torch.zeros(D))
    torch.testing.assert_close(got_mu[1], mu[0, 1])


@pytest.mark.parametrize("prior_weight", [1.0, 0.0])
def test_subset_poe_matches_loop_over_combinations_and_examples(prior_weight):
    m_count, batch = 3, 5
    mu, lv = _gaussians(m_count, batch, D, seed=9)
    mask = (torch.rand(batch, m_count, generator=_gen(10)) > 0.4).float()
    mask[0] = torch.tensor([1.0, 0.0, 1.0])  # at least one partial row
    subsets = all_subsets(m_count)
    got_mu, got_lv = subset_poe(mu, lv, subsets, mask, prior_weight)
    assert got_mu.shape == (2**m_count - 1, batch, D)
    k = 0
    for size in range(1, m_count + 1):
        for subset in itertools.combinations(range(m_count), size):
            for b in range(batch):
                present = [m for m in subset if mask[b, m] > 0]
                precision = torch.full((D,), prior_weight, dtype=torch.float64)
                numerator = torch.zeros(D, dtype=torch.float64)
                for m in present:
                    t = torch.exp(-lv[m, b].double())
                    precision += t
                    numerator += t * mu[m, b].double()
                if not present and prior_weight == 0.0:
                    precision = torch.ones(D, dtype=torch.float64)
                torch.testing.assert_close(got_mu[k, b].double(), numerator / precision, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(got_lv[k, b].double(), -torch.log(precision), rtol=1e-5, atol=1e-6)
            k += 1


def test_subset_poe_ignores_absent_experts_values():
    mu, lv = _gaussians(3, 2, D, seed=11)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    subsets = all_subsets(3)
    before = subset_poe(mu, lv, subsets, mask)
    mu2, lv2 = mu.clone(), lv.clone()
    mu2[1, 0], lv2[1, 0] = 100.0, -5.0
    after = subset_poe(mu2, lv2, subsets, mask)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


# ---------------------------------------------------------------------------------------- subsets


@pytest.mark.parametrize("m_count", [1, 2, 3, 5])
def test_all_subsets_are_distinct_nonempty_and_ordered_by_size(m_count):
    rows = all_subsets(m_count)
    assert rows.shape == (2**m_count - 1, m_count)
    assert set(rows.unique().tolist()) <= {0.0, 1.0}
    sizes = rows.sum(1)
    assert (sizes >= 1).all()
    assert torch.all(sizes[1:] >= sizes[:-1])
    assert len({tuple(r) for r in rows.tolist()}) == 2**m_count - 1


def test_stratified_choice_picks_only_valid_components():
    valid = torch.rand(7, 50, generator=_gen(12)) > 0.5
    valid[torch.randint(0, 7, (50,), generator=_gen(13)), torch.arange(50)] = True
    chosen = stratified_choice(valid)
    assert chosen.dtype == torch.int64 and chosen.shape == (50,)
    assert valid[chosen, torch.arange(50)].all()


@pytest.mark.parametrize("k, batch", [(3, 10), (7, 7), (7, 20), (5, 3)])
def test_stratified_choice_splits_complete_batch_evenly(k, batch):
    chosen = stratified_choice(torch.ones(k, batch, dtype=torch.bool))
    counts = torch.bincount(chosen, minlength=k)
    assert counts.sum() == batch
    assert counts.max() - counts.min() <= 1


def test_gather_components_selects_one_row_per_example():
    x = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)
    component = torch.tensor([2, 0, 1, 2])
    expected = torch.stack([x[component[b], b] for b in range(4)])
    assert torch.equal(gather_components(x, component), expected)


# ---------------------------------------------------------------------------------------- mixtures


def test_log_mixture_density_matches_logsumexp_loop():
    m_count, batch, k = 3, 4, 5
    mu, lv = _gaussians(m_count, batch, D, seed=14)
    weights = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    z = torch.randn(k, batch, D, generator=_gen(15))
    got = log_mixture_density(z, mu, lv, weights)
    assert got.shape == (k, batch)
    for i in range(k):
        for b in range(batch):
            terms = []
            for m in range(m_count):
                if weights[b, m] > 0:
                    comp = torch.distributions.Normal(mu[m, b].double(), torch.exp(0.5 * lv[m, b].double()))
                    terms.append(math.log(float(weights[b, m])) + comp.log_prob(z[i, b].double()).sum().item())
            ref = max(terms) + math.log(sum(math.exp(t - max(terms)) for t in terms))
            assert got[i, b].item() == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_log_mixture_density_integrates_to_one_monte_carlo():
    """E_{z ~ N(0, 4 I)}[p_mix(z) / N(z; 0, 4 I)] = 1 (importance-sampled normalisation)."""
    mu = torch.tensor([[[0.5, -0.5]], [[-1.0, 1.0]]])
    lv = torch.tensor([[[-0.5, 0.0]], [[0.2, -0.3]]])
    weights = torch.tensor([[0.3, 0.7]])
    n = 200_000
    z = 2.0 * torch.randn(n, 1, 2, generator=_gen(16))
    proposal = log_normal(z, torch.zeros(2), torch.full((2,), math.log(4.0)))
    ratio = torch.exp(log_mixture_density(z, mu, lv, weights) - proposal)
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------------------------------- gradients


def test_gradcheck_kl_diag_gaussians():
    q = _gaussians(2, D, seed=17, dtype=torch.float64)
    p = _gaussians(2, D, seed=18, dtype=torch.float64)
    args = [t.requires_grad_() for t in (*q, *p)]
    assert torch.autograd.gradcheck(kl_diag_gaussians, args)


def test_product_of_experts_keeps_double_precision():
    mu, lv = _gaussians(2, 2, D, seed=19, dtype=torch.float64)
    got_mu, got_lv = product_of_experts(mu, lv, torch.ones(2, 2, dtype=torch.float64))
    assert got_mu.dtype == torch.float64 and got_lv.dtype == torch.float64


@pytest.mark.parametrize("prior_weight", [1.0, 0.0])
def test_gradcheck_product_of_experts(prior_weight):
    mu, lv = _gaussians(3, 2, D, seed=19, dtype=torch.float64)
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.3, 0.5, 0.7]], dtype=torch.float64)

    def poe(mu, lv):
        return product_of_experts(mu, lv, weights, prior_weight)

    assert torch.autograd.gradcheck(poe, (mu.requires_grad_(), lv.requires_grad_()))


def test_gradcheck_log_mixture_density():
    mu, lv = _gaussians(3, 2, D, seed=20, dtype=torch.float64)
    z = torch.randn(4, 2, D, generator=_gen(21), dtype=torch.float64)
    weights = torch.tensor([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]], dtype=torch.float64)

    def density(z, mu, lv):
        return log_mixture_density(z, mu, lv, weights)

    assert torch.autograd.gradcheck(density, (z.requires_grad_(), mu.requires_grad_(), lv.requires_grad_()))


def test_sample_mixture_takes_a_weighted_component_and_the_prior_for_empty_rows() -> None:
    """Experts at +-100 with variance 1: a row's draw sits near its component's mean; a row with
    no weight is N(0, I); several mixtures (leading dims) share the experts."""
    m, b, d, draws = 3, 4, 2, 4000
    mu = torch.tensor([100.0, -100.0, 300.0])[:, None, None].expand(m, b, d).contiguous()
    logvar = torch.zeros(m, b, d)
    # mixture 0: rows take expert 0, 1, 2 and none; mixture 1: experts {0, 1} half and half, rest none
    weights = torch.tensor([
        [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]],
        [[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
    ])  # fmt: skip
    torch.manual_seed(0)
    z = torch.stack([sample_mixture(mu, logvar, weights) for _ in range(draws)])  # [draws, 2, B, D]
    assert z.shape == (draws, 2, b, d)
    for row, centre in enumerate([100.0, -100.0, 300.0, 0.0]):
        noise = z[:, 0, row] - centre
        assert abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1) < 0.05
    first = z[:, 1, 0, 0]
    assert bool(((first - 100).abs() < 6).logical_xor((first + 100).abs() < 6).all())
    assert abs(float((first > 0).float().mean()) - 0.5) < 0.05
    prior = z[:, 1, 1:]
    assert abs(float(prior.mean())) < 0.05 and abs(float(prior.std()) - 1) < 0.03
    # the same seed gives the same draws (component and noise)
    torch.manual_seed(1)
    a = sample_mixture(mu, logvar, weights)
    torch.manual_seed(1)
    assert torch.equal(a, sample_mixture(mu, logvar, weights))
