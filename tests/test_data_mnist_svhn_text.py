"""MNIST-SVHN-Text: the text alphabet, synthetic street numbers, pairing, the .mat loader,
the provider, a short training run and the CLI build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from crmvae.cli import main
from crmvae.config import DataConfig
from crmvae.data import dataset_info, load_dataset
from crmvae.data import street_numbers as sn
from crmvae.data.mnist_svhn_text import (
    DIGIT_WORDS,
    SVHN_CLASS_COUNTS,
    GatheredRows,
    MNISTSVHNText,
    PairedDataset,
    load_svhn_mat,
    pair_by_class,
    synthetic_svhn_labels,
    text_index,
    text_pool,
)
from crmvae.data.sources import (
    BACKGROUND_FILES,
    load_background,
    load_digits_mnist_like,
)
from crmvae.data.text import (
    ALPHABET,
    VOCAB_SIZE,
    decode_tokens,
    encode_strings,
    one_hot,
)
from crmvae.errors import ConfigError, DataError
from crmvae.model import MultimodalVAE
from crmvae.presets import build_run_config
from crmvae.training import evaluate, train

TINY = {"source": "digits", "svhn_scale": 0.01, "multiplication": 2}


def tiny_cfg(data_dir: Path, **kw) -> DataConfig:
    params = {**TINY, **kw.pop("params", {})}
    return DataConfig(dataset="mnist_svhn_text", data_dir=str(data_dir), params=params, **kw)


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> dict[str, torch.Tensor]:
    """The tiny train split's stored tensors (pools, index, labels)."""
    cfg = tiny_cfg(data_dir)
    return MNISTSVHNText().generate(load_cfg(cfg), "train")


def load_cfg(cfg: DataConfig) -> DataConfig:
    """``cfg`` with the provider's defaults filled in (as ``load_dataset`` does)."""
    return DataConfig(**{**cfg.__dict__, "params": {**MNISTSVHNText().params, **cfg.params}})


# ------------------------------------------------------------------------------------- text


def test_alphabet_and_round_trip() -> None:
    assert len(ALPHABET) == VOCAB_SIZE == 71 and ALPHABET.endswith(" \n")
    assert ALPHABET.index("-") == 36 and ALPHABET.rindex("-") == 59
    tokens = encode_strings(["  three", "a-b\n", ""], 8)
    assert tokens.dtype == torch.int64 and tokens.shape == (3, 8)
    assert tokens[0].tolist() == [69, 69, 19, 7, 17, 4, 4, 69]  # space = 69, 't' = 19, ...
    assert tokens[1, 1] == 36  # the first '-'
    assert decode_tokens(tokens) == ["  three ", "a-b\n    ", " " * 8]
    assert decode_tokens(torch.tensor([[59, 58]])) == ["-+"]  # the second '-' decodes too
    assert encode_strings(["ab"], 4, pad="*").tolist() == [[0, 1, 55, 55]]
    hot = one_hot(tokens)
    assert hot.shape == (3, 8, 71) and torch.equal(hot.argmax(-1), tokens) and hot.sum() == 24


