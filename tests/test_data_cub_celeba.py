"""CUB and Bimodal CelebA loaders on tiny fixtures written in the release layouts, and every
damage case they must report (file, modality, expectation); the scenes stand-ins served without
``data.root``."""

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crmvae.cli import main
from crmvae.config import DataConfig
from crmvae.data import load_dataset
from crmvae.data.celeba import (
    TEXT_LENGTH,
    attribute_text,
    binary_attributes,
    decode_text,
)
from crmvae.data.cub import load_vocabulary
from crmvae.data.scenes import SCENE_VOCABULARY, standin_notice
from crmvae.data.text import decode_tokens
from crmvae.errors import ConfigError, DataError
from crmvae.presets import build_run_config
from crmvae.training import check_dataset, train

# ------------------------------------------------------------------------------------ CUB

CUB_COLOURS = {"train": [(200, 30, 30), (30, 200, 30), (30, 30, 200)], "test": [(90, 90, 90)]}
COMMON = "a small bird with red wings ."  # every caption: > 3 occurrences in train


def write_cub(root: Path, per_image: int = 10) -> Path:
    """``root/cub``: 3 train images in 2 classes, 1 test image, ``per_image`` captions each."""
    base = root / "cub"
    for split, colours in CUB_COLOURS.items():
        lines = []
        for i, colour in enumerate(colours):
            folder = base / split / f"{i // 2:03d}.class"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (100, 80), colour).save(folder / f"img_{i}.jpg", quality=95)
            lines += [f"{COMMON} image{i} line{j}" for j in range(per_image)]
        lines[0] += " zebra"  # a rare word (< 4 occurrences)
        (base / f"text_{'trainval' if split == 'train' else 'test'}classes.txt").write_text("\n".join(lines) + "\n")
    return base


def cub_config(root: Path, data_dir: Path, **params) -> DataConfig:
    return DataConfig("cub", root=str(root), data_dir=str(data_dir), params=params)


def test_cub_loads_pairs_each_caption_with_its_image(tmp_path: Path) -> None:
    write_cub(tmp_path)
    train = load_dataset(cub_config(tmp_path, tmp_path / "cache"), "train")
    assert len(train) == 30 and train.labels is None
    image, caption = train.tensors["image"], train.tensors["caption"]
    assert image.shape == (30, 3, 64, 64) and caption.shape == (30, 32)
    # caption j belongs to image j // 10, and the image is the resized solid colour
    means = image.float().mean((2, 3))
    expected = torch.tensor(CUB_COLOURS["train"], dtype=torch.float32).repeat_interleave(10, 0)
    assert (means - expected).abs().max() < 3
    vocab = load_vocabulary(tmp_path)
    # "image0" occurs 10 times (kept), "line3" 3 times in train (excluded), "zebra" once
    assert "image0" in vocab.index and "line3" not in vocab.index and "zebra" not in vocab.index
    assert train.specs["caption"].vocab_size == len(vocab)
    texts = vocab.decode(caption)
    assert texts[0] == f"{COMMON} image0 <exc> <exc>"  # line0 (3 times) and zebra are rare
    assert texts[13] == f"{COMMON} image1 <exc>"
    test = load_dataset(cub_config(tmp_path, tmp_path / "cache"), "test")
    assert len(test) == 10 and vocab.decode(test.tensors["caption"][:1]) == [f"{COMMON} image0 <exc> <exc>"]


def test_cub_captions_per_image_and_cache(tmp_path: Path) -> None:
    write_cub(tmp_path, per_image=2)
    cfg = cub_config(tmp_path, tmp_path / "cache", captions_per_image=2)
    first = load_dataset(cfg, "train")
    assert len(first) == 6 and len(list((tmp_path / "cache").glob("cub-train-*.json"))) == 1
    assert torch.equal(load_dataset(cfg, "train").tensors["caption"], first.tensors["caption"])


