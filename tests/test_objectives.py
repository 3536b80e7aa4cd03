"""The seven objectives against independent reference implementations written with loops.

Each objective receives a toy ``ObjectiveContext``: fixed random Gaussian experts and a fixed
linear-Gaussian decoder per modality. Sampling is made deterministic by monkeypatching the
``reparameterize`` name inside the objective modules with ``z = mu + 0.5 * sigma``; the
references below recompute every loss per example, per modality and per subset in float64.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import crmvae.objectives.crmvae as crmvae_module
import crmvae.objectives.mmjsd as mmjsd_module
import crmvae.objectives.mmvae as mmvae_module
import crmvae.objectives.mopoe as mopoe_module
import crmvae.objectives.mvae as mvae_module
import crmvae.objectives.mvtcae as mvtcae_module
from crmvae.errors import ConfigError
from crmvae.objectives import ObjectiveContext, build_objective_config, get_objective

M, B, D, P = 3, 6, 4, 5
SIGMA = 0.8
LOG_2PI = math.log(2 * math.pi)

MASKS = {
    "complete": torch.ones(B, M),
    "partial": torch.tensor(
        [[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.float32
    ),
}


def shift(mu, logvar):
    """The deterministic stand-in for a reparameterised sample."""
    return mu + 0.5 * torch.exp(0.5 * logvar)


@pytest.fixture
def deterministic(monkeypatch):
    for module in (crmvae_module, mvtcae_module, mmjsd_module, mopoe_module, mmvae_module, mvae_module):
        monkeypatch.setattr(module, "reparameterize", shift)


# ---------------------------------------------------------------------------------------- toy context


class Toy:
    """Experts ``[M, B, D]`` (zero where absent) and a linear-Gaussian decoder ``x_m ~ N(z W_m, SIGMA^2)``."""

    def __init__(self, mask: torch.Tensor, seed: int = 0, zero_loglik: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.mask = mask
        present = mask.T[..., None]
        self.mu = torch.randn(M, B, D, generator=g) * present
        self.logvar = 0.6 * torch.randn(M, B, D, generator=g) * present
        self.W = [0.5 * torch.randn(D, P, generator=g) for _ in range(M)]
        self.x = [torch.randn(B, P, generator=g) for _ in range(M)]
        self.zero_loglik = zero_loglik
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    # -- the callback handed to the objective
    def log_likelihood(self, m: int, z: torch.Tensor) -> torch.Tensor:
        self.calls.append((m, tuple(z.shape)))
        mean = z @ self.W[m]  # [K, B, P]
        log_p = (-0.5 * ((self.x[m] - mean) / SIGMA) ** 2 - math.log(SIGMA) - 0.5 * LOG_2PI).sum(-1)
        if self.zero_loglik:
            log_p = 0.0 * log_p
        return log_p * self.mask[:, m]

    def ctx(self, mu=None, logvar=None) -> ObjectiveContext:
        return ObjectiveContext(
            self.mu if mu is None else mu,
            self.logvar if logvar is None else logvar,
            self.mask,
            [f"m{i}" for i in range(M)],
            self.log_likelihood,
        )

    # -- float64 pieces of the references, one example at a time
    def present(self, b: int) -> list[int]:
        return [m for m in range(M) if self.mask[b, m] > 0]

    def expert(self, m: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu[m, b].double(), self.logvar[m, b].double()

    def rec(self, m: int, z: torch.Tensor, b: int, weights=None) -> torch.Tensor:
        """log p(x_m[b] | z) for one latent vector z [D]."""
        if self.zero_loglik:
            return torch.zeros((), dtype=torch.float64)
        W = self.W[m].double() if weights is None else weights[m]
        total = torch.zeros((), dtype=torch.float64)
        for p in range(P):
            mean = sum(z[d] * W[d, p] for d in range(D))
            total = total - 0.5 * ((self.x[m][b, p].double() - mean) / SIGMA) ** 2 - math.log(SIGMA) - 0.5 * LOG_2PI
        return total


STD = (torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64))


def ref_poe(experts, prior_weight, weights=None):
    """Precision-weighted product of experts [(mu, logvar)] (+ prior expert N(0, I) weighted prior_weight)."""
    precision = torch.full((D,), float(prior_weight), dtype=torch.float64)
    numerator = torch.zeros(D, dtype=torch.float64)
    for i, (mu, logvar) in enumerate(experts):
        w = 1.0 if weights is None else weights[i]
        precision = precision + w / torch.exp(logvar)
        numerator = numerator + w * mu / torch.exp(logvar)
    if not experts and prior_weight == 0:
        return STD
    return numerator / precision, -torch.log(precision)


def ref_kl(q, p):
    (mq, lq), (mp, lp) = q, p
    return 0.5 * sum(
        lp[d] - lq[d] + (torch.exp(lq[d]) + (mq[d] - mp[d]) ** 2) / torch.exp(lp[d]) - 1 for d in range(D)
    )


def ref_log_normal(z, mu, logvar):
    return sum(-0.5 * (LOG_2PI + logvar[d] + (z[d] - mu[d]) ** 2 / torch.exp(logvar[d])) for d in range(D))


def ref_shift(g):
    return shift(*g)


# ---------------------------------------------------------------------------------------- references


def ref_crmvae(t, beta=1.0, prior_expert=True, recon_coef="pi", kl_target="posterior"):
    pw = 1.0 if prior_expert else 0.0
    pi = 1.0 / (M + 1)
    c = pi if recon_coef == "pi" else 0.5
    total = 0.0
    for b in range(B):
        present = t.present(b)
        joint = ref_poe([t.expert(m, b) for m in present], pw)
        loss_b = beta * pi * ref_kl(joint, STD)
        for m in present:
            unimodal = ref_poe([t.expert(m, b)], pw)
            target = unimodal if kl_target == "posterior" else t.expert(m, b)
            loss_b = loss_b - c * t.rec(m, ref_shift(joint), b) - c * t.rec(m, ref_shift(unimodal), b)
            loss_b = loss_b + beta * pi * ref_kl(joint, target)
        total += loss_b
    return total / B


def ref_mvtcae(t, beta=1.0, variant="paper", prior_expert=None, alpha=None, recon_scale=1.0):
    use_prior = (variant == "paper") if prior_expert is None else prior_expert
    pw = 1.0 if use_prior else 0.0
    if variant == "paper":
        rec_c, kl_expert_c, kl_prior_c = 1.0, 1.0 / (M + 1), 1.0 / (M + 1)
    else:
        a = M / (M + 1) if alpha is None else alpha
        rec_c, kl_expert_c, kl_prior_c = (M - a) / M, a / M, 1.0 - a
    total = 0.0
    for b in range(B):
        present = t.present(b)
        joint = ref_poe([t.expert(m, b) for m in present], pw)
        loss_b = beta * kl_prior_c * ref_kl(joint, STD)
        for m in present:
            loss_b = loss_b - recon_scale * rec_c * t.rec(m, ref_shift(joint), b)
            loss_b = loss_b + beta * kl_expert_c * ref_kl(joint, ref_poe([t.expert(m, b)], pw))
        total += loss_b
    return total / B


def ref_mmjsd(t, beta=1.0, joint="moe", prior_expert=True):
    pw = 1.0 if prior_expert else 0.0
    pi = 1.0 / (M + 1)
    total = 0.0
    for b in range(B):
        present = t.present(b)
        dynamic = ref_poe([t.expert(m, b) for m in present], pi, weights=[pi] * len(present))
        if joint == "moe":  # stratified: example b takes its (b mod n_b)-th present expert
            z = ref_shift(t.expert(present[b % len(present)], b))
        else:
            z = ref_shift(ref_poe([t.expert(m, b) for m in present], pw))
        loss_b = beta * pi * ref_kl(STD, dynamic)
        for m in present:
            loss_b = loss_b - t.rec(m, z, b) + beta * pi * ref_kl(t.expert(m, b), dynamic)
        total += loss_b
    return total / B


def ref_mmjsd_poe(t, **kw):
    return ref_mmjsd(t, joint="poe", **kw)


SUBSETS = [s for size in range(1, M + 1) for s in itertools.combinations(range(M), size)]


def ref_mopoe(t, beta=1.0, prior_expert=True, estimator="sampled"):
    pw = 1.0 if prior_expert else 0.0
    total = 0.0
    for b in range(B):
        present = t.present(b)
        valid = [s for s in SUBSETS if set(s) <= set(present)]
        posteriors = [ref_poe([t.expert(m, b) for m in s], pw) for s in valid]
        loss_b = beta * sum(ref_kl(q, STD) for q in posteriors) / len(valid)
        if estimator == "sampled":
            q = posteriors[b % len(valid)]
            loss_b = loss_b - sum(t.rec(m, ref_shift(q), b) for m in present)
        else:
            for q in posteriors:
                loss_b = loss_b - sum(t.rec(m, ref_shift(q), b) for m in present) / len(valid)
        total += loss_b
    return total / B


def ref_mmvae(t, beta=1.0, estimator="elbo"):
    assert estimator == "elbo"
    total = 0.0
    for b in range(B):
        present = t.present(b)
        loss_b = 0.0
        for m in present:
            z = ref_shift(t.expert(m, b))
            loss_b = loss_b - sum(t.rec(n, z, b) for n in present) + beta * ref_kl(t.expert(m, b), STD)
        total += loss_b / len(present)
    return total / B


FIXED_RANDOM_SUBSETS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])


def ref_mvae(t, beta=1.0, prior_expert=True, num_random_subsets=0):
    pw = 1.0 if prior_expert else 0.0
    rows = [tuple(range(M))] + [(m,) for m in range(M)]
    if num_random_subsets:
        assert num_random_subsets == len(FIXED_RANDOM_SUBSETS)
        rows += [tuple(int(i) for i in r.nonzero().flatten()) for r in FIXED_RANDOM_SUBSETS]
    total = 0.0
    for b in range(B):
        for subset in rows:
            observed = [m for m in subset if t.mask[b, m] > 0]
            if not observed:
                continue
            q = ref_poe([t.expert(m, b) for m in observed], pw)
            total = total + beta * ref_kl(q, STD) - sum(t.rec(m, ref_shift(q), b) for m in observed)
    return total / B


REFERENCES = {
    "crmvae": ref_crmvae,
    "mvtcae": ref_mvtcae,
    "mmjsd": ref_mmjsd,
    "mmjsd_poe": ref_mmjsd_poe,
    "mopoe": ref_mopoe,
    "mmvae": ref_mmvae,
    "mvae": ref_mvae,
}

VARIANTS = [
    *[
        ("crmvae", {"recon_coef": rc, "kl_target": kt, "prior_expert": pe})
        for rc in ("pi", "half")
        for kt in ("posterior", "expert")
        for pe in (True, False)
    ],
    ("crmvae", {"beta": 0.7}),
    ("mvtcae", {}),
    ("mvtcae", {"prior_expert": False, "beta": 0.7}),
    ("mvtcae", {"recon_scale": 2.0 / (M + 1)}),
    ("mvtcae", {"variant": "original"}),
    ("mvtcae", {"variant": "original", "alpha": 0.3}),
    ("mvtcae", {"variant": "original", "alpha": 0.3, "prior_expert": True, "recon_scale": 0.5}),
    ("mmjsd", {}),
    ("mmjsd", {"beta": 0.7}),
    ("mmjsd_poe", {}),
    ("mmjsd_poe", {"prior_expert": False, "beta": 0.7}),
    ("mopoe", {"estimator": "sampled"}),
    ("mopoe", {"estimator": "sampled", "prior_expert": False}),
    ("mopoe", {"estimator": "stratified"}),
    ("mopoe", {"estimator": "stratified", "prior_expert": False, "beta": 0.7}),
    ("mmvae", {"estimator": "elbo"}),
    ("mmvae", {"estimator": "elbo", "beta": 0.7}),
    ("mvae", {"num_random_subsets": 0}),
    ("mvae", {"num_random_subsets": 0, "prior_expert": False}),
    ("mvae", {"num_random_subsets": 2}),
    ("mvae", {"num_random_subsets": 2, "beta": 0.7}),
]


def _variant_id(v):
    name, params = v
    return name + "-" + "-".join(f"{k}={val:.3g}" if isinstance(val, float) else f"{k}={val}" for k, val in params.items())


def run_objective(name, params, ctx):
    cfg = build_objective_config(name, params, M)
    return get_objective(name).loss(cfg, ctx)


@pytest.fixture
def fixed_random_subsets(monkeypatch):
    monkeypatch.setattr(mvae_module, "random_subsets", lambda m, count, device: FIXED_RANDOM_SUBSETS[:count].to(device))


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_loss_matches_reference(variant, mask_name, deterministic, fixed_random_subsets):
    name, params = variant
    toy = Toy(MASKS[mask_name])
    out = run_objective(name, params, toy.ctx())
    expected = REFERENCES[name](toy, **params)
    assert out.loss.shape == ()
    assert out.loss.item() == pytest.approx(float(expected), rel=1e-5, abs=1e-5)
    assert all(torch.isfinite(v) for v in out.terms.values())


# ---------------------------------------------------------------------------------------- relations


@pytest.mark.parametrize("prior_expert", [True, False])
def test_mvtcae_original_default_alpha_has_paper_kl_part(prior_expert, deterministic):
    toy = Toy(MASKS["partial"], zero_loglik=True)
    original = run_objective("mvtcae", {"variant": "original", "prior_expert": prior_expert}, toy.ctx())
    paper = run_objective("mvtcae", {"variant": "paper", "prior_expert": prior_expert}, toy.ctx())
    assert original.loss.item() > 0
    torch.testing.assert_close(original.loss, paper.loss)


@pytest.mark.parametrize("prior_expert", [True, False])
def test_mvtcae_original_default_alpha_equals_paper_with_recon_scale(prior_expert, deterministic):
    toy = Toy(MASKS["partial"])
    original = run_objective("mvtcae", {"variant": "original", "prior_expert": prior_expert}, toy.ctx())
    scaled = run_objective("mvtcae", {"prior_expert": prior_expert, "recon_scale": M / (M + 1)}, toy.ctx())
    unscaled = run_objective("mvtcae", {"prior_expert": prior_expert}, toy.ctx())
    torch.testing.assert_close(original.loss, scaled.loss)
    assert abs(original.loss.item() - unscaled.loss.item()) > 1e-3


def test_mvtcae_alpha_with_paper_variant_is_config_error():
    with pytest.raises(ConfigError, match="alpha"):
        build_objective_config("mvtcae", {"alpha": 0.5}, M)


@pytest.mark.parametrize("mask_name", list(MASKS))
def test_crmvae_without_prior_expert_kl_targets_coincide(mask_name, deterministic):
    toy = Toy(MASKS[mask_name])
    posterior = run_objective("crmvae", {"prior_expert": False, "kl_target": "posterior"}, toy.ctx())
    expert = run_objective("crmvae", {"prior_expert": False, "kl_target": "expert"}, toy.ctx())
    torch.testing.assert_close(posterior.loss, expert.loss)
    with_prior = run_objective("crmvae", {"prior_expert": True, "kl_target": "expert"}, toy.ctx())
    other = run_objective("crmvae", {"prior_expert": True, "kl_target": "posterior"}, toy.ctx())
    assert abs(with_prior.loss.item() - other.loss.item()) > 1e-3


def test_crmvae_decodes_joint_and_unimodal_samples_in_one_call_per_modality():
    toy = Toy(MASKS["complete"])
    run_objective("crmvae", {}, toy.ctx())
    assert sorted(toy.calls) == [(m, (2, B, D)) for m in range(M)]


def test_mmjsd_and_mmjsd_poe_differ_only_in_the_joint_sample(deterministic):
    toy = Toy(MASKS["partial"])
    moe = run_objective("mmjsd", {}, toy.ctx())
    poe = run_objective("mmjsd_poe", {}, toy.ctx())
    kl_names = [k for k in moe.terms if k.startswith("kl/")]
    assert kl_names and sorted(kl_names) == sorted(k for k in poe.terms if k.startswith("kl/"))
    for k in kl_names:
        torch.testing.assert_close(moe.terms[k], poe.terms[k])
    assert abs(moe.loss.item() - poe.loss.item()) > 1e-3
    silent = Toy(MASKS["partial"], zero_loglik=True)
    torch.testing.assert_close(run_objective("mmjsd", {}, silent.ctx()).loss, run_objective("mmjsd_poe", {}, silent.ctx()).loss)


def test_mvae_random_subsets_have_sizes_between_two_and_m_minus_one():
    torch.manual_seed(0)
    rows = mvae_module.random_subsets(5, 300, torch.device("cpu"))
    assert rows.shape == (300, 5)
    assert set(rows.unique().tolist()) == {0.0, 1.0}
    sizes = rows.sum(1)
    assert set(sizes.long().tolist()) == {2, 3, 4}
    assert (rows.sum(0) > 0).all()  # every modality gets drawn


def test_mvae_random_subsets_need_three_modalities():
    with pytest.raises(ConfigError, match="at least 3 modalities"):
        build_objective_config("mvae", {"num_random_subsets": 1}, 2)


# ---------------------------------------------------------------------------------------- MMVAE DReG


def _dreg_reference(toy, eps, k, beta, mu, logvar, weights):
    """log w [B][m] -> [K] for present m, in float64 (z from mu/logvar; log q with detached parameters)."""
    out = {}
    for b in range(B):
        present = toy.present(b)
        for m in present:
            log_ws = []
            for i in range(k):
                z = mu[m, b] + eps[m, i, b] * torch.exp(0.5 * logvar[m, b])
                comps = [
                    math.log(1.0 / len(present)) + ref_log_normal(z, mu[n, b].detach(), logvar[n, b].detach())
                    for n in present
                ]
                log_q = torch.logsumexp(torch.stack(comps), 0)
                log_w = sum(toy.rec(n, z, b, weights) for n in present) + beta * (ref_log_normal(z, *STD) - log_q)
                log_ws.append(log_w)
            out[b, m] = torch.stack(log_ws)
    return out


def _mean_over_examples(toy, per_component):
    total = 0.0
    for b in range(B):
        present = toy.present(b)
        total = total + sum(per_component[b, m] for m in present) / len(present)
    return total / B


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_dreg_loss_and_iwae_match_reference(k, mask_name):
    toy = Toy(MASKS[mask_name])
    beta = 0.7
    torch.manual_seed(123)
    out = run_objective("mmvae", {"estimator": "dreg", "num_importance_samples": k, "beta": beta}, toy.ctx())
    torch.manual_seed(123)
    eps = torch.randn(M, k, B, D).double()
    log_w = _dreg_reference(toy, eps, k, beta, toy.mu.double(), toy.logvar.double(), None)
    surrogate = {key: (torch.softmax(lw, 0) * lw).sum() for key, lw in log_w.items()}
    iwae = {key: torch.logsumexp(lw, 0) - math.log(k) for key, lw in log_w.items()}
    assert out.loss.item() == pytest.approx(-float(_mean_over_examples(toy, surrogate)), rel=1e-5, abs=1e-5)
    assert out.terms["iwae"].item() == pytest.approx(-float(_mean_over_examples(toy, iwae)), rel=1e-5, abs=1e-5)
    if k == 1:  # a single sample: the surrogate is the ELBO with the mixture density
        torch.testing.assert_close(out.loss, out.terms["iwae"])


def test_dreg_gradients_match_iwae_for_decoder_and_dreg_for_encoder():
    k, beta = 4, 1.0
    toy = Toy(MASKS["partial"])
    toy.W = [w.clone().requires_grad_() for w in toy.W]
    mu = toy.mu.clone().requires_grad_()
    logvar = toy.logvar.clone().requires_grad_()
    torch.manual_seed(7)
    out = run_objective("mmvae", {"estimator": "dreg", "num_importance_samples": k, "beta": beta}, toy.ctx(mu, logvar))
    out.loss.backward()

    torch.manual_seed(7)
    eps = torch.randn(M, k, B, D).double()
    weights = [w.detach().double().requires_grad_() for w in toy.W]
    mu64 = toy.mu.double().requires_grad_()
    logvar64 = toy.logvar.double().requires_grad_()
    log_w = _dreg_reference(toy, eps, k, beta, mu64, logvar64, weights)
    # Decoder: the IWAE gradient, sum_k w~_k grad log w_k.
    iwae = _mean_over_examples(toy, {key: torch.logsumexp(lw, 0) - math.log(k) for key, lw in log_w.items()})
    decoder_grads = torch.autograd.grad(-iwae, weights, retain_graph=True)
    for got, expected in zip(toy.W, decoder_grads):
        torch.testing.assert_close(got.grad.double(), expected, rtol=1e-4, atol=1e-5)
    # Encoder: DReG, sum_k stopgrad(w~_k)^2 d log w_k / dz dz/dphi.
    dreg = _mean_over_examples(
        toy, {key: (torch.softmax(lw, 0).detach() ** 2 * lw).sum() for key, lw in log_w.items()}
    )
    mu_grad, logvar_grad = torch.autograd.grad(-dreg, [mu64, logvar64])
    torch.testing.assert_close(mu.grad.double(), mu_grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logvar.grad.double(), logvar_grad, rtol=1e-4, atol=1e-5)
    assert mu.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- masks

ALL_VARIANTS = VARIANTS + [("mmvae", {"estimator": "dreg", "num_importance_samples": 3})]


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=_variant_id)
def test_absent_experts_get_exactly_zero_gradient(variant):
    name, params = variant
    toy = Toy(MASKS["partial"])
    mu = toy.mu.clone().requires_grad_()
    logvar = toy.logvar.clone().requires_grad_()
    torch.manual_seed(0)
    run_objective(name, params, toy.ctx(mu, logvar)).loss.backward()
    absent = toy.mask.T == 0  # [M, B]
    assert torch.equal(mu.grad[absent], torch.zeros_like(mu.grad[absent]))
    assert torch.equal(logvar.grad[absent], torch.zeros_like(logvar.grad[absent]))
    assert (mu.grad[~absent].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=_variant_id)
def test_loss_ignores_values_of_absent_experts(variant):
    name, params = variant
    toy = Toy(MASKS["partial"])
    absent = (toy.mask.T == 0)[..., None].expand(M, B, D)
    garbage_mu = torch.where(absent, torch.full_like(toy.mu, 3.0), toy.mu)
    garbage_logvar = torch.where(absent, torch.full_like(toy.logvar, -2.5), toy.logvar)
    torch.manual_seed(0)
    clean = run_objective(name, params, toy.ctx()).loss
    torch.manual_seed(0)
    dirty = run_objective(name, params, toy.ctx(garbage_mu, garbage_logvar)).loss
    assert torch.isfinite(dirty)
    torch.testing.assert_close(dirty, clean, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=_variant_id)
def test_decoder_gets_no_gradient_from_absent_data(variant):
    name, params = variant
    mask = MASKS["partial"]

    def decoder_grads(x_value):
        toy = Toy(mask)
        toy.x[1][1] = x_value  # example 1 lacks modality 1
        toy.W = [w.clone().requires_grad_() for w in toy.W]
        torch.manual_seed(0)
        run_objective(name, params, toy.ctx()).loss.backward()
        return [w.grad for w in toy.W]

    clean = decoder_grads(Toy(mask).x[1][1])
    dirty = decoder_grads(torch.full((P,), 50.0))
    for a, b in zip(clean, dirty):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