@pytest.mark.parametrize(
    ("strings", "length", "message"),
    [(["abc", "Ab"], 4, r"string 1 \('Ab'\) has symbol 'A'"), (["abcde"], 4, "5 symbols, more than 4")],
)
def test_encode_errors(strings: list[str], length: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        encode_strings(strings, length)


def test_decode_errors() -> None:
    with pytest.raises(DataError, match=r"\[0, 71\)"):
        decode_tokens(torch.tensor([[0, 71]]))
    with pytest.raises(DataError, match="integer ids"):
        decode_tokens(torch.zeros(2, 3, 71))


def test_text_pool_places_each_word_at_every_allowed_start() -> None:
    texts, offsets = text_pool()
    strings = decode_tokens(texts)
    for digit, word in enumerate(DIGIT_WORDS):
        starts = range(8 - len(word))  # 0 .. 8 - len - 1 inclusive
        rows = strings[offsets[digit] : offsets[digit] + len(starts)]
        assert rows == [(" " * s + word).ljust(8) for s in starts]
    labels = np.repeat(np.arange(10), 400)
    rows = text_index(labels, offsets, np.random.default_rng(0))
    for digit, word in enumerate(DIGIT_WORDS):
        used = {strings[r].index(word) for r in rows[labels == digit]}
        assert used == set(range(8 - len(word)))  # every start used, none beyond


# --------------------------------------------------------------------------- street numbers


def test_glyph_bank_fonts() -> None:
    alpha, widths, names = sn.glyph_bank()
    assert alpha.shape == (len(names), 10, sn.GLYPH, sn.GLYPH) and len(names) >= 15
    assert not set(names) & set(sn.SKIPPED_FONTS)
    assert "LastResortHE-Regular.ttf" not in names  # one box for every digit: dropped
    assert "STIXNonUni.ttf" not in names  # no digits: dropped
    assert "DejaVuSans.ttf" in names and "cmr10.ttf" in names
    ink_rows = (alpha > 0.5).any(-1).sum(-1)  # [F, 10] rows with ink: the scaled height
    assert (ink_rows >= sn.GLYPH_HEIGHT - 2).all() and (ink_rows <= sn.GLYPH_HEIGHT).all()
    assert (widths[:, 1] < widths[:, 0]).float().mean() > 0.5  # '1' is narrower than '0'


def _params(labels: list[int], **fixed) -> dict[str, torch.Tensor]:
    _, _, names = sn.glyph_bank()
    raw = sn.sample_params(np.array(labels), len(names), len(BACKGROUND_FILES), np.random.default_rng(0))
    params = {k: torch.from_numpy(v) for k, v in raw.items()}
    n = len(labels)
    for key, value in fixed.items():
        params[key] = torch.as_tensor(value, dtype=params[key].dtype).expand_as(params[key]).clone()
    assert all(v.shape[0] == n for v in params.values())
    return params


def test_composite_known_answer_without_jitter() -> None:
    """Height 28 = the bank's glyph height, no rotation/stretch/offset/blur/noise, a flat
    plate: the alpha is the bank glyph's central 32x32 window, composited exactly."""
    alpha_bank, widths, _ = sn.glyph_bank()
    labels = [0, 3, 7, 9]
    params = _params(
        labels, height=28.0, stretch=1.0, rotation=0.0, offset=0.0, neighbours=-1, blur=0.0,
        noise=0.0, plate_weight=1.0, plate_saturation=1.0, colour_saturation=1.0,
    )
    photos = [sn.photo_tensor(load_background(b)) for b in BACKGROUND_FILES]
    image = sn.composite(params, photos, alpha_bank, widths).float() / 255
    window = alpha_bank[params["font"], params["label"], 8:40, 8:40][:, None]  # [N, 1, 32, 32]
    plate = params["plate"][:, :, None, None]
    luma = plate.squeeze(-1).squeeze(-1) @ torch.tensor([0.299, 0.587, 0.114])
    colour = sn.contrasting_colour(params["colour"], luma, params["contrast"])[:, :, None, None]
    expected = plate * (1 - window) + colour * window
    assert (image - expected).abs().max() <= 0.5 / 255 + 1e-6
    contrast = (colour.squeeze(-1).squeeze(-1) @ torch.tensor([0.299, 0.587, 0.114]) - luma).abs()
    assert (contrast > 0.1).all()  # the digit stands out from its background


def test_neighbour_is_placed_one_advance_to_the_left() -> None:
    alpha_bank, widths, _ = sn.glyph_bank()
    params = _params([4], height=28.0, stretch=1.0, rotation=0.0, offset=0.0, neighbours=[[1, -1]])
    font = int(params["font"][0])
    half = float(widths[font, 4] + widths[font, 1]) / 2
    params["gap"][:] = np.ceil(half) - half  # an integer advance in bank pixels
    advance = round(half + float(params["gap"][0, 0]))
    alpha = sn.glyph_alpha(params, alpha_bank, widths)[0, 0]
    left = torch.zeros(32, 32)
    cols = torch.arange(32) + 8 + advance  # output column j shows neighbour column j + 8 + advance
    inside = cols < sn.GLYPH
    left[:, inside] = alpha_bank[font, 1, 8:40][:, cols[inside]]
    centre = alpha_bank[font, 4, 8:40, 8:40]
    expected = 1 - (1 - centre) * (1 - left)
    assert (alpha - expected).abs().max() < 1e-4
    assert left.sum() > 5  # part of the neighbour is in the frame


def test_render_is_deterministic_and_varied() -> None:
    photos = [load_background(b) for b in BACKGROUND_FILES]
    labels = np.arange(40) % 10
    a, params = sn.render_street_numbers(labels, photos, np.random.default_rng(3))
    b, _ = sn.render_street_numbers(labels, photos, np.random.default_rng(3))
    c, _ = sn.render_street_numbers(labels, photos, np.random.default_rng(4))
    assert a.shape == (40, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(params["label"], torch.from_numpy(labels))
    assert a.float().std(dim=(1, 2, 3)).min() > 5  # no flat images
    assert len({x.tobytes() for x in a.numpy()}) == 40


# ------------------------------------------------------------------------------------ pairing


def test_pair_by_class_counts_and_partners() -> None:
    a = np.array([0, 1, 0, 2, 1, 0, 0])  # class sizes 4, 2, 1
    b = np.array([1, 0, 0, 1, 1, 2, 2, 2])  # class sizes 2, 3, 3
    pairs = pair_by_class(a, b, multiplication=5, max_per_class=10, rng=np.random.default_rng(0))
    n = {0: min(4, 2), 1: min(2, 3), 2: min(1, 3)}
    assert pairs.shape == (5 * sum(n.values()), 2) and pairs.dtype == np.int64
    assert (a[pairs[:, 0]] == b[pairs[:, 1]]).all()
    for side, labels in ((0, a), (1, b)):
        for c, count in n.items():
            first = np.flatnonzero(labels == c)[:count]  # only the first n of each class
            used, times = np.unique(pairs[labels[pairs[:, side]] == c, side], return_counts=True)
            assert used.tolist() == first.tolist() and (times == 5).all()
    capped = pair_by_class(a, b, multiplication=3, max_per_class=1, rng=np.random.default_rng(0))
    assert len(capped) == 3 * 3
    assert not (pairs[:, 0][:-1] <= pairs[:, 0][1:]).all()  # shuffled, not grouped by class


def test_synthetic_labels_follow_the_svhn_class_counts() -> None:
    rng = np.random.default_rng(0)
    assert sum(SVHN_CLASS_COUNTS["train"]) == 73257 and sum(SVHN_CLASS_COUNTS["test"]) == 26032
    labels = synthetic_svhn_labels("train", 1.0, rng)
    assert np.bincount(labels).tolist() == list(SVHN_CLASS_COUNTS["train"])
    small = synthetic_svhn_labels("test", 0.001, rng)
    assert np.bincount(small).tolist() == [2, 5, 4, 3, 3, 2, 2, 2, 2, 2]


# ------------------------------------------------------------------------------------ the .mat


def write_mat(path: Path, n: int = 6, **override) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    content = {
        "X": rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8),
        "y": (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8),  # 1..10
    }
    content.update(override)
    scipy.io.savemat(path, content)
    return content


def test_mat_loader(tmp_path: Path) -> None:
    path = tmp_path / "train_32x32.mat"
    content = write_mat(path, n=12)
    images, labels = load_svhn_mat(path)
    assert images.shape == (12, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # 10 means 0
    x = content["X"]
    assert images[5, 2, 7, 30] == x[7, 30, 2, 5]  # [row, column, channel, n] -> [n, c, row, col]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"X": None}, r"no variable\(s\) \['X'\]"),
        ({"X": np.zeros((28, 28, 3, 6), np.uint8)}, r"X is uint8 \[28, 28, 3, 6\]"),
        ({"X": np.zeros((32, 32, 3, 6), np.float64)}, "X is float64"),
        ({"y": np.arange(6).reshape(6, 1) + 1}, None),  # valid: int labels 1..6
        ({"y": np.zeros((6, 1))}, r"labels span \[0, 0\]"),
        ({"y": np.full((6, 1), 11)}, r"labels span \[11, 11\]"),
        ({"y": np.ones((5, 1))}, r"y has shape \[5, 1\] for 6 images"),
        ({"y": np.full((6, 1), 1.5)}, "y must hold whole numbers"),
    ],
)
def test_mat_loader_errors_name_the_file(tmp_path: Path, override: dict, message: str | None) -> None:
    path = tmp_path / "test_32x32.mat"
    content = write_mat(path)
    if override.get("X", 0) is None:
        scipy.io.savemat(path, {"y": content["y"]})
    else:
        write_mat(path, **override)
    if message is None:
        assert load_svhn_mat(path)[1].tolist() == [1, 2, 3, 4, 5, 6]
        return
    with pytest.raises(DataError, match="test_32x32.mat: " + message):
        load_svhn_mat(path)


