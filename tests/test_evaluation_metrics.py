"""Evaluation metrics against known answers: oracle and shuffled generators, per-subset loops,
closed-form Frechet distances, hand-computed edit distances and cosines, separable probes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from crmvae.config import ModalityConfig, ModelConfig
from crmvae.data import Batch, ModalitySpec, MultimodalDataset
from crmvae.errors import ConfigError
from crmvae.data.text import decode_tokens, encode_strings
from crmvae.distributions import all_subsets
from crmvae.evaluation import similarity, usage
from crmvae.evaluation.classifiers import (
    ARCHITECTURES,
    build_classifier,
    classifier_for,
)
from crmvae.evaluation.coherence import (
    cross_coherence,
    cross_generation_scores,
    joint_coherence,
)
from crmvae.evaluation.fid import (
    FeatureExtractor,
    fid_from_features,
    frechet_distance,
    gaussian_statistics,
    inception_inputs,
    model_fid,
    trace_sqrt_product,
)
from crmvae.evaluation.latents import (
    SubsetPosteriors,
    encode_dataset,
    mean_by_size,
    proper_subsets,
    subset_names,
    subset_posteriors,
)
from crmvae.evaluation.probes import (
    fit_logistic_regressions,
    latent_probes,
    probe_accuracies,
    standardise,
)
from crmvae.evaluation.similarity import (
    example_cosines,
    latent_cosine_similarity,
)
from crmvae.evaluation.text import clean_text, edit_distances, text_scorer
from crmvae.evaluation.usage import active_units, latent_usage
from crmvae.model import MultimodalVAE

SHAPE = (3, 28, 28)
NAMES = ["m0", "m1", "m2"]


def tiny_model(objective: str = "crmvae", latent_dim: int = 10) -> MultimodalVAE:
    torch.manual_seed(0)
    config = ModelConfig([ModalityConfig(n, list(SHAPE)) for n in NAMES], latent_dim=latent_dim, objective=objective)
    return MultimodalVAE(config).eval()


# --------------------------------------------------------------------------------------------
# an oracle model: each modality shows a template of its label; z is a sharp one-hot of the label


TEMPLATES = torch.rand(10, *SHAPE, generator=torch.Generator().manual_seed(1))


def nearest_template(x: Tensor) -> Tensor:
    """argmin_y |x - T_y|^2 = argmax_y (2 <x, T_y> - |T_y|^2)."""
    flat = TEMPLATES.flatten(1)
    return (2 * x.flatten(1).float() @ flat.T - flat.square().sum(1)).argmax(1)


class OracleEncoder(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = 5.0 * nn.functional.one_hot(nearest_template(x), 10).float()
        return mu, torch.full_like(mu, -12.0)


class TemplateDecoder(nn.Module):
    """Decodes ``argmax z`` (or, ``shuffled``, a random label) into its template."""

    def __init__(self, shuffled: bool = False) -> None:
        super().__init__()
        self.shuffled = shuffled
        self.anchor = nn.Parameter(torch.zeros(1))  # the model's device

    def forward(self, z: Tensor) -> Tensor:
        label = torch.randint(0, 10, z.shape[:1]) if self.shuffled else z.argmax(-1)
        return TEMPLATES[label]


def oracle_model(shuffled: bool = False, objective: str = "crmvae") -> MultimodalVAE:
    model = tiny_model(objective)
    for name in NAMES:
        model.encoders[name] = OracleEncoder()
        model.decoders[name] = TemplateDecoder(shuffled)
    return model


def template_dataset(n: int = 300, seed: int = 0) -> MultimodalDataset:
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))
    images = (TEMPLATES[labels] * 255).round().to(torch.uint8)
    specs = [ModalitySpec(name, "image", SHAPE) for name in NAMES]
    return MultimodalDataset({name: images for name in NAMES}, specs, labels)


ORACLE_CLASSIFIERS = {name: nearest_template for name in NAMES}


def test_oracle_generator_is_fully_coherent_and_a_shuffled_one_is_at_chance() -> None:
    data = template_dataset()
    torch.manual_seed(0)
    oracle = cross_coherence(oracle_model(), data.batches(64), ORACLE_CLASSIFIERS)
    assert oracle["by_size"] == {"1": 1.0, "2": 1.0}
    assert set(oracle["table"]) == set(NAMES)
    assert oracle["table"]["m0"] == {"m1": 1.0, "m2": 1.0, "m1,m2": 1.0}
    shuffled = cross_coherence(oracle_model(shuffled=True), data.batches(64), ORACLE_CLASSIFIERS)
    for size, value in shuffled["by_size"].items():
        assert abs(value - 0.1) < 0.05, (size, value)
    joint = joint_coherence(oracle_model(), ORACLE_CLASSIFIERS, 200, 64)
    assert joint.fraction == 1.0 and sum(joint.agreed_labels) == 200 and len(joint.agreed_labels) == 10
    assert joint.effective_classes > 9.0  # argmax of N(0, I) latents: every class about equally often
    assert joint_coherence(oracle_model(shuffled=True), ORACLE_CLASSIFIERS, 1000, 256).fraction < 0.05  # chance 0.01


class OneTemplateDecoder(TemplateDecoder):
    """Decodes every latent into the template of class 3: a generator that has learnt nothing."""

    def forward(self, z: Tensor) -> Tensor:
        return TEMPLATES[torch.full(z.shape[:1], 3)]


def test_joint_coherence_of_a_generator_that_draws_one_class_is_full_but_has_one_class() -> None:
    model = oracle_model()
    for name in NAMES:
        model.decoders[name] = OneTemplateDecoder()
    joint = joint_coherence(model, ORACLE_CLASSIFIERS, 300, 64)
    assert joint.fraction == 1.0 and joint.agreed_labels == (0, 0, 0, 300)
    assert joint.effective_classes == 1.0 and joint.majority_share == 1.0


def test_effective_classes_by_hand() -> None:
    from crmvae.evaluation.coherence import JointCoherence

    assert JointCoherence(0.4, (1, 1, 1, 1)).effective_classes == pytest.approx(4.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623 nats
    assert JointCoherence(0.4, (3, 0, 1)).effective_classes == pytest.approx(math.exp(h))  # 1.755
    assert JointCoherence(0.4, (3, 0, 1)).majority_share == 0.75
    nothing = JointCoherence(0.0, (0, 0))
    assert (nothing.effective_classes, nothing.majority_share) == (0.0, 0.0)
    assert nothing.labels_result() == {"effective_classes": 0.0, "majority_share": 0.0, "agreed": [0, 0]}


def test_mixture_oracle_is_coherent_too() -> None:
    torch.manual_seed(0)
    result = cross_coherence(oracle_model(objective="mmvae"), template_dataset(100).batches(50), ORACLE_CLASSIFIERS)
    assert result["by_size"] == {"1": 1.0, "2": 1.0}


# --------------------------------------------------------------------------------------------
# vectorised subsets == a per-subset loop over model.posterior / model.generate


def random_batch(n: int = 6, missing: bool = True) -> Batch:
    g = torch.Generator().manual_seed(3)
    data = {name: torch.rand(n, *SHAPE, generator=g) for name in NAMES}
    mask = torch.ones(n, len(NAMES), dtype=torch.bool)
    if missing:
        mask[0, 1] = mask[1, 0] = mask[1, 2] = False
    return Batch(data, mask, torch.arange(n) % 10)


@pytest.mark.parametrize("objective", ["crmvae", "mmvae", "mvae"])
def test_subset_posteriors_match_model_posterior(objective: str) -> None:
    model = tiny_model(objective, latent_dim=8)
    batch = random_batch()
    subsets = all_subsets(len(NAMES))
    posts = subset_posteriors(model, batch.data, batch.mask, subsets)
    means = posts.mean()
    for k, names in enumerate(subset_names(subsets, NAMES)):
        post = model.posterior(batch.data, names.split(","), batch.mask)
        torch.testing.assert_close(means[k], post.mean(), rtol=1e-5, atol=1e-6)
        if not post.is_mixture:
            torch.testing.assert_close(posts.logvar[k], post.logvar, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", ["crmvae", "mmvae"])
def test_vectorised_cross_generation_matches_a_per_subset_loop(objective: str) -> None:
    model = tiny_model(objective, latent_dim=8)
    batch = random_batch(missing=False)

    def scorer(x: Tensor, y: Tensor) -> dict[str, Tensor]:  # a continuous per-example score
        return {"mean": x.flatten(1).mean(1) + y}

    scores = cross_generation_scores(model, [batch], {t: scorer for t in NAMES}, use_mean=True)
    for t in NAMES:
        assert set(scores[t]) == {s for s in subset_names(proper_subsets(3), NAMES) if t not in s.split(",")}
        for subset, values in scores[t].items():
            generated = model.generate(batch.data, subset.split(","), [t], use_mean=True)[t]
            expected = float(scorer(generated, batch.labels)["mean"].mean())
            assert values["mean"] == pytest.approx(expected, rel=1e-5)


def test_samples_are_reparameterised_draws_of_each_subset_posterior() -> None:
    """PoE: the sample's spread matches exp(logvar/2); mixture: each draw sits on one expert."""
    model = tiny_model("crmvae", latent_dim=8)
    batch = random_batch(missing=False)
    subsets = proper_subsets(3)
    posts = subset_posteriors(model, batch.data, batch.mask, subsets)
    torch.manual_seed(0)
    draws = torch.stack([posts.sample() for _ in range(400)])
    eps = ((draws - posts.mu) / torch.exp(0.5 * posts.logvar)).detach()
    assert abs(float(eps.mean())) < 0.02 and abs(float(eps.std()) - 1) < 0.02
    mixture = subset_posteriors(model.__class__(
        ModelConfig(model.config.modalities, 8, "mmvae")).eval(), batch.data, batch.mask, subsets)
    mixture.logvar = torch.full_like(mixture.logvar, -40.0)
    z = mixture.sample()  # [K, B, D]; row k may only take experts in subset k
    distance = (z[:, None] - mixture.mu[None]).abs().amax(-1)  # [K, M, B]
    on_expert = distance < 1e-6
    assert bool(on_expert.any(1).all())
    assert bool((on_expert & (subsets[:, :, None] > 0)).any(1).all())


