"""Coherence classifiers: training learns, the cache is reused and keyed, weak ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crmvae.config import DataConfig
from crmvae.data import ModalitySpec, MultimodalDataset
from crmvae.errors import ConfigError
from crmvae.evaluation import classifiers as clf
from crmvae.evaluation.classifiers import (
    ClassifierConfig,
    check_classifiers,
    classifier_accuracy,
    classifier_cache_path,
    classifier_for,
    classifier_threshold,
    load_or_train_classifiers,
    train_classifiers,
)
from crmvae.training import progress

QUICK = ClassifierConfig(epochs=1, train_size=128, batch_size=64)


@pytest.fixture(scope="module")
def digits(data_dir: Path) -> DataConfig:
    return DataConfig("polymnist", data_dir=str(data_dir), params={"source": "digits"})


def test_training_learns_a_separable_task() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (600,), generator=g)
    vectors = torch.randn(600, 6, generator=g) * 0.3 + torch.nn.functional.one_hot(labels, 6).float() * 2
    spec = ModalitySpec("v", "vector", (6,))
    data = MultimodalDataset({"v": vectors}, [spec], labels)
    train, test = data.subset(slice(0, 400)), data.subset(slice(400, 600))
    nets = train_classifiers(train, {"v": classifier_for(spec)}, 4, ClassifierConfig(epochs=5, batch_size=32))
    assert classifier_accuracy(clf.Classifier(spec, "mlp", nets["v"], 4, 0.0), test) > 0.95
    torch.manual_seed(0)  # a random initialisation can separate this task by chance
    untrained = clf.Classifier(spec, "mlp", clf.build_classifier("mlp", spec, 4), 4, 0.0)
    assert classifier_accuracy(untrained, test) < 0.6


def test_training_off_a_terminal_writes_progress_lines_with_the_epoch_loss(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where stderr is not a terminal, progress comes as plain lines (here one per step, and one at
    the end) that carry the last finished epoch's mean cross-entropy per modality; on a learnable
    task it falls."""
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    vectors = torch.randn(400, 6, generator=g) * 0.3 + torch.nn.functional.one_hot(labels, 6).float() * 2
    spec = ModalitySpec("v", "vector", (6,))
    data = MultimodalDataset({"v": vectors}, [spec], labels)
    train_classifiers(data, {"v": "mlp"}, 4, ClassifierConfig(epochs=3, batch_size=32), progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 40  # 13 batches of 32 (the last of 16) x 3 epochs, then the final loss
    assert lines[0].startswith("classifiers: 1/39 (3%) ") and " it/s ETA " in lines[0]
    assert lines[-2].startswith("classifiers: 39/39 (100%) ") and "| epoch 2/3 loss/v " in lines[-2]
    assert lines[-1].startswith("classifiers: 39/39 (100%) ") and "ETA 0:00:00 | epoch 3/3 loss/v " in lines[-1]
    after_epoch_1 = [line for line in lines if "| epoch 1/3 " in line]
    assert len(after_epoch_1) == 13
    losses = [float(line.split("loss/v ")[1]) for line in (after_epoch_1[0], lines[-1])]
    assert losses[1] < losses[0]
    train_classifiers(data, {"v": "mlp"}, 4, ClassifierConfig(epochs=1, batch_size=32), progress=False)
    assert capsys.readouterr().err == ""


def test_the_image_classifier_finds_the_main_shape_on_textured_scenes() -> None:
    """The generic image classifier learns the scenes' main shape (5 classes, chance 0.2) from
    1,500 scenes in 3 epochs; the plain conv stack with an average pool it replaced stayed at
    chance (0.24 after 3 epochs of 10,000)."""
    from crmvae.data.scenes import generate_scenes, scenes_dataset

    data = scenes_dataset(generate_scenes(1800, [0, 7]), "scenes")
    train, test = data.subset(slice(0, 1500)), data.subset(slice(1500, 1800))
    spec = data.specs["image"]
    assert classifier_for(spec, "scenes") == "conv_bn_maxpool"
    nets = train_classifiers(train, {"image": "conv_bn_maxpool"}, 5, ClassifierConfig(epochs=3, batch_size=32))
    assert classifier_accuracy(clf.Classifier(spec, "conv_bn_maxpool", nets["image"], 5, 0.0), test) > 0.5


def test_translated_digits_get_a_translation_invariant_classifier_and_their_own_epochs(digits: DataConfig) -> None:
    spec = ModalitySpec("m0", "image", (3, 28, 28))
    assert classifier_for(spec, "polymnist") == classifier_for(spec) == "polymnist"
    assert classifier_for(spec, "translated_polymnist") == "conv_bn_maxpool"
    assert ClassifierConfig().for_dataset("translated_polymnist").epochs == 5
    assert ClassifierConfig().for_dataset("mnist_svhn_text").epochs == 1
    assert ClassifierConfig().for_dataset("polymnist").epochs == 12
    assert ClassifierConfig(epochs=3).for_dataset("translated_polymnist").epochs == 3
    archs = {f"m{k}": "polymnist" for k in range(5)}  # unset epochs share the cache entry of their resolved value
    assert classifier_cache_path(digits, ClassifierConfig(), archs) == classifier_cache_path(digits, ClassifierConfig(epochs=12), archs)


def test_classifiers_are_cached_beside_the_data_and_reused(digits: DataConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained or loaded, the classifiers leave the global RNG as they found it (an evaluation
    draws its samples from it after getting them)."""
    rng = torch.get_rng_state()
    first = load_or_train_classifiers(digits, QUICK)
    assert torch.equal(torch.get_rng_state(), rng)
    assert sorted(first) == [f"m{k}" for k in range(5)]
    path = classifier_cache_path(digits, QUICK, {m: "polymnist" for m in first})
    assert path.is_file() and path.parent == Path(digits.data_dir)
    assert torch.load(path, weights_only=True)["classifiers"]["m0"]["test_accuracy"] == first["m0"].test_accuracy

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached classifiers should have been reused")

    monkeypatch.setattr(clf, "train_classifiers", fail)
    again = load_or_train_classifiers(digits, QUICK)
    assert torch.equal(torch.get_rng_state(), rng)
    assert {m: c.test_accuracy for m, c in again.items()} == {m: c.test_accuracy for m, c in first.items()}
    x = torch.rand(8, 3, 28, 28)
    assert torch.equal(again["m3"].predict(x), first["m3"].predict(x))
    other = ClassifierConfig(epochs=2, train_size=128, batch_size=64)
    assert classifier_cache_path(digits, other, {m: "polymnist" for m in first}) != path
    with pytest.raises(AssertionError, match="reused"):  # other settings: a new entry is trained
        load_or_train_classifiers(digits, other)


def test_an_unreadable_cache_entry_is_retrained(digits: DataConfig) -> None:
    path = classifier_cache_path(digits, QUICK, {f"m{k}": "polymnist" for k in range(5)})
    load_or_train_classifiers(digits, QUICK)
    path.write_bytes(b"not a torch file")
    assert len(load_or_train_classifiers(digits, QUICK)) == 5
    assert torch.load(path, weights_only=True)["format"] == "crmvae-eval-cache"


def _damage_entry(payload: dict, case: str) -> dict:
    entries = dict(payload["classifiers"])
    if case == "a modality missing":
        del entries["m4"]
    elif case == "weights of another shape":
        state = dict(entries["m0"]["state"])
        name = next(iter(state))
        state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])
        entries["m0"] = {**entries["m0"], "state": state}
    else:  # an accuracy that is not one
        entries["m1"] = {**entries["m1"], "test_accuracy": "0.99"}
    return {**payload, "classifiers": entries}


@pytest.mark.parametrize("case", ["a modality missing", "weights of another shape", "an accuracy that is not one"])
def test_a_cache_of_the_right_format_but_damaged_is_retrained(
    digits: DataConfig, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = classifier_cache_path(digits, QUICK, {f"m{k}": "polymnist" for k in range(5)})
    load_or_train_classifiers(digits, QUICK)
    torch.save(_damage_entry(torch.load(path, weights_only=True), case), path)
    with caplog.at_level("WARNING", logger="crmvae"):
        again = load_or_train_classifiers(digits, QUICK)
    assert f"evaluation cache {path} holds unusable contents" in caplog.text
    assert sorted(again) == [f"m{k}" for k in range(5)]
    assert all(isinstance(c.test_accuracy, float) for c in again.values())
    assert sorted(torch.load(path, weights_only=True)["classifiers"]) == sorted(again)  # rewritten whole


@pytest.mark.parametrize("damage", [
    lambda p: {k: v for k, v in p.items() if k != "sigma"},
    lambda p: {**p, "sigma": p["sigma"][:-1]},
    lambda p: {**p, "mu": torch.full_like(p["mu"], float("nan"))},
], ids=["no sigma", "sigma of another shape", "NaN mean"])
def test_damaged_fid_statistics_are_computed_again(digits: DataConfig, damage, caplog: pytest.LogCaptureFixture) -> None:
    from crmvae.data import load_dataset
    from crmvae.evaluation.cache import cache_file
    from crmvae.evaluation.fid import cached_real_statistics
    from test_evaluation_metrics import tiny_extractor

    extractor, test = tiny_extractor(), load_dataset(digits, "test")
    mu, sigma = cached_real_statistics(digits, "test", test, extractor, "m0", 64)
    path = cache_file(digits, "fid-stats", {"split": "test", "modality": "m0", "n": 64, "features": extractor.identity})
    torch.save(damage(torch.load(path, weights_only=True)), path)
    with caplog.at_level("WARNING", logger="crmvae"):
        again = cached_real_statistics(digits, "test", test, extractor, "m0", 64)
    assert f"evaluation cache {path} holds unusable contents" in caplog.text
    assert (again[0] == mu).all() and (again[1] == sigma).all()


def test_fid_statistics_with_a_flipped_bit_are_computed_again(digits: DataConfig, caplog: pytest.LogCaptureFixture) -> None:
    from crmvae.data import load_dataset
    from crmvae.evaluation.cache import cache_file
    from crmvae.evaluation.fid import cached_real_statistics
    from test_evaluation_metrics import tiny_extractor
    from test_faults import flip_a_weight_bit

    extractor, test = tiny_extractor(), load_dataset(digits, "test")
    mu, sigma = cached_real_statistics(digits, "test", test, extractor, "m0", 64)
    path = cache_file(digits, "fid-stats", {"split": "test", "modality": "m0", "n": 64, "features": extractor.identity})
    path.write_bytes(flip_a_weight_bit(path.read_bytes()))
    with caplog.at_level("WARNING", logger="crmvae"):
        again = cached_real_statistics(digits, "test", test, extractor, "m0", 64)
    assert f"evaluation cache {path} is unreadable" in caplog.text and "CRC-32" in caplog.text
    assert (again[0] == mu).all() and (again[1] == sigma).all()


def test_weak_classifiers_are_refused(digits: DataConfig) -> None:
    classifiers = load_or_train_classifiers(digits, QUICK)
    best = max(c.test_accuracy for c in classifiers.values())
    check_classifiers(classifiers, 0.0, "polymnist")
    with pytest.raises(ConfigError, match=r"below the threshold 0\.99.*classifier_thresholds\['polymnist'\]"):
        check_classifiers(classifiers, 0.99, "polymnist")
    assert best < 0.99  # one quick epoch on 128 examples


def test_thresholds_are_per_dataset_with_a_default() -> None:
    thresholds = {"polymnist": 0.95, "default": 0.5}
    assert classifier_threshold("polymnist", thresholds) == 0.95
    assert classifier_threshold("cub", thresholds) == 0.5
    with pytest.raises(ConfigError, match="no classifier threshold"):
        classifier_threshold("cub", {"polymnist": 0.95})


@pytest.mark.parametrize(("setting", "message"), [
    ({"epochs": 0}, r"eval\.classifier\.epochs must be >= 1 or null, got 0"),
    ({"train_size": -5}, r"eval\.classifier\.train_size must be >= 1 or null, got -5"),
    ({"lr": 0.0}, r"eval\.classifier\.lr must be > 0, got 0\.0"),
])
def test_bad_classifier_settings_are_refused_before_any_training(
    digits: DataConfig, setting: dict[str, float], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmvae.evaluation.evaluate import EvalConfig, evaluate_model
    from crmvae.model import MultimodalVAE
    from crmvae.presets import build_run_config

    with pytest.raises(ConfigError, match=message):  # when the configuration is built
        ClassifierConfig(**setting)  # type: ignore[arg-type]
    monkeypatch.setattr(clf, "train_classifiers", lambda *a, **k: pytest.fail("trained despite a bad setting"))
    model = MultimodalVAE(build_run_config("polymnist", "crmvae", "cpu-short", ["model.latent_dim=4"]).model)
    config = EvalConfig(metrics=["coherence"], progress=False)
    for key, value in setting.items():  # and when it was changed afterwards
        setattr(config.classifier, key, value)
    with pytest.raises(ConfigError, match=message):
        evaluate_model(model, digits, config)