def test_mat_loader_missing_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing.mat: missing SVHN file"):
        load_svhn_mat(tmp_path / "nothing.mat")
    path = tmp_path / "train_32x32.mat"
    write_mat(path, n=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train_32x32.mat: unreadable .mat file"):
        load_svhn_mat(path)
    path.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match="train_32x32.mat: unreadable"):
        load_svhn_mat(path)


# ----------------------------------------------------------------------------------- provider


def test_tuples_agree_on_the_label(tiny: dict[str, torch.Tensor]) -> None:
    index, labels = tiny["index"], tiny["labels"]
    mnist_x, mnist_y = load_digits_mnist_like("train")
    assert torch.equal(tiny["mnist"][:, 0], torch.from_numpy(mnist_x))  # the source, unchanged
    assert torch.equal(tiny["mnist_labels"][index[:, 0]], labels)
    assert torch.equal(torch.from_numpy(mnist_y)[index[:, 0]], labels)  # the MNIST image's class
    assert torch.equal(tiny["svhn_labels"][index[:, 1]], labels)
    words = [t.strip() for t in decode_tokens(tiny["text"][index[:, 2]])]
    assert words == [DIGIT_WORDS[c] for c in labels.tolist()]
    svhn_counts = np.bincount(tiny["svhn_labels"].numpy(), minlength=10)
    n = np.minimum(np.bincount(mnist_y, minlength=10), svhn_counts)
    assert len(labels) == 2 * n.sum()  # multiplication 2
    assert svhn_counts.tolist() == [max(1, round(0.01 * c)) for c in SVHN_CLASS_COUNTS["train"]]