def test_mean_by_size_and_subset_names() -> None:
    assert subset_names(proper_subsets(3), NAMES) == ["m0", "m1", "m2", "m0,m1", "m0,m2", "m1,m2"]
    assert mean_by_size([("m0", 1.0), ("m1", 0.0), ("m0,m1", 0.5)]) == {"1": 0.5, "2": 0.5}


# --------------------------------------------------------------------------------------------
# FID


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    closed = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-9)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_survives_singular_covariances() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 20))  # 5 samples in 20 dimensions: rank-4 covariance
    mu, sigma = gaussian_statistics(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-4)
    assert np.isfinite(frechet_distance(mu, sigma, mu + 1, sigma * 2))


def tiny_extractor() -> FeatureExtractor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return FeatureExtractor(net, preprocess=lambda x: x.float().expand(-1, 3, -1, -1), batch_size=64,
                            precision="fp32", channels_last=False, name="tiny-test")


def test_fid_is_zero_against_itself_and_grows_with_noise() -> None:
    extractor = tiny_extractor()
    images = template_dataset(400).batch(torch.arange(400)).data["m0"]
    real = gaussian_statistics(extractor(images))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    fids = [fid_from_features(real, extractor(images + level * noise)) for level in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert fids[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in itertools.pairwise(fids)), fids


def test_model_fid_reports_every_set_and_its_sample_count() -> None:
    model = tiny_model(latent_dim=8)
    data = template_dataset(40)
    extractor = tiny_extractor()
    real = {m: gaussian_statistics(extractor(data.batch(torch.arange(40)).data[m])) for m in NAMES}
    result = model_fid(model, data, extractor, real.__getitem__, ["m0", "m2"], n=30, batch_size=16)
    assert result["samples"] == 30
    assert set(result["unconditional"]) == {"m0", "m2"} and set(result["by_size"]["m2"]) == {"1", "2"}
    assert all(v > 0 and math.isfinite(v) for v in result["unconditional"].values())


def test_inception_inputs_are_299_in_minus_one_to_one_with_grey_repeated() -> None:
    grey = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1).expand(2, 1, 28, 28)
    x = inception_inputs(grey)
    assert x.shape == (2, 3, 299, 299)
    torch.testing.assert_close(x[0], torch.full_like(x[0], -1.0))
    torch.testing.assert_close(x[1], torch.ones_like(x[1]))