def _drop_line(path: Path) -> None:
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a jpeg")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: _drop_line(b / "text_trainvalclasses.txt"), r"29 captions for 3 images.*expected 10 per image"),
        (lambda b: _corrupt(b / "train/000.class/img_0.jpg"), r"img_0\.jpg \(modality 'image'\): unreadable image"),
        (lambda b: _truncate(b / "train/001.class/img_2.jpg"), r"img_2\.jpg \(modality 'image'\): unreadable image"),
        (lambda b: [p.unlink() for p in (b / "test").rglob("*.jpg")], r"test: empty folder.*modality 'image'"),
        (lambda b: (b / "text_testclasses.txt").unlink(), r"text_testclasses\.txt: missing caption file"),
        (lambda b: (b / "text_trainvalclasses.txt").write_text("one\ntwo\n\nthree\n"), r"empty caption on line\(s\) \[3\]"),
        (lambda b: (b / "text_trainvalclasses.txt").write_text("a b c\n" * 3), r"no word occurs more than 3 times"),
    ],
    ids=["count-mismatch", "corrupt-image", "truncated-image", "empty-folder", "missing-text", "empty-caption", "empty-vocab"],
)
def test_cub_damage_is_reported(tmp_path: Path, damage, message: str) -> None:
    damage(write_cub(tmp_path))
    cfg = cub_config(tmp_path, tmp_path / "cache")
    with pytest.raises(DataError, match=message):
        load_dataset(cfg, "train")
        load_dataset(cfg, "test")


# ------------------------------------------------------------------------------------ CelebA

ATTRS = ["5_o_Clock_Shadow", "Black_Hair", "Smiling", "Young"] + [f"Attr_{i}" for i in range(36)]
#: file, partition, indices of the attributes that are 1
CELEBA_ROWS = [("000001.jpg", 0, [1, 2]), ("000002.jpg", 0, [0, 3, 5]), ("000003.jpg", 1, []), ("000004.jpg", 2, [2])]
CENTRE_COLOUR = (20, 140, 220)


def _face(path: Path, size: tuple[int, int] = (178, 218)) -> None:
    """A 178x218 image whose 148x148 centre crop is one colour and whose border is another."""
    pixels = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
    top, left = (size[1] - 148) // 2, (size[0] - 148) // 2
    pixels[top : top + 148, left : left + 148] = CENTRE_COLOUR
    Image.fromarray(pixels).save(path)


def write_celeba(root: Path, csv: bool = False) -> Path:
    (root / "img_align_celeba").mkdir(parents=True)
    values = []
    for name, _, on in CELEBA_ROWS:
        _face(root / "img_align_celeba" / name.replace(".jpg", ".png"))
        (root / "img_align_celeba" / name.replace(".jpg", ".png")).rename(root / "img_align_celeba" / name)
        values.append(["1" if i in on else "-1" for i in range(40)])
    if csv:
        rows = ["image_id," + ",".join(ATTRS)] + [f"{n}," + ",".join(v) for (n, _, _), v in zip(CELEBA_ROWS, values)]
        parts = ["image_id,partition"] + [f"{n},{p}" for n, p, _ in CELEBA_ROWS]
        (root / "list_attr_celeba.csv").write_text("\n".join(rows) + "\n")
        (root / "list_eval_partition.csv").write_text("\n".join(parts) + "\n")
    else:
        rows = [str(len(CELEBA_ROWS)), " ".join(ATTRS)] + [f"{n} " + "  ".join(v) for (n, _, _), v in zip(CELEBA_ROWS, values)]
        (root / "list_attr_celeba.txt").write_text("\n".join(rows) + "\n")
        (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p, _ in CELEBA_ROWS))
    return root


def celeba_config(root: Path, seed: int = 0) -> DataConfig:
    return DataConfig("celeba", root=str(root), data_dir=str(root / "cache"), seed=seed)