def test_dataset_batches_and_subsets(data_dir: Path, tiny: dict[str, torch.Tensor]) -> None:
    ds = load_dataset(tiny_cfg(data_dir), "train")
    assert isinstance(ds, PairedDataset) and ds.modality_names == ["mnist", "svhn", "text"]
    assert len(ds) == len(tiny["labels"])
    batch = ds.batch(torch.tensor([4, 0, 7]))
    assert batch.data["mnist"].shape == (3, 1, 28, 28) and batch.data["mnist"].dtype == torch.float32
    assert batch.data["svhn"].shape == (3, 3, 32, 32) and batch.data["text"].dtype == torch.int64
    rows = tiny["index"][[4, 0, 7]]
    assert torch.equal(batch.data["svhn"], tiny["svhn"][rows[:, 1]].float() / 255)
    assert torch.equal(batch.data["text"], tiny["text"][rows[:, 2]])
    assert torch.equal(ds.tensors["mnist"][[4, 0, 7]], tiny["mnist"][rows[:, 0]])  # lazy view
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    texts = ds.text_decoders["text"](batch.data["text"])  # drawn under grids, read by text coherence
    assert [t.strip() for t in texts] == [words[int(label)] for label in tiny["labels"][[4, 0, 7]]]
    sub = load_dataset(tiny_cfg(data_dir, train_size=10), "train")
    assert isinstance(sub, PairedDataset) and len(sub) == 10 and sub.pools["svhn"] is not None
    assert torch.equal(sub.batch(torch.arange(10)).data["svhn"], ds.batch(torch.arange(10)).data["svhn"])


def test_paired_dataset_checks_its_index() -> None:
    pools = {"a": torch.zeros(3, 2, dtype=torch.float32)}
    from crmvae.data import ModalitySpec

    spec = [ModalitySpec("a", "vector", (2,))]
    with pytest.raises(DataError, match=r"modality 'a': tuple indices span \[0, 3\], the pool has 3"):
        PairedDataset(pools, torch.tensor([[0], [3]]), spec, name="d")
    with pytest.raises(DataError, match="expected int64"):
        PairedDataset(pools, torch.tensor([[0.0]]), spec, name="d")
    view = GatheredRows(torch.arange(6).reshape(3, 2), torch.tensor([2, 2, 0, 1]))
    assert view.shape == (4, 2) and view.numel() == 8 and len(view) == 4
    assert view[1:3].tolist() == [[4, 5], [0, 1]]


def test_same_seed_same_data_other_seed_other(tmp_path: Path, tiny: dict[str, torch.Tensor]) -> None:
    provider = MNISTSVHNText()
    again = provider.generate(load_cfg(tiny_cfg(tmp_path / "a")), "train")
    assert all(torch.equal(again[k], tiny[k]) for k in tiny)
    test = provider.generate(load_cfg(tiny_cfg(tmp_path / "a")), "test")
    other = provider.generate(load_cfg(tiny_cfg(tmp_path / "b", seed=1)), "test")
    assert len(test["mnist"]) == 299 and torch.equal(test["mnist"], other["mnist"])
    assert not torch.equal(test["svhn"], other["svhn"]) and not torch.equal(test["index"], other["index"])
    assert not torch.equal(test["svhn"][:5], tiny["svhn"][:5])  # splits have their own streams