# --------------------------------------------------------------------------------------------
# text


def test_levenshtein_hand_cases() -> None:
    pairs = [("kitten", "sitting", 3), ("seven", "seven", 0), ("", "one", 3), ("flaw", "lawn", 2), ("nien", "nine", 2)]
    distances = edit_distances([a for a, _, _ in pairs], [b for _, b, _ in pairs])
    assert distances.tolist() == [d for _, _, d in pairs]
    assert clean_text(" se ven \n", pad="_") == "seven" and clean_text("_one__", pad="_") == "one"


def test_text_scorer_cleans_decoded_tokens_and_compares_with_the_digit_word() -> None:
    tokens = encode_strings([" seven", "sevn    ", "  two  ", "eight"], 8)
    scores = text_scorer(decode_tokens)(tokens, torch.tensor([7, 7, 3, 8]))
    assert scores["exact_match"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert scores["distance"].tolist() == [0.0, 1.0, 4.0, 0.0]  # two -> three: 2 substitutions, 2 inserts


# --------------------------------------------------------------------------------------------
# probes and cosine similarity


def test_probes_read_separable_latents_and_not_random_ones() -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = torch.from_numpy(rng.integers(0, 2, 300)), torch.from_numpy(rng.integers(0, 2, 300))
    separable = lambda y: torch.from_numpy(rng.normal(size=(len(y), 4))) + 4.0 * y[:, None]
    noise = lambda: torch.from_numpy(rng.normal(size=(300, 4)))
    accuracy = probe_accuracies(torch.stack([separable(y_train), noise()]), y_train,
                                torch.stack([separable(y_test), noise()]), y_test)
    assert accuracy[0] == 1.0
    assert 0.35 < accuracy[1] < 0.65


def test_batched_probes_find_scikit_learns_solution() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 12))
    y = rng.integers(0, 4, 240)
    x = centres[y] + 1.5 * rng.normal(size=(240, 12)) + rng.normal(size=12) * 10  # overlapping, offset classes
    x2 = rng.normal(size=(240, 12)) * rng.uniform(0.1, 5.0, 12)  # a second problem: pure noise, uneven scales
    ours, intercepts = fit_logistic_regressions(
        standardise(torch.from_numpy(np.stack([x, x2])), torch.zeros(2, 1, 12))[0], torch.from_numpy(y), 4)
    for k, features in enumerate((x, x2)):
        reference = LogisticRegression(max_iter=10000, tol=1e-10).fit(StandardScaler().fit_transform(features), y)
        assert np.allclose(ours[k].numpy(), reference.coef_.T, atol=1e-4)
        assert np.allclose(intercepts[k].numpy(), reference.intercept_, atol=1e-4)


