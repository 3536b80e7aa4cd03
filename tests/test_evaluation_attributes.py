"""Attribute coherence: hand cases, parsers that read the true texts back exactly, and the metric
end to end on tiny scenes and CelebA stand-ins."""

from pathlib import Path

import pytest
import torch

from crmvae.config import DataConfig
from crmvae.data import load_dataset
from crmvae.data.base import ModalitySpec, MultimodalDataset
from crmvae.errors import ConfigError, DataError
from crmvae.evaluation.attributes import (
    agreement,
    attribute_scorer,
    majority_baseline,
    majority_rates,
    per_attribute_accuracy,
)
from crmvae.evaluation.evaluate import EvalConfig, evaluate_model, resolve_metrics
from crmvae.model import MultimodalVAE
from crmvae.presets import build_run_config

TINY = {"num_train": 40, "num_test": 24}


def test_agreement_counts_only_stated_attributes() -> None:
    truth = torch.tensor([[1, 2, -1], [0, -1, -1], [-1, -1, -1]])
    predicted = torch.tensor([[1, 0, 5], [0, 3, 3], [1, 1, 1]])
    assert agreement(predicted, truth).tolist() == [0.5, 1.0, 0.0]


def test_majority_baseline_hand_case() -> None:
    attributes = torch.tensor([[0, 1], [0, -1], [1, 1], [0, 0]])  # majorities 0 and 1
    assert majority_baseline(attributes) == pytest.approx((1.0 + 1.0 + 0.5 + 0.5) / 4)
    assert majority_rates(attributes, ["a", "b"]) == pytest.approx({"a": 3 / 4, "b": 2 / 3})


def test_per_attribute_accuracy_counts_only_the_examples_that_state_it() -> None:
    truth = torch.tensor([[1, 2, -1], [0, -1, -1], [1, 3, -1], [1, 3, -1]])
    texts = torch.tensor([[1, 0, 5], [0, 3, 3], [0, 3, 0], [1, 3, 1]])  # parsed back as they are
    score = attribute_scorer(lambda t: t, lambda parsed: parsed, ["a", "b", "c"])(texts, truth)
    means = {k: float(v.float().mean()) for k, v in score.items()}
    assert per_attribute_accuracy(means, ["a", "b", "c"]) == pytest.approx({"a": 3 / 4, "b": 2 / 3})  # "c": never stated
    assert score["attributes"].tolist() == pytest.approx([0.5, 1.0, 0.5, 1.0])


@pytest.mark.parametrize(("dataset", "text"), [("scenes", "caption"), ("cub", "caption"), ("celeba", "text")])
def test_the_true_texts_score_one_and_scrambled_ones_less(tmp_path: Path, dataset: str, text: str) -> None:
    data = load_dataset(DataConfig(dataset, data_dir=str(tmp_path), params=TINY), "test")
    score = attribute_scorer(data.text_decoders[text], data.attribute_parsers[text], data.attribute_names)
    tokens = data.tensors[text]
    assert torch.equal(score(tokens, data.attributes)["attributes"], torch.ones(len(data)))
    scrambled = score(tokens.roll(1, 0), data.attributes)["attributes"]
    assert scrambled.mean() < 0.95


def test_attribute_metric_end_to_end_on_scenes(tmp_path: Path) -> None:
    cfg = build_run_config("scenes", "crmvae", "cpu-short", [
        f"data.data_dir={tmp_path}", "data.params.num_train=40", "data.params.num_test=24", "model.latent_dim=4",
    ])  # fmt: skip
    torch.manual_seed(0)
    model = MultimodalVAE(cfg.model)
    results = evaluate_model(model, cfg.data, EvalConfig(metrics=["attributes", "similarity"], batch_size=8, progress=False))
    attributes = results["attribute_coherence"]
    assert set(attributes["table"]) == {"caption"} and list(attributes["table"]["caption"]) == ["image"]
    assert 0.0 <= attributes["by_size"]["1"] <= 1.0
    assert 0.0 < attributes["majority_baseline"] < 1.0
    per_attribute = attributes["per_attribute"]["caption"]["image"]
    assert set(per_attribute) <= set(attributes["per_attribute_majority"]) and "shape" in per_attribute
    assert all(0.0 <= v <= 1.0 for v in per_attribute.values())
    assert -1.0 <= results["cosine_similarity_mismatched"] <= 1.0


def test_attribute_parsers_need_attributes_and_a_text_decoder() -> None:
    specs = [ModalitySpec("image", "image", (3, 4, 4)), ModalitySpec("caption", "tokens", (3,), 5)]
    tensors = {"image": torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "caption": torch.zeros(2, 3, dtype=torch.int64)}
    parse = lambda texts: torch.zeros(len(texts), 1, dtype=torch.int64)
    with pytest.raises(DataError, match=r"d: attribute parsers need .* no decoder for \['caption'\]"):
        MultimodalDataset(tensors, specs, name="d", attributes=torch.zeros(2, 1, dtype=torch.int64), attribute_names=["a"],
                          attribute_parsers={"caption": parse})
    with pytest.raises(DataError, match=r"d: attribute parsers need attributes"):
        MultimodalDataset(tensors, specs, name="d", text_decoders={"caption": lambda t: ["x"] * len(t)},
                          attribute_parsers={"caption": parse})


def test_metrics_that_do_not_apply_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = EvalConfig(metrics=["coherence", "attributes", "similarity"])
    assert resolve_metrics(config, labelled=False, attribute_texts=False) == ["similarity"]
    assert "no labels: skipping ['coherence']" in caplog.text and "skipping ['attributes']" in caplog.text
    assert resolve_metrics(config, labelled=True, attribute_texts=True) == ["coherence", "attributes", "similarity"]
    assert resolve_metrics(EvalConfig(), labelled=False, attribute_texts=True) == ["similarity", "fid", "attributes"]
    with pytest.raises(ConfigError, match=r"unknown metrics \['colour'\]"):
        resolve_metrics(EvalConfig(metrics=["colour"]), labelled=True)