@pytest.mark.parametrize("csv", [False, True], ids=["txt", "csv"])
def test_celeba_loads_crops_and_writes_attribute_text(tmp_path: Path, csv: bool) -> None:
    write_celeba(tmp_path, csv)
    train = load_dataset(celeba_config(tmp_path), "train")
    assert len(train) == 2 and train.attribute_names == ATTRS
    assert train.tensors["image"].shape == (2, 3, 64, 64)
    # the 148 centre crop holds only the centre colour; the white border is cut away
    assert (train.tensors["image"].float() - torch.tensor(CENTRE_COLOUR).view(1, 3, 1, 1)).abs().max() <= 2
    assert train.attributes.dtype == torch.bool
    assert train.attributes[0].nonzero().flatten().tolist() == [1, 2]
    assert train.tensors["text"].shape == (2, TEXT_LENGTH) and train.specs["text"].vocab_size == 71
    texts = decode_tokens(train.tensors["text"])
    assert [t.strip("*") for t in texts] == ["black hair, smiling", "5 o clock shadow, young, attr 1"]
    assert all(len(t) == TEXT_LENGTH and set(t.replace(t.strip("*"), "")) <= {"*"} for t in texts)
    test = load_dataset(celeba_config(tmp_path), "test")  # partition 2 only (1 is validation)
    assert len(test) == 1 and decode_tokens(test.tensors["text"])[0].strip("*") == "smiling"


def test_celeba_text_start_is_random_and_seeded(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    starts = []
    for seed in (0, 0, 1):
        text = decode_tokens(load_dataset(celeba_config(tmp_path, seed), "train").tensors["text"])
        starts.append([t.index("b") if "black" in t else t.index("5") for t in text])
    assert starts[0] == starts[1] and starts[0] != starts[2]


def test_celeba_text_starts_at_zero_when_asked(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    cfg = replace(celeba_config(tmp_path), params={"random_text_start": False})
    texts = decode_tokens(load_dataset(cfg, "train").tensors["text"])
    assert texts == [t.ljust(TEXT_LENGTH, "*") for t in ("black hair, smiling", "5 o clock shadow, young, attr 1")]
    # the placement is part of the cache key: the random form is built anew, not read back
    random = decode_tokens(load_dataset(celeba_config(tmp_path), "train").tensors["text"])
    assert random != texts and [t.strip("*") for t in random] == [t.strip("*") for t in texts]
    # the stand-in follows the same parameter
    fake = load_dataset(DataConfig("celeba", data_dir=str(tmp_path / "c2"), params={**TINY, "random_text_start": False}), "train")
    padded = decode_tokens(fake.tensors["text"])
    assert all(not t.startswith("*") and t == t.strip("*").ljust(TEXT_LENGTH, "*") for t in padded)


@pytest.mark.parametrize("root", [True, False], ids=["files", "standin"])
def test_celeba_random_text_start_must_be_a_boolean(tmp_path: Path, root: bool) -> None:
    write_celeba(tmp_path)
    cfg = DataConfig("celeba", root=str(tmp_path) if root else None, data_dir=str(tmp_path / "cache"), params={"random_text_start": "no"})
    with pytest.raises(ConfigError, match=r"data\.params\.random_text_start='no'; expected true or false"):
        load_dataset(cfg, "train")


def test_attribute_text_is_cut_to_256() -> None:
    names = [f"A_Very_Long_Attribute_Name_{i}" for i in range(40)]
    text = attribute_text(names, np.ones(40, dtype=bool))
    assert len(text) == 256 and text.startswith("a very long attribute name 0, a very")


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: _edit(r / "list_attr_celeba.txt", "000001.jpg -1", "000001.jpg 2"), r"row 1 \('000001\.jpg'\).*expected 40 values in -1/0/1"),
        (lambda r: _edit(r / "list_attr_celeba.txt", "000001.jpg -1  ", "000001.jpg "), r"row 1 \('000001\.jpg'\) has 39 values"),
        (lambda r: _edit(r / "list_attr_celeba.txt", "4\n", "5\n"), r"first line says 5 rows, found 4"),
        (lambda r: _edit(r / "list_attr_celeba.txt", "Young ", ""), r"header names 39 attributes, expected 40"),
        (lambda r: _edit(r / "list_eval_partition.txt", "000001.jpg 0\n", ""), r"no partition for 1 images"),
        (lambda r: (r / "img_align_celeba/000002.jpg").unlink(), r"1 images listed .* are missing \(modality 'image'\)"),
        (lambda r: _corrupt(r / "img_align_celeba/000001.jpg"), r"000001\.jpg \(modality 'image'\): unreadable image"),
        (lambda r: _face(r / "img_align_celeba/000001.jpg", (148, 140)), r"image is 148x140, expected at least 148x148"),
        (lambda r: (r / "list_attr_celeba.txt").unlink(), r"no list_attr_celeba\.txt or list_attr_celeba\.csv"),
    ],
    ids=["bad-value", "short-row", "row-count", "bad-header", "no-partition", "missing-image", "corrupt-image", "too-small", "no-attributes"],
)
def test_celeba_damage_is_reported(tmp_path: Path, damage, message: str) -> None:
    damage(write_celeba(tmp_path))
    with pytest.raises(DataError, match=message):
        load_dataset(celeba_config(tmp_path), "train")