def test_latent_probes_of_the_oracle_encoder_are_perfect_for_every_subset() -> None:
    data = template_dataset(200)
    result = latent_probes(oracle_model(), data.subset(slice(0, 100)).batches(50), data.subset(slice(100, 200)).batches(50))
    assert result["train_examples"] == 100
    assert set(result["table"]) == set(subset_names(all_subsets(3), NAMES))
    assert result["by_size"] == {"1": 1.0, "2": 1.0, "3": 1.0}


def pairwise_cosine_sums(means: Tensor, mask: Tensor, shift: int = 0) -> tuple[float, int]:
    """:func:`example_cosines` summed over the batch: the total cosine and the number of terms."""
    total, count = example_cosines(means, mask, shift)
    return float(total.sum()), int(count.sum())


def test_pairwise_cosine_hand_case() -> None:
    means = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]], [[3.0, 3.0]]])  # [M=3, B=1, D=2]
    total, count = pairwise_cosine_sums(means, torch.ones(1, 3))
    assert count == 3 and total / count == pytest.approx(math.sqrt(2) / 3)
    total, count = pairwise_cosine_sums(means, torch.tensor([[1.0, 1.0, 0.0]]))
    assert (total, count) == (0.0, 1)


def test_pairwise_cosine_of_different_examples() -> None:
    means = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [M=2, B=2, D=2]
    assert pairwise_cosine_sums(means, torch.ones(2, 2)) == (2.0, 2)  # each example agrees with itself
    assert pairwise_cosine_sums(means, torch.ones(2, 2), shift=1) == (0.0, 2)  # orthogonal to its neighbour
    assert pairwise_cosine_sums(means, torch.tensor([[1.0, 1.0], [1.0, 0.0]]), shift=1) == (0.0, 1)


def test_latent_cosine_similarity_is_one_when_every_modality_agrees() -> None:
    similarity = latent_cosine_similarity(oracle_model(), template_dataset(50).batches(25))
    assert similarity.matched == pytest.approx(1.0)
    assert similarity.mismatched < 0.5  # about 0.1: only neighbours with the same label (1 in 10) agree
    assert similarity.examples == 50
    assert similarity.gap == pytest.approx(similarity.matched - similarity.mismatched)  # every example has one pair
    assert 0.0 < similarity.gap_stderr < similarity.gap / 3


