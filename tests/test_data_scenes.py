"""Captioned scenes: determinism, rendering, captions that state the true attributes, loading,
and a few training steps."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from crmvae.config import DataConfig
from crmvae.data import load_dataset
from crmvae.data.base import ModalitySpec, MultimodalDataset
from crmvae.data.scenes import (
    ATTRIBUTE_NAMES,
    CENTRES,
    COLOURS,
    SCENE_VOCABULARY,
    generate_scenes,
    parse_caption,
    sample_attributes,
    shape_masks,
    write_caption,
)
from crmvae.errors import ConfigError, DataError
from crmvae.presets import build_run_config
from crmvae.training import train

PALETTE = np.array(list(COLOURS.values()), dtype=np.int64)


@pytest.fixture(scope="module")
def scenes() -> dict[str, torch.Tensor]:
    return generate_scenes(300, [0, 0])


def test_same_seed_same_scenes_other_seed_other_scenes(scenes) -> None:
    again = generate_scenes(300, [0, 0])
    assert all(torch.equal(scenes[k], again[k]) for k in scenes)
    other = generate_scenes(300, [1, 0])
    assert not torch.equal(scenes["image"], other["image"])
    assert not torch.equal(scenes["attributes"], other["attributes"])


def test_shapes_dtypes_and_attribute_rules(scenes) -> None:
    assert scenes["image"].shape == (300, 3, 64, 64) and scenes["image"].dtype == torch.uint8
    assert scenes["caption"].shape == (300, 32) and scenes["caption"].dtype == torch.int64
    a = scenes["attributes"].numpy()
    assert a.shape == (300, len(ATTRIBUTE_NAMES))
    assert torch.equal(scenes["labels"], scenes["attributes"][:, 1])
    one, two = a[:, 0] == 1, a[:, 0] == 2
    assert one.any() and two.any() and (one | two).all()
    assert (a[one, 5:9] == -1).all() and (a[two, 5:9] >= 0).all()
    assert (a[two, 3] == 1).all() and (a[two, 7] == 0).all()  # main large, second small
    assert (a[two, 4] != a[two, 8]).all() and (a[two, 4] < 4).all()  # distinct, not centre
    assert (a[:, 2] != a[:, 9]).all() and (a[two, 6] != a[two, 9]).all()  # never the bg colour
    assert (scenes["caption"] == SCENE_VOCABULARY.index["<eos>"]).sum(1).eq(1).all()  # no cut
    assert (scenes["caption"] != SCENE_VOCABULARY.index["<exc>"]).all()


def test_every_caption_states_the_true_attributes(scenes) -> None:
    texts = SCENE_VOCABULARY.decode(scenes["caption"])
    for text, row in zip(texts, scenes["attributes"].tolist(), strict=True):
        parsed = parse_caption(text)
        assert [parsed[k] for k in ATTRIBUTE_NAMES] == row, text
    assert len({t.split()[0] for t in texts}) >= 4  # varied wording and order


def test_caption_known_answers() -> None:
    attrs = np.array([1, 0, 2, 0, 0, -1, -1, -1, -1, 4, 0])  # small red circle, left, plain blue
    assert write_caption(attrs, np.zeros(10)) == "a small red circle on the left over a plain blue background"
    choice = np.array([0.2, 0.4, 0, 0, 0, 0, 0, 0, 0, 0])  # second caption and object form
    assert write_caption(attrs, choice) == "plain blue background ; there is a red circle , small , on the left"


def test_parse_caption_reads_unseen_wording_and_reports_missing_fields() -> None:
    parsed = parse_caption("A big GREEN star at the top, over a dotted black background.")
    assert parsed["shape"] == 3 and parsed["colour"] == 3 and parsed["size"] == 1
    assert parsed["position"] == 2 and parsed["background"] == 0 and parsed["texture"] == 3
    assert parse_caption("nothing here")["shape"] == -1


def test_masks_match_their_closed_forms() -> None:
    centre = np.array([[32.0, 32.0]] * 2, dtype=np.float32)
    radius = np.array([10.0, 10.0], dtype=np.float32)
    circle, square = shape_masks(np.array([0, 1]), centre, radius)
    assert abs(int(circle.sum()) - math.pi * 100) < 0.05 * math.pi * 100
    assert int(square.sum()) == 17 * 17  # |d| <= 8.5 on the integer grid
    assert circle[32, 32] and not circle[32, 43] and circle[32, 42]


def test_pixels_show_the_stated_colours(scenes) -> None:
    a = scenes["attributes"].numpy()
    img = scenes["image"].numpy().astype(np.int64)
    centre = CENTRES[a[:, 4]].astype(int)
    at_centre = img[np.arange(len(a)), :, centre[:, 0], centre[:, 1]]
    assert np.abs(at_centre - PALETTE[a[:, 2]]).max() <= 30  # main object on top (noise std 5)
    corner = img[:, :, 0, 0]  # every texture shows the plain colour at (0, 0)
    assert np.abs(corner - PALETTE[a[:, 9]]).max() <= 30


def test_sample_attributes_is_uniform_enough() -> None:
    a = sample_attributes(20000, np.random.default_rng(0))
    for col, k in ((1, 5), (9, 8), (10, 4)):
        freq = np.bincount(a[:, col], minlength=k) / len(a)
        assert np.abs(freq - 1 / k).max() < 0.02


def test_provider_loads_caches_and_subsets(tmp_path: Path) -> None:
    cfg = DataConfig("scenes", data_dir=str(tmp_path), params={"num_train": 40, "num_test": 8}, train_size=30)
    train_set = load_dataset(cfg, "train")
    assert len(train_set) == 30 and train_set.attribute_names == list(ATTRIBUTE_NAMES)
    assert train_set.attributes.shape == (30, 11) and train_set.specs["caption"].vocab_size == len(SCENE_VOCABULARY)
    assert len(list(tmp_path.glob("scenes-train-*.json"))) == 1
    again = load_dataset(cfg, "train")  # from the cache
    assert torch.equal(again.tensors["image"], train_set.tensors["image"])
    part = train_set.subset(torch.tensor([3, 5]))
    assert torch.equal(part.attributes, train_set.attributes[[3, 5]])
    assert torch.equal(generate_scenes(40, [0, 0])["caption"][:30], train_set.tensors["caption"])
    batch = train_set.batch(torch.arange(4))
    assert batch.data["image"].dtype == torch.float32 and batch.data["caption"].dtype == torch.int64


def test_scenes_reject_a_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="generated offline"):
        load_dataset(DataConfig("scenes", root=str(tmp_path), data_dir=str(tmp_path)), "train")


def test_a_few_training_steps_on_tiny_scenes(tmp_path: Path) -> None:
    cfg = build_run_config("scenes", "crmvae", "cpu-short", [
        f"data.data_dir={tmp_path / 'data'}", "data.params.num_train=48", "data.params.num_test=16",
        "data.train_size=null", "data.test_size=null", "model.latent_dim=8", "train.batch_size=16",
        "train.epochs=1", "train.grid_examples=2", "train.progress=false", "train.threads=1",
    ])  # fmt: skip
    result = train(cfg, tmp_path / "run")
    assert result.global_step == 3
    assert math.isfinite(result.metrics["test_loss"])
    # the caption term is a categorical NLL over 32 tokens: about 32 log(55) = 128 untrained
    assert 0 < result.metrics["test/rec/self/caption"] < 32 * math.log(len(SCENE_VOCABULARY)) + 5


def test_dataset_attributes_are_checked() -> None:
    spec = [ModalitySpec("v", "vector", (2,))]
    x = {"v": torch.zeros(3, 2)}
    with pytest.raises(DataError, match=r"attributes have shape \(2, 1\), expected \(3, A\)"):
        MultimodalDataset(x, spec, attributes=torch.zeros(2, 1, dtype=torch.int64), attribute_names=["a"])
    with pytest.raises(DataError, match="must be integer or bool"):
        MultimodalDataset(x, spec, attributes=torch.zeros(3, 1), attribute_names=["a"])
    with pytest.raises(DataError, match="2 attribute columns need as many attribute_names, got 1"):
        MultimodalDataset(x, spec, attributes=torch.zeros(3, 2, dtype=torch.bool), attribute_names=["a"])
