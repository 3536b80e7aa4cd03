"""Typed configuration: dict round trips, files, overrides and presets."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import yaml

from crmvae.config import (
    DataConfig,
    ModalityConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    merge_values,
    missing_keys,
    parse_yaml,
    save_config,
    to_dict,
    warn_missing_keys,
)
from crmvae.errors import ConfigError
from crmvae.presets import PRESETS, build_run_config


def sample_run_config() -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="polymnist", root=None, train_size=100, params={"a": [1, 2]}),
        model=ModelConfig(
            modalities=[
                ModalityConfig("m0", [3, 28, 28]),
                ModalityConfig("text", [8], "some_net", "categorical", 1.0, 0.5, vocab_size=30),
            ],
            latent_dim=16,
            objective="mopoe",
            objective_params={"beta": 0.5, "estimator": "stratified"},
        ),
        train=TrainConfig(epochs=3, lr=1e-3, precision="bf16", threads=2),
    )


def test_dict_round_trip():
    cfg = sample_run_config()
    data = to_dict(cfg)
    assert data["model"]["modalities"][1]["vocab_size"] == 30
    assert from_dict(RunConfig, data) == cfg


def test_from_dict_fills_defaults_for_missing_keys():
    cfg = from_dict(RunConfig, {"train": {"epochs": 7}})
    assert cfg.train.epochs == 7 and cfg.train.lr == TrainConfig().lr and cfg.model == ModelConfig()


def test_from_dict_accepts_integer_for_float_field():
    cfg = from_dict(TrainConfig, {"lr": 1})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_and_load_round_trip(tmp_path, suffix):
    cfg = sample_run_config()
    path = tmp_path / f"config{suffix}"
    save_config(cfg, path)
    assert load_config(RunConfig, path) == cfg
    text = path.read_text()
    parsed = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert parsed == to_dict(cfg)


def test_load_accepts_exponent_notation_written_by_hand(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  lr: 1e-3\n")
    assert load_config(RunConfig, path).train.lr == pytest.approx(1e-3)


def test_missing_keys_names_every_default_taken_nested_and_in_lists():
    full = to_dict(sample_run_config())
    assert missing_keys(RunConfig, full) == []
    del full["train"]["lr"], full["model"]["modalities"][1]["likelihood"], full["data"]
    assert missing_keys(RunConfig, full) == ["data", "model.modalities[1].likelihood", "train.lr"]
    assert missing_keys(DataConfig, {"dataset": "x"}, "data.")[:2] == ["data.root", "data.data_dir"]


def test_merge_values_keeps_what_is_given_and_fills_the_rest():
    stored = {"a": 1, "b": {"c": 2, "d": 3}, "mods": [{"n": "x", "s": 1}, {"n": "y", "s": 2}], "l": [1, 2]}
    assert merge_values(stored, {"b": {"c": 9}, "mods": [{"s": 5}], "l": [7]}) == {
        "a": 1, "b": {"c": 9, "d": 3}, "mods": [{"n": "x", "s": 5}, {"n": "y", "s": 2}], "l": [7]}
    assert merge_values(stored, {}) == stored and merge_values({}, {"a": None}) == {"a": None}


def test_the_warning_names_the_missing_keys_and_where_their_values_come_from(caplog):
    with caplog.at_level("WARNING"):
        warn_missing_keys(RunConfig, {"train": {"lr": 0.001}}, "run/config.yaml", source="the values stored in ckpt")
        warn_missing_keys(RunConfig, to_dict(sample_run_config()), "whole.yaml")
    more = len(dataclasses.fields(TrainConfig)) + 1 - 8  # data, model and every train key but lr; 8 named
    assert [r.getMessage() for r in caplog.records] == [
        "run/config.yaml lacks data, model, train.epochs, train.batch_size, train.drop_last, train.eval_batch_size, "
        f"train.seed, train.device and {more} more (crmvae writes every key: was it cut short or edited?); they take "
        "the values stored in ckpt"]


def test_load_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, tmp_path / "nope.yaml")


def test_load_invalid_yaml_is_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(RunConfig, path)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"epochs": "ten"}}, r"RunConfig\.train\.epochs: expected an integer"),
        ({"train": {"epochs": True}}, r"train\.epochs: expected an integer"),
        ({"train": {"lr": "fast"}}, r"train\.lr: expected a number"),
        ({"train": {"precision": "fp16"}}, r"train\.precision: 'fp16' is not one of \['fp32', 'bf16', 'auto'\]"),
        ({"train": {"progress": "yes"}}, r"train\.progress: expected true or false"),
        ({"model": {"modalities": {"name": "m0"}}}, r"model\.modalities: expected a list"),
        ({"model": {"modalities": [{"shape": [3]}]}}, r"model\.modalities\[0\]"),
        ({"model": {"modalities": [{"name": "a", "shape": ["x"]}]}}, r"model\.modalities\[0\]\.shape\[0\]"),
        ({"train": {"epoch": 3}}, r"RunConfig\.train: unknown key\(s\) \['epoch'\]; allowed keys are .*'epochs'"),
        ({"train": 3}, r"train: expected a mapping"),
    ],
)
def test_from_dict_errors_name_the_bad_entry(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RunConfig, data)


# ---------------------------------------------------------------------------------------- overrides


def test_override_sets_nested_values_parsed_as_yaml():
    data = to_dict(RunConfig())
    apply_overrides(data, ["train.epochs=3", "train.lr=0.001", "data.root=null", "model.objective=mvae", "train.progress=false"])
    cfg = from_dict(RunConfig, data)
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.root, cfg.model.objective, cfg.train.progress) == (
        3, 0.001, None, "mvae", False
    )


def test_override_accepts_exponent_notation_for_floats():
    data = apply_overrides(to_dict(RunConfig()), ["train.lr=1e-3"])
    assert from_dict(RunConfig, data).train.lr == pytest.approx(1e-3)


def test_override_creates_key_inside_objective_params():
    data = apply_overrides(to_dict(RunConfig()), ["model.objective_params.beta=0.5", "model.objective_params.prior_expert=false"])
    assert from_dict(RunConfig, data).model.objective_params == {"beta": 0.5, "prior_expert": False}


def test_override_with_unknown_key_fails_on_conversion_with_allowed_keys():
    data = apply_overrides(to_dict(RunConfig()), ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['epoch'\]; allowed keys are .*'epochs'"):
        from_dict(RunConfig, data)


def test_override_with_bad_value_type_fails_on_conversion():
    data = apply_overrides(to_dict(RunConfig()), ["train.batch_size=big"])
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected an integer, got 'big'"):
        from_dict(RunConfig, data)


def test_override_through_a_non_section_is_config_error():
    with pytest.raises(ConfigError, match=r"train\.epochs is not a section \(sections here: .*\)"):
        apply_overrides(to_dict(RunConfig()), ["train.epochs.max=3"])


def test_override_through_unknown_section_is_config_error():
    with pytest.raises(ConfigError, match=r"trian is not a section .*'train'"):
        apply_overrides(to_dict(RunConfig()), ["trian.epochs=3"])


@pytest.mark.parametrize("item", ["train.epochs", "train..epochs=3", "=3"])
def test_malformed_override_is_config_error(item):
    with pytest.raises(ConfigError, match="override"):
        apply_overrides(to_dict(RunConfig()), [item])


# ---------------------------------------------------------------------------------------- presets

EXPECTED_PRESETS = {  # epochs, batch size, lr, beta
    ("polymnist", "paper"): (500, 256, 5e-4, 1.0),
    ("polymnist", "cpu-short"): (3, 128, 1e-3, 0.1),
    ("translated_polymnist", "paper"): (500, 256, 5e-4, 0.1),
    ("translated_polymnist", "cpu-short"): (3, 128, 1e-3, 0.1),
}


IMAGE_TEXT_PRESETS = {  # epochs, lr, text modality, its length, vocabulary, network (latent 64 throughout)
    ("scenes", "paper"): (150, 5e-4, "caption", 32, 55, "caption_conv"),
    ("scenes", "cpu-short"): (6, 1e-3, "caption", 32, 55, "caption_conv"),
    ("cub", "paper"): (150, 5e-4, "caption", 32, 55, "caption_conv"),
    ("cub", "cpu-short"): (6, 1e-3, "caption", 32, 55, "caption_conv"),
    ("celeba", "paper"): (200, 5e-4, "text", 256, 71, "generic_tokens"),
    ("celeba", "cpu-short"): (6, 1e-3, "text", 256, 71, "generic_tokens"),
}


def test_every_preset_is_covered():
    user = {("user", "paper"), ("user", "cpu-short")}  # need data files: tested in test_data_user.py
    user |= {("mnist_svhn_text", p) for p in ("paper", "paper-weighted", "cpu-short")}  # test_data_mnist_svhn_text.py
    assert {(d, p) for d in PRESETS for p in PRESETS[d]} == set(EXPECTED_PRESETS) | set(IMAGE_TEXT_PRESETS) | user


@pytest.mark.parametrize("dataset, preset", sorted(IMAGE_TEXT_PRESETS))
def test_image_text_presets(dataset, preset):
    cfg = build_run_config(dataset, "crmvae", preset)
    epochs, lr, text, length, vocab, network = IMAGE_TEXT_PRESETS[dataset, preset]
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.latent_dim) == (epochs, lr, 64)
    image, caption = cfg.model.modalities
    assert (image.name, image.shape, image.network, image.likelihood) == ("image", [3, 64, 64], "images64_conv", "laplace")
    assert (caption.name, caption.shape, caption.vocab_size) == (text, [length], vocab)
    assert (caption.network, caption.likelihood) == (network, "categorical")
    # only the CelebA form's short run puts every text at start 0 (the reference draws a random start)
    assert cfg.data.params == ({"random_text_start": False} if (dataset, preset) == ("celeba", "cpu-short") else {})


@pytest.mark.parametrize("dataset, preset", sorted(EXPECTED_PRESETS))
def test_build_run_config_for_each_preset(dataset, preset):
    cfg = build_run_config(dataset, "crmvae", preset)
    epochs, batch_size, lr, beta = EXPECTED_PRESETS[dataset, preset]
    assert isinstance(cfg, RunConfig)
    assert cfg.data.dataset == dataset
    assert cfg.train.epochs == epochs and cfg.train.batch_size == batch_size and cfg.train.lr == lr
    assert cfg.model.latent_dim == 512 and cfg.model.objective_params == {"beta": beta}
    assert [m.name for m in cfg.model.modalities] == [f"m{i}" for i in range(5)]
    assert all(m.shape == [3, 28, 28] and m.likelihood == "laplace" for m in cfg.model.modalities)


def test_build_run_config_normalises_model_name_and_applies_overrides():
    cfg = build_run_config("polymnist", "MMJSD-PoE", "cpu-short", ["train.epochs=1", "model.objective_params.beta=2.0"])
    assert cfg.model.objective == "mmjsd_poe"
    assert cfg.train.epochs == 1 and cfg.model.objective_params == {"beta": 2.0}


def test_presets_are_not_mutated_by_overrides():
    build_run_config("polymnist", "crmvae", "paper", ["model.objective_params.beta=3.0"])
    assert build_run_config("polymnist", "crmvae", "paper").model.objective_params == {"beta": 1.0}


@pytest.mark.parametrize(
    "args, message",
    [
        (("imagenet", "crmvae", "paper"), r"no presets for dataset 'imagenet'; available: \[.*'polymnist'.*\]"),
        (("polymnist", "crmvae", "fast"), r"unknown preset 'fast' .*\['cpu-short', 'paper'\]"),
        (("polymnist", "vae", "paper"), r"unknown model/objective 'vae'"),
    ],
)
def test_build_run_config_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        build_run_config(*args)


@pytest.mark.parametrize(("text", "value"), [
    ("1e-6", 1e-6), ("-1E+3", -1000.0), ("1.5e-3", 0.0015), ("2", 2), ("0.5", 0.5), ("1e", "1e"), ("e5", "e5"),
    ('"1e-6"', "1e-6"), ("{eps: 1e-7, amsgrad: true}", {"eps": 1e-7, "amsgrad": True}), ("[1e-3, 2]", [0.001, 2]),
])
def test_yaml_reads_exponents_without_a_dot_as_numbers(text: str, value: Any) -> None:
    """PyYAML's YAML 1.1 reads ``1e-6`` as a string, so a free-form mapping such as
    ``train.optimizer_params`` would pass a string to torch; YAML 1.2 and JSON read a number."""
    assert parse_yaml(text) == value and type(parse_yaml(text)) is type(value)
    assert apply_overrides({"train": {}}, [f"train.x={text}"])["train"]["x"] == value