def test_example_cosines_and_the_paired_gap_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    # M=2, B=3: example 0 agrees (cos 1), example 1 is orthogonal (cos 0), example 2 lacks modality 1
    means = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]], dtype=torch.bool)
    total, count = example_cosines(means, mask)
    assert total.tolist() == [1.0, 0.0, 0.0] and count.tolist() == [1, 1, 0]
    # shift 1: example b's modality 0 against example b-1's modality 1 (b-1 = 2 for b = 0, which lacks it)
    total, count = example_cosines(means, mask, shift=1)
    assert count.tolist() == [0, 1, 1] and total[1] == pytest.approx(0.0) and total[2] == pytest.approx(1 / math.sqrt(2))

    class Fixed(torch.nn.Module):  # stands in for a model whose unimodal posterior means are ``means``
        def __init__(self) -> None:
            super().__init__()
            self.modality_names = ["a", "b"]
            self.p = torch.nn.Parameter(torch.zeros(1))

    monkeypatch.setattr(similarity, "subset_posteriors", lambda model, data, mask, subsets: SubsetPosteriors(means, means))
    result = latent_cosine_similarity(Fixed(), [Batch({}, mask)])
    assert result.examples == 1  # only example 1 has both a matched and a mismatched pair
    assert result.gap == pytest.approx(0.0) and math.isnan(result.gap_stderr)
    assert result.matched == pytest.approx(0.5) and result.mismatched == pytest.approx((0.0 + 1 / math.sqrt(2)) / 2)


# --------------------------------------------------------------------------------------------
# classifier architectures


@pytest.mark.parametrize(("spec", "expected"), [
    (ModalitySpec("a", "image", (3, 28, 28)), "polymnist"),
    (ModalitySpec("a", "image", (1, 28, 28)), "mnist"),
    (ModalitySpec("a", "image", (3, 32, 32)), "svhn"),
    (ModalitySpec("a", "image", (3, 64, 64)), "conv_bn_maxpool"),
    (ModalitySpec("a", "tokens", (8,), 71), "text"),
    (ModalitySpec("a", "tokens", (32,), 1000), "generic_tokens"),
    (ModalitySpec("a", "vector", (5, 7)), "mlp"),
])
def test_classifier_for_picks_an_architecture_that_runs_on_the_shape(spec: ModalitySpec, expected: str) -> None:
    assert classifier_for(spec) == expected and expected in ARCHITECTURES
    net = build_classifier(expected, spec, 10).eval()
    x = torch.randint(0, spec.vocab_size, (4, *spec.shape)) if spec.kind == "tokens" else torch.rand(4, *spec.shape)
    assert net(x).shape == (4, 10)


def test_trace_sqrt_product_matches_a_general_matrix_square_root() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((40, 6)), rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    sigma1, sigma2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # full rank, not commuting
    expected = np.trace(np.real(scipy.linalg.sqrtm(sigma1 @ sigma2)))
    assert trace_sqrt_product(sigma1, sigma2) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------------------------
# latent usage: KL of the inference posteriors to the prior, and active units


def test_active_units_is_the_count_of_dimensions_with_variance_above_the_threshold() -> None:
    means = torch.tensor([[0.0, 1.0, 5.0], [0.05, 1.0, -5.0], [0.1, 1.0, 5.0], [0.0, 1.0, -5.0]], dtype=torch.float64)
    assert torch.var(means, 0).tolist() == pytest.approx([0.00229, 0.0, 33.333], rel=1e-3)
    assert active_units(torch.tensor(4.0), means.sum(0), means.square().sum(0)) == 1
    assert active_units(torch.tensor(4.0), means.sum(0), means.square().sum(0), threshold=0.001) == 2
    assert active_units(torch.tensor(1.0), means[0], means[0].square()) == 0