def test_real_svhn_from_root(tmp_path: Path) -> None:
    for split, n in (("train", 30), ("test", 20)):
        write_mat(tmp_path / f"{split}_32x32.mat", n=n)
    cfg = DataConfig(dataset="mnist_svhn_text", root=str(tmp_path), params={"source": "digits", "multiplication": 3})
    ds = load_dataset(cfg, "test")
    x, _ = load_svhn_mat(tmp_path / "test_32x32.mat")
    assert torch.equal(ds.pools["svhn"], x)
    assert len(ds) == 3 * 20  # every class has 2 SVHN images and more MNIST ones
    assert torch.equal(ds.labels, (ds.index[:, 1] % 10 + 1) % 10)  # y = i % 10 + 1 in the fixture
    info = dataset_info(cfg)
    assert info["splits"]["train"]["exists"] and "real SVHN" in info["source"]
    with pytest.raises(DataError, match="train_32x32.mat: missing SVHN file"):
        load_dataset(DataConfig(dataset="mnist_svhn_text", root=str(tmp_path / "none")), "train")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"multiplication": 0}, "multiplication=0"),
        ({"max_per_class": 2.5}, "max_per_class=2.5"),
        ({"svhn_scale": 0}, "svhn_scale=0"),
        ({"source": "emnist"}, "source='emnist'"),
        ({"colour": 1}, "unknown key"),
    ],
)
def test_config_errors(tmp_path: Path, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataset(tiny_cfg(tmp_path, params=params), "train")


def test_info_builds_nothing(tmp_path: Path) -> None:
    info = dataset_info(tiny_cfg(tmp_path))
    assert info["splits"]["train"]["available"] is None and "synthetic street numbers" in info["source"]
    assert [m["name"] for m in info["modalities"]] == ["mnist", "svhn", "text"]
    assert not list(tmp_path.glob("*.pt"))


# ------------------------------------------------------------------------- training and CLI


def test_presets() -> None:
    paper = build_run_config("mnist_svhn_text", "crmvae", "paper")
    weighted = build_run_config("mnist_svhn_text", "crmvae", "paper-weighted")
    assert paper.model.latent_dim == 32 and paper.model.objective_params == {"beta": 1.0}
    assert (paper.train.epochs, paper.train.batch_size, paper.train.lr) == (100, 256, 5e-4)
    assert [m.weight for m in paper.model.modalities] == [1.0, 1.0, 1.0]
    assert [round(m.weight, 2) for m in weighted.model.modalities] == [3.92, 1.0, 384.0]
    assert [m.network for m in paper.model.modalities] == ["mnist_mlp", "svhn_conv", "text_conv"]
    short = build_run_config("mnist_svhn_text", "crmvae", "cpu-short")
    assert short.model.modalities == weighted.model.modalities and short.data.train_size == 30000


def test_short_training_run_lowers_the_loss(data_dir: Path, tmp_path: Path) -> None:
    config = build_run_config("mnist_svhn_text", "crmvae", "cpu-short", [
        *(f"data.params.{k}={v}" for k, v in TINY.items()), f"data.data_dir={data_dir}",
        "data.train_size=256", "data.test_size=64", "model.latent_dim=8", "train.batch_size=64",
        "train.epochs=2", "train.progress=false", "train.threads=1", "train.grid_examples=0",
        "train.checkpoint_every=1000",
    ])  # fmt: skip
    torch.manual_seed(config.train.seed)  # the trainer's initial weights
    before = evaluate(MultimodalVAE(config.model), load_dataset(config.data, "test"), 64)["loss"]
    result = train(config, tmp_path / "run")
    after = result.metrics["test_loss"]
    assert result.global_step == 8 and after < 0.9 * before, (before, after)


def test_cli_builds_the_tiny_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([
        "data", "build", "mnist_svhn_text", "--data-dir", str(tmp_path),
        *(x for k, v in TINY.items() for x in ("--set", f"params.{k}={v}")),
    ])
    out = capsys.readouterr().out
    assert code == 0 and "train: 1466 examples, modalities ['mnist', 'svhn', 'text']" in out
    assert len(list(tmp_path.glob("mnist_svhn_text-*.json"))) == 2  # one manifest per split
