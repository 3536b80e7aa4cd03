"""MultimodalVAE: losses, masks, inference from subsets, generation, errors, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

import crmvae.objectives.mvtcae as mvtcae_module
from crmvae.checkpoint import load_model, save_model
from crmvae.config import ModalityConfig, ModelConfig
from crmvae.errors import CheckpointError, ConfigError, DataError
from crmvae.model import MultimodalVAE
from crmvae.objectives import ObjectiveContext

NAMES = ["m0", "m1", "m2"]
SHAPE = (3, 28, 28)
LATENT, BATCH = 8, 4

OBJECTIVES = [
    ("crmvae", {}),
    ("mvtcae", {}),
    ("mmjsd", {}),
    ("mmjsd_poe", {}),
    ("mopoe", {}),
    ("mopoe", {"estimator": "stratified"}),
    ("mmvae", {}),
    ("mmvae", {"estimator": "dreg", "num_importance_samples": 3}),
    ("mvae", {"num_random_subsets": 1}),
]
POE_OBJECTIVES = [
    ("crmvae", {}),
    ("crmvae", {"prior_expert": False}),
    ("mvtcae", {}),
    ("mvtcae", {"variant": "original"}),
    ("mmjsd_poe", {}),
    ("mopoe", {}),
    ("mvae", {}),
]
MIXTURE_OBJECTIVES = [("mmvae", {}), ("mmjsd", {})]


def _id(v):
    name, params = v
    return "-".join([name, *(f"{k}={val}" for k, val in params.items())])


def make_model(objective="crmvae", params=None, weights=(1.0, 1.0, 1.0), seed=0) -> MultimodalVAE:
    torch.manual_seed(seed)
    modalities = [ModalityConfig(n, list(SHAPE), "polymnist_conv", "laplace", 0.75, w) for n, w in zip(NAMES, weights)]
    return MultimodalVAE(ModelConfig(modalities, LATENT, objective, dict(params or {})))


def make_data(seed=1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(BATCH, *SHAPE, generator=g) for n in NAMES}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny convolutions: one intra-op thread is faster and immune to a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PARTIAL_MASK = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)


# ---------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("variant", OBJECTIVES, ids=_id)
def test_loss_runs_and_backpropagates_for_every_objective(variant):
    model = make_model(*variant)
    out = model.loss(make_data(), PARTIAL_MASK)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("variant", OBJECTIVES, ids=_id)
def test_every_step_reports_the_same_terms(variant):
    """The trainer sums terms across steps by position: random subsets or mixture components
    drawn anew each step must not change which terms there are."""
    model = make_model(*variant)
    names = set()
    for seed in range(8):
        torch.manual_seed(seed)
        names.add(tuple(model.loss(make_data(), PARTIAL_MASK).terms))
    assert len(names) == 1, names


def test_loss_is_objective_of_encoders_and_weighted_laplace_decoders(monkeypatch):
    """Model plumbing vs a context assembled here: experts from the encoders, absent ones zeroed,
    the Laplace log-density written out, times the modality weight, zero where absent."""
    monkeypatch.setattr(mvtcae_module, "reparameterize", lambda mu, lv: mu + 0.5 * torch.exp(0.5 * lv))
    weights = (1.0, 0.5, 2.0)
    model = make_model("mvtcae", {}, weights=weights)
    data = make_data()
    got = model.loss(data, PARTIAL_MASK).loss

    mask = PARTIAL_MASK.float()
    with torch.no_grad():
        experts = [model.encoders[n](data[n]) for n in NAMES]
    mu = torch.stack([e[0] for e in experts]) * mask.T[..., None]
    logvar = torch.stack([e[1] for e in experts]) * mask.T[..., None]

    def log_likelihood(m, z):
        loc = model.decoders[NAMES[m]](z.reshape(-1, LATENT)).reshape(z.shape[:2] + SHAPE)
        log_p = (-(data[NAMES[m]] - loc).abs() / 0.75 - math.log(1.5)).flatten(2).sum(-1)
        return log_p * mask[:, m] * weights[m]

    expected = model.objective.loss(model.objective_config, ObjectiveContext(mu, logvar, mask, NAMES, log_likelihood))
    torch.testing.assert_close(got, expected.loss, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("variant", OBJECTIVES, ids=_id)
def test_masked_input_gets_exactly_zero_gradient(variant):
    model = make_model(*variant)
    data = {n: x.requires_grad_() for n, x in make_data().items()}
    torch.manual_seed(0)
    model.loss(data, PARTIAL_MASK).loss.backward()
    for m, name in enumerate(NAMES):
        grad = data[name].grad
        for b in range(BATCH):
            if PARTIAL_MASK[b, m]:
                assert grad[b].abs().sum() > 0
            else:
                assert torch.equal(grad[b], torch.zeros_like(grad[b]))


@pytest.mark.parametrize("variant", OBJECTIVES, ids=_id)
def test_nan_in_masked_data_changes_neither_loss_nor_gradients(variant):
    model = make_model(*variant)

    def loss_and_grads(data):
        model.zero_grad()
        torch.manual_seed(0)
        out = model.loss(data, PARTIAL_MASK)
        out.loss.backward()
        return out.loss.detach(), [p.grad.clone() for p in model.parameters()]

    clean = make_data()
    dirty = {n: x.clone() for n, x in clean.items()}
    dirty["m1"][0] = float("nan")  # example 0 lacks m1
    dirty["m2"][2] = 1e6  # example 2 lacks m2
    loss_clean, grads_clean = loss_and_grads(clean)
    loss_dirty, grads_dirty = loss_and_grads(dirty)
    assert torch.isfinite(loss_dirty)
    torch.testing.assert_close(loss_dirty, loss_clean, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_clean, grads_dirty):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_leaving_a_modality_out_equals_masking_it():
    model = make_model("crmvae")
    data = make_data()
    torch.manual_seed(5)  # crmvae samples z: compare with the same random stream
    without = model.loss({n: data[n] for n in ("m0", "m2")}).loss
    torch.manual_seed(5)
    masked = model.loss(data, torch.tensor([[True, False, True]]).expand(BATCH, -1)).loss
    torch.testing.assert_close(without, masked)


# ---------------------------------------------------------------------------------------- inference


def _reference_poe(experts, prior_weight):
    precision = torch.full_like(experts[0][0], prior_weight, dtype=torch.float64)
    numerator = torch.zeros_like(precision)
    for mu, logvar in experts:
        precision = precision + torch.exp(-logvar.double())
        numerator = numerator + torch.exp(-logvar.double()) * mu.double()
    return numerator / precision, -torch.log(precision)


@pytest.mark.parametrize("subset", [["m0"], ["m1", "m2"], NAMES], ids="+".join)
@pytest.mark.parametrize("variant", POE_OBJECTIVES, ids=_id)
def test_poe_posterior_from_subset_is_product_of_its_experts(variant, subset):
    model = make_model(*variant)
    data = make_data()
    post = model.posterior(data, subset)
    assert not post.is_mixture
    with torch.no_grad():
        experts = [model.encoders[n](data[n]) for n in subset]
    mu, logvar = _reference_poe(experts, model.objective_config.prior_weight)
    torch.testing.assert_close(post.mu.double(), mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(post.logvar.double(), logvar, rtol=1e-5, atol=1e-5)


def test_prior_expert_setting_changes_the_posterior():
    data = make_data()
    with_prior = make_model("crmvae", {"prior_expert": True}).posterior(data, ["m0"])
    without = make_model("crmvae", {"prior_expert": False}).posterior(data, ["m0"])
    assert (with_prior.logvar < without.logvar).all()  # the prior expert adds precision


@pytest.mark.parametrize("variant", MIXTURE_OBJECTIVES, ids=_id)
def test_mixture_posterior_weights_are_uniform_over_present_subset_experts(variant):
    model = make_model(*variant)
    data = make_data()
    post = model.posterior(data, ["m0", "m2"], mask=PARTIAL_MASK)
    assert post.is_mixture
    expected = torch.zeros(BATCH, 3)
    for b in range(BATCH):
        present = [m for m in (0, 2) if PARTIAL_MASK[b, m]]
        for m in present:
            expected[b, m] = 1.0 / len(present)
    assert torch.equal(post.weights, expected)
    with torch.no_grad():
        mu0, logvar0 = model.encoders["m0"](data["m0"])
    torch.testing.assert_close(post.mu[0, 0], mu0[0])
    torch.testing.assert_close(post.logvar[0, 0], logvar0[0])
    mean = sum(expected[:, m : m + 1] * post.mu[m] for m in range(3))
    torch.testing.assert_close(post.mean(), mean)


@pytest.mark.parametrize("variant", MIXTURE_OBJECTIVES, ids=_id)
def test_mixture_posterior_sample_comes_from_a_present_component(variant):
    model = make_model(*variant)
    data = make_data()
    post = model.posterior(data, ["m1"])
    post.logvar = torch.full_like(post.logvar, -30.0)  # near-deterministic components
    z = post.sample()
    torch.testing.assert_close(z, post.mu[1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", [("crmvae", {}), ("mmvae", {})], ids=_id)
def test_generate_returns_every_target_with_its_shape(variant):
    model = make_model(*variant)
    data = make_data()
    out = model.generate(data, subset=["m0"])
    assert sorted(out) == NAMES
    assert all(x.shape == (BATCH, *SHAPE) for x in out.values())
    some = model.generate(data, subset=["m0", "m1"], targets=["m2"], sample_output=True)
    assert list(some) == ["m2"] and some["m2"].shape == (BATCH, *SHAPE)


def test_generate_from_posterior_mean_is_deterministic():
    model = make_model("crmvae")
    data = make_data()
    a = model.generate(data, subset=["m1"], use_mean=True)
    b = model.generate(data, subset=["m1"], use_mean=True)
    assert all(torch.equal(a[n], b[n]) for n in NAMES)


def test_sample_returns_every_modality_with_its_shape():
    model = make_model("mopoe")
    out = model.sample(5)
    assert sorted(out) == NAMES and all(x.shape == (5, *SHAPE) for x in out.values())
    a = model.sample(2, targets=["m1"], generator=torch.Generator().manual_seed(0))
    b = model.sample(2, targets=["m1"], generator=torch.Generator().manual_seed(0))
    assert list(a) == ["m1"] and torch.equal(a["m1"], b["m1"])


# ---------------------------------------------------------------------------------------- errors


def test_bad_input_shape_is_data_error_naming_modality_and_shapes():
    model = make_model()
    data = make_data()
    data["m1"] = torch.zeros(BATCH, 3, 27, 28)
    with pytest.raises(DataError) as info:
        model.loss(data)
    message = str(info.value)
    assert "'m1'" in message and "(3, 27, 28)" in message and "(3, 28, 28)" in message


def test_unknown_modality_is_data_error():
    model = make_model()
    data = make_data()
    data["audio"] = torch.zeros(BATCH, *SHAPE)
    with pytest.raises(DataError, match="audio"):
        model.loss(data)


def test_wrong_mask_shape_is_data_error():
    model = make_model()
    with pytest.raises(DataError) as info:
        model.loss(make_data(), torch.ones(BATCH, 2, dtype=torch.bool))
    message = str(info.value)
    assert "(4, 2)" in message and "(4, 3)" in message and "m2" in message


@pytest.mark.parametrize("variant", OBJECTIVES, ids=_id)
def test_example_without_any_modality_is_data_error(variant):
    """Like MultimodalDataset, the loss refuses an example with an all-False mask row
    (mixture objectives would otherwise divide by zero present experts and return NaN)."""
    mask = PARTIAL_MASK.clone()
    mask[2] = False
    with pytest.raises(DataError, match="example 2 has no modality"):
        make_model(*variant).loss(make_data(), mask)


def test_unknown_objective_is_config_error_listing_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model/objective 'vae'.*crmvae.*mvtcae"):
        make_model("vae")


def test_unknown_objective_param_is_config_error_naming_allowed_keys():
    with pytest.raises(ConfigError) as info:
        make_model("crmvae", {"recon_weight": 2.0})
    message = str(info.value)
    assert "recon_weight" in message and "allowed keys" in message and "recon_coef" in message


def test_bad_objective_param_value_is_config_error():
    with pytest.raises(ConfigError, match="recon_coef"):
        make_model("crmvae", {"recon_coef": "third"})


def test_unknown_target_modality_is_config_error():
    with pytest.raises(ConfigError, match="m9"):
        make_model().sample(2, targets=["m9"])


# ---------------------------------------------------------------------------------------- checkpoints


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = make_model("crmvae", {"prior_expert": False, "beta": 0.5})
    path = tmp_path / "model.pt"
    save_model(model, path, step=3)
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.objective_config == model.objective_config
    data = make_data()
    for subset in (["m0"], NAMES):
        a, b = model.posterior(data, subset), loaded.posterior(data, subset)
        assert torch.equal(a.mu, b.mu) and torch.equal(a.logvar, b.logvar)
    z = torch.randn(3, LATENT)
    assert all(torch.equal(model.decode(z)[n], loaded.decode(z)[n]) for n in NAMES)
    torch.manual_seed(0)
    loss_a = model.loss(data).loss
    torch.manual_seed(0)
    loss_b = loaded.loss(data).loss
    assert torch.equal(loss_a, loss_b)


def test_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "model.pt"
    save_model(make_model("mopoe"), path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "crmvae" and payload["model_config"]["objective"] == "mopoe"
    assert all(isinstance(v, torch.Tensor) for v in payload["model"].values())


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""], ids=["garbage", "empty"])
def test_corrupt_checkpoint_is_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_model(path)


def test_truncated_checkpoint_is_checkpoint_error(tmp_path):
    path = tmp_path / "model.pt"
    save_model(make_model(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_missing_checkpoint_is_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nothing.pt")


def test_foreign_torch_file_is_checkpoint_error(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a crmvae checkpoint"):
        load_model(path)