def test_hand_computed_kl_and_units_skip_examples_that_lack_the_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    # M = 2, B = 3, D = 2; rows: subsets {a}, {b}, {a, b}. Example 2 lacks modality b.
    mu = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0]],
                       [[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]],
                       [[1.0, 1.0], [-1.0, 1.0], [0.0, 0.0]]])
    logvar = torch.zeros_like(mu)
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]], dtype=torch.bool)

    class Fixed(nn.Module):
        modality_names = ["a", "b"]
        latent_dim = 2
        objective_config = type("Cfg", (), {"inference": "poe"})()

        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

    monkeypatch.setattr(usage, "subset_posteriors", lambda model, data, mask, subsets: SubsetPosteriors(mu, logvar))
    result = latent_usage(Fixed(), [Batch({}, mask)])
    # KL(N(mu, I) || N(0, I)) = |mu|^2 / 2
    assert result.kl_to_prior == pytest.approx({"a": (0.5 + 0.5 + 4.5) / 3, "b": (2.0 + 0.0) / 2, "a,b": (1.0 + 1.0) / 2})
    assert result.examples == {"a": 3, "b": 2, "a,b": 2}
    # a: dim 0 over (1, -1, 3) has variance 4, dim 1 none; b: dim 1 over (2, 0) varies; a,b: only dim 0 varies
    assert result.active_units == {"a": 1, "b": 1, "a,b": 1}
    entry = result.as_result("a,b")
    assert entry["unimodal"] == pytest.approx({"kl_mean": (5.5 / 3 + 1.0) / 2, "kl_min": 1.0,
                                               "active_units_mean": 1.0, "active_units_min": 1.0})
    assert entry["joint"] == {"kl": 1.0, "active_units": 1.0}


class CollapsedEncoder(nn.Module):
    """An expert with (almost) no precision: the PoE with the prior expert is the prior."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = torch.zeros(x.shape[0], 10)
        return mu, torch.full_like(mu, 30.0)


def test_an_informative_encoder_uses_the_latent_and_a_collapsed_one_does_not() -> None:
    data = template_dataset(200)
    oracle = latent_usage(oracle_model(), data.batches(64))
    joint = ",".join(NAMES)
    assert set(oracle.kl_to_prior) == {*NAMES, joint}
    # the oracle's one-hot means (5 at the label) vary in all 10 dimensions, with variance about 25 * 0.09
    assert all(units == 10 for units in oracle.active_units.values())
    assert all(kl > 10.0 for kl in oracle.kl_to_prior.values())
    collapsed_model = oracle_model()
    collapsed_model.encoders["m1"] = CollapsedEncoder()
    collapsed = latent_usage(collapsed_model, data.batches(64))
    assert collapsed.kl_to_prior["m1"] == pytest.approx(0.0, abs=1e-6) and collapsed.active_units["m1"] == 0
    assert collapsed.kl_to_prior["m0"] == pytest.approx(oracle.kl_to_prior["m0"])


def test_a_mixture_model_reports_no_joint_kl() -> None:
    model = tiny_model("mmvae")
    result = latent_usage(model, template_dataset(40).batches(20))
    joint = ",".join(NAMES)
    assert joint not in result.kl_to_prior and joint in result.active_units
    assert set(result.kl_to_prior) == set(NAMES) and all(v >= 0 for v in result.kl_to_prior.values())
    assert "kl" not in result.as_result(joint)["joint"]


# --------------------------------------------------------------------------------------------
# latents of a dataset


@pytest.mark.parametrize("objective", ["crmvae", "mmvae"])  # product of experts; mixture
def test_encoded_latents_are_each_subsets_posterior_mean(objective: str) -> None:
    model = tiny_model(objective, latent_dim=6)
    data = template_dataset(50)
    mask = torch.rand(50, 3, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[:, 1] |= ~mask.any(1)  # every example keeps a modality; some lack all of subset {m2} or {m0, m2}
    data = MultimodalDataset(data.tensors, list(data.specs.values()), data.labels, mask)
    subsets = [["m2"], ["m2", "m0"], ["m0", "m1", "m2"]]
    arrays = encode_dataset(model, data, subsets, batch_size=16)
    batch = data.batch(torch.arange(50))
    for subset, key in zip(subsets, ["m2", "m0,m2", "m0,m1,m2"]):
        posterior = model.posterior(batch.data, subset, batch.mask)
        torch.testing.assert_close(torch.from_numpy(arrays[f"mean:{key}"]), posterior.mean())
        if objective == "crmvae":
            torch.testing.assert_close(torch.from_numpy(arrays[f"logvar:{key}"]), posterior.logvar)
    assert ("logvar:m2" in arrays) is (objective == "crmvae")
    assert (arrays["present"] == mask.numpy()).all() and (arrays["labels"] == data.labels.numpy()).all()
    assert list(arrays["modalities"]) == NAMES
    with pytest.raises(ConfigError, match=r"subset 'm0,m9': unknown modalities \['m9'\]"):
        encode_dataset(model, data, [["m0", "m9"]])
    with pytest.raises(ConfigError, match=r"subsets repeated: \['m0,m1'\]"):
        encode_dataset(model, data, [["m0", "m1"], ["m1", "m0"]])