# ------------------------------------------------------------------------------ stand-ins

TINY = {"num_train": 12, "num_test": 4}


def standin(dataset: str, data_dir: Path, split: str = "train"):
    return load_dataset(DataConfig(dataset, data_dir=str(data_dir), params=TINY), split)


def layout(dataset) -> list[tuple]:
    """What a model sees of a dataset: names, kinds, shapes and dtypes (not the vocabulary)."""
    return [(s.name, s.kind, s.shape, dataset.tensors[s.name].dtype) for s in dataset.specs.values()]


@pytest.mark.parametrize(("dataset", "text"), [("cub", "caption"), ("celeba", "text")])
def test_data_build_without_root_builds_the_standin_and_warns_once(
    tmp_path: Path, dataset: str, text: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    standin_notice.cache_clear()
    args = ["data", "build", dataset, "--data-dir", str(tmp_path), "--set", "params.num_train=12", "--set", "params.num_test=4"]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert f"train: 12 examples, modalities ['image', '{text}']" in out and "test: 4 examples" in out
    notices = [r.getMessage() for r in caplog.records if "stand-in" in r.getMessage()]
    assert len(notices) == 1 and f"dataset '{dataset}': data.root is not set" in notices[0]
    # generated and cached as dataset 'scenes' (same seed and counts: the same files)
    assert len(list(tmp_path.glob("scenes-train-*.pt"))) == 1
    assert main(["data", "info", dataset, "--data-dir", str(tmp_path)]) == 0
    assert "captioned-scenes stand-in" in capsys.readouterr().out


def test_cub_standin_has_the_real_layout_with_the_scenes_vocabulary(tmp_path: Path) -> None:
    write_cub(tmp_path)
    real = load_dataset(cub_config(tmp_path, tmp_path / "cache"), "train")
    fake = standin("cub", tmp_path / "cache")
    assert layout(fake) == layout(real) and "stand-in" in fake.name
    assert fake.specs["caption"].vocab_size == len(SCENE_VOCABULARY) != real.specs["caption"].vocab_size
    scenes = load_dataset(DataConfig("scenes", data_dir=str(tmp_path / "cache"), params=TINY), "train")
    assert torch.equal(fake.tensors["caption"], scenes.tensors["caption"])
    assert torch.equal(fake.labels, scenes.labels) and fake.attribute_names == scenes.attribute_names
    # the decoders drawn under the grids: the scenes' words, and the real vocabulary's
    assert fake.text_decoders["caption"](fake.tensors["caption"][:1]) == SCENE_VOCABULARY.decode(scenes.tensors["caption"][:1])
    assert real.text_decoders["caption"](real.tensors["caption"][:1]) == [f"{COMMON} image0 <exc> <exc>"]


def test_celeba_standin_has_the_real_layout_and_attribute_text(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    real = load_dataset(celeba_config(tmp_path), "train")
    fake = standin("celeba", tmp_path / "cache")
    assert layout(fake) == layout(real) and fake.specs["text"].vocab_size == real.specs["text"].vocab_size == 71
    assert fake.attributes.dtype == torch.bool and fake.attributes.shape == (12, 53)
    scenes = load_dataset(DataConfig("scenes", data_dir=str(tmp_path / "cache"), params=TINY), "train")
    assert torch.equal(fake.tensors["image"], scenes.tensors["image"])
    texts = decode_tokens(fake.tensors["text"])
    for row, padded, stripped in zip(fake.attributes.numpy(), texts, decode_text(fake.tensors["text"]), strict=True):
        assert stripped == attribute_text(fake.attribute_names, row) == padded.strip("*")
        assert len(padded) == TEXT_LENGTH and padded.replace(stripped, "").strip("*") == ""
    assert real.text_decoders["text"](real.tensors["text"]) == ["black hair, smiling", "5 o clock shadow, young, attr 1"]


def test_binary_attributes_known_answer() -> None:
    two = [2, 3, 2, 1, 0, 0, 4, 0, 2, 5, 1]  # star red large left; circle blue small top; yellow, striped
    one = [1, 4, 7, 0, 4, -1, -1, -1, -1, 0, 3]  # cross orange small centre; black, dotted
    names, values = binary_attributes(np.array([two, one]))
    assert len(names) == len(set(names)) == 53 and values.dtype == bool
    assert attribute_text(names, values[0]) == (
        "yellow background, striped, two objects, star, red, large, left, second circle, second blue, "
        "second small, second top"
    )
    assert attribute_text(names, values[1]) == "black background, dotted, cross, orange, small, centre"


def test_cub_preset_vocabulary_follows_the_data(tmp_path: Path) -> None:
    offline = build_run_config("cub", "crmvae", "cpu-short")
    assert offline.model.modalities[1].vocab_size == len(SCENE_VOCABULARY)
    write_cub(tmp_path)
    real = build_run_config("cub", "crmvae", "paper", [f"data.root={tmp_path}"])
    assert real.model.modalities[1].vocab_size == len(load_vocabulary(tmp_path))
    # a model configured for another vocabulary is refused before training
    wrong = [replace(m, vocab_size=1590) if m.name == "caption" else m for m in offline.model.modalities]
    with pytest.raises(ConfigError, match=r"modality 'caption': .* vocabulary of 55, .* vocab_size=1590"):
        check_dataset(replace(offline.model, modalities=wrong), standin("cub", tmp_path / "cache"))


@pytest.mark.parametrize(("dataset", "text", "length"), [("cub", "caption", 32), ("celeba", "text", TEXT_LENGTH)])
def test_a_few_training_steps_on_each_standin(tmp_path: Path, dataset: str, text: str, length: int) -> None:
    cfg = build_run_config(dataset, "crmvae", "cpu-short", [
        f"data.data_dir={tmp_path / 'data'}", "data.params.num_train=32", "data.params.num_test=8",
        "data.train_size=null", "data.test_size=null", "model.latent_dim=8", "train.batch_size=16",
        "train.epochs=1", "train.grid_examples=2", "train.progress=false", "train.threads=1",
    ])  # fmt: skip
    result = train(cfg, tmp_path / "run")
    assert result.global_step == 2 and math.isfinite(result.metrics["test_loss"])
    vocab = cfg.model.modalities[1].vocab_size
    # after 2 steps the text NLL is about that of a uniform categorical (1 % margin: lr-dependent)
    assert 0 < result.metrics[f"test/rec/self/{text}"] < 1.01 * length * math.log(vocab)
    with Image.open(tmp_path / "run" / "grids" / f"from_{text}.png") as grid:
        pixels = np.asarray(grid)
    images = 2 * 64 + 2 + 6  # an input row, a wider gap, a generated row; then 6+ lines of text
    assert pixels.shape[0] > images + 6 * 10 and (pixels[images:] < 100).any()
