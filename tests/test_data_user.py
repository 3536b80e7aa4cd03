"""User data (dataset "user"): the file format, validation errors, the inferred model, the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from crmvae import DataError, MultimodalVAE, build_run_config, load_model
from crmvae.cli import main
from crmvae.config import (
    DataConfig,
    ModalityConfig,
    ModelConfig,
    RunConfig,
    load_config,
)
from crmvae.data import dataset_info, load_dataset
from crmvae.data.user import split_indices, user_modality_configs
from crmvae.errors import ConfigError
from crmvae.nets import build_networks
from crmvae.nets.generic import downsampled_sizes

N = 24
VOCAB = ["<pad>", "red", "green", "blue", "big", "small"]
SPECS: list[dict[str, Any]] = [
    {"name": "photo", "kind": "image", "shape": [1, 6, 5]},
    {"name": "feat", "kind": "vector", "shape": [4]},
    {"name": "cap", "kind": "tokens", "shape": [3], "vocab": "vocab.txt"},
]


def write_format(root: Path, specs: list[dict[str, Any]] = SPECS, **extra: Any) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "modalities.yaml").write_text(yaml.safe_dump({"modalities": specs, **extra}))
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")


def make_arrays(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """Random contents and a presence mask [n, 3] with about 30% absent, never a whole row."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, 3)) > 0.3
    present[~present.any(1), rng.integers(0, 3)] = True
    return {
        "photo": rng.integers(0, 256, (n, 1, 6, 5), dtype=np.uint8),
        "feat": rng.normal(size=(n, 4)).astype(np.float32),
        "cap": rng.integers(1, len(VOCAB), (n, 3)),
        "labels": rng.integers(0, 3, n),
        "present": present,
    }


def write_npz(root: Path, arrays: dict[str, np.ndarray]) -> None:
    """One data.npz: images absent through the mask, vectors through NaN rows, tokens through -1 rows."""
    present = arrays["present"]
    feat = np.where(present[:, 1:2], arrays["feat"], np.nan)
    cap = np.where(present[:, 2:3], arrays["cap"], -1)
    mask = present.copy()
    mask[:, 1:] = True  # the mask drops images only; vectors and tokens carry their own markers
    mask[~present[:, 1], 1] = False  # ... but it may not claim an absent entry
    mask[~present[:, 2], 2] = False
    np.savez(root / "data.npz", photo=arrays["photo"], feat=feat, cap=cap, labels=arrays["labels"], mask=mask)


def write_files(root: Path, arrays: dict[str, np.ndarray]) -> None:
    """PNG folder for images, feat.npy (NaN rows), cap.txt (empty lines), labels.npy."""
    present = arrays["present"]
    (root / "photo").mkdir(parents=True)
    for i in np.flatnonzero(present[:, 0]):
        Image.fromarray(arrays["photo"][i, 0]).save(root / "photo" / f"{i}.png")
    np.save(root / "feat.npy", np.where(present[:, 1:2], arrays["feat"], np.nan))
    lines = [" ".join(VOCAB[t] for t in row) if keep else "" for row, keep in zip(arrays["cap"], present[:, 2])]
    (root / "cap.txt").write_text("\n".join(lines) + "\n")
    np.save(root / "labels.npy", arrays["labels"])


def user_dataset(root: Path, writer: Callable[[Path, dict[str, np.ndarray]], None] = write_npz, seed: int = 0) -> dict[str, np.ndarray]:
    """A dataset with train/ and test/ folders under ``root``; returns the train arrays."""
    write_format(root, num_classes=3)
    train, test = make_arrays(N, seed), make_arrays(8, seed + 1)
    for split, arrays in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        writer(root / split, arrays)
    return train


def check_loaded(root: Path, arrays: dict[str, np.ndarray]) -> None:
    data = load_dataset(DataConfig("user", root=str(root)), "train")
    present = torch.from_numpy(arrays["present"])
    assert data.modality_names == ["photo", "feat", "cap"] and len(data) == N
    assert torch.equal(data.mask, present)
    assert torch.equal(data.labels, torch.from_numpy(arrays["labels"]))
    for m, (name, dtype) in enumerate((("photo", torch.uint8), ("feat", torch.float32), ("cap", torch.int64))):
        stored, keep = data.tensors[name], present[:, m]
        assert stored.dtype == dtype
        assert torch.equal(stored[keep], torch.from_numpy(arrays[name]).to(dtype)[keep])
        assert not stored[~keep].any()  # absent entries are stored as zeros


# --------------------------------------------------------------------------------------------
# the format


@pytest.mark.parametrize("writer", [write_npz, write_files], ids=["npz", "png+npy+txt"])
def test_both_layouts_load_values_and_missing_entries_exactly(tmp_path: Path, writer: Callable) -> None:
    arrays = user_dataset(tmp_path, writer)
    check_loaded(tmp_path, arrays)
    assert len(load_dataset(DataConfig("user", root=str(tmp_path)), "test")) == 8


def test_float_images_are_stored_as_uint8_and_batches_are_model_inputs(tmp_path: Path) -> None:
    write_format(tmp_path, SPECS[:2])
    photo = np.zeros((3, 1, 6, 5), np.float32)
    photo[0, 0, 0, 0], photo[1, 0, 0, 0], photo[2] = 1.0, 0.5, np.nan
    np.savez(tmp_path / "data.npz", photo=photo, feat=np.ones((3, 4)))
    data = load_dataset(DataConfig("user", root=str(tmp_path), params={"test_fraction": 0.4}), "train")
    full = torch.cat([data.tensors["photo"], load_dataset(DataConfig("user", root=str(tmp_path), params={"test_fraction": 0.4}), "test").tensors["photo"]])
    assert sorted(full[:, 0, 0, 0].tolist()) == [0, 128, 255]  # 0.5 * 255 rounds to 128; the NaN row is absent (0)
    batch = data.batch(torch.arange(len(data)))
    assert batch.data["photo"].dtype == torch.float32 and float(batch.data["photo"].max()) <= 1.0


def test_a_single_set_is_split_by_seed_into_disjoint_parts(tmp_path: Path) -> None:
    write_format(tmp_path, num_classes=3)
    arrays = make_arrays(40)
    write_npz(tmp_path, arrays)
    labels = torch.from_numpy(arrays["labels"])
    cfg = DataConfig("user", root=str(tmp_path), seed=3, params={"test_fraction": 0.25})
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert (len(train), len(test)) == (30, 10)
    index = split_indices(40, 0.25, 3)
    assert sorted(torch.cat([index["train"], index["test"]]).tolist()) == list(range(40))
    assert torch.equal(test.labels, labels[index["test"]]) and torch.equal(train.labels, labels[index["train"]])
    assert not torch.equal(split_indices(40, 0.25, 4)["test"], index["test"])
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset(DataConfig("user", root=str(tmp_path), params={"test_fraction": 1.5}), "train")
    with pytest.raises(DataError, match="cannot be split"):
        split_indices(1, 0.5, 0)


def test_model_modalities_follow_the_kind_and_the_hints(tmp_path: Path) -> None:
    specs = [SPECS[0], {**SPECS[1], "likelihood": "laplace", "likelihood_scale": 0.1, "weight": 2.0}, SPECS[2]]
    write_format(tmp_path, specs)
    assert user_modality_configs(DataConfig("user", root=str(tmp_path))) == [
        ModalityConfig("photo", [1, 6, 5], "generic_conv", "laplace", 0.75),
        ModalityConfig("feat", [4], "generic_mlp", "laplace", 0.1, 2.0),
        ModalityConfig("cap", [3], "generic_tokens", "categorical", 1.0, vocab_size=len(VOCAB)),
    ]


@pytest.mark.parametrize(
    "preset, expected",  # latent, epochs, batch size, lr, beta
    [("paper", (64, 150, 256, 5e-4, 1.0)), ("cpu-short", (64, 10, 128, 1e-3, 0.1))],
)
def test_user_presets(tmp_path: Path, preset: str, expected: tuple) -> None:
    user_dataset(tmp_path)
    cfg = build_run_config("user", "crmvae", preset, [f"data.root={tmp_path}"])
    t = cfg.train
    assert (cfg.model.latent_dim, t.epochs, t.batch_size, t.lr, cfg.model.objective_params["beta"]) == expected


def test_run_config_reads_modalities_from_the_files(tmp_path: Path) -> None:
    user_dataset(tmp_path)
    cfg = build_run_config("user", "mvae", "cpu-short", [f"data.root={tmp_path}"])
    assert [m.name for m in cfg.model.modalities] == ["photo", "feat", "cap"]
    assert cfg.model.modalities == user_modality_configs(cfg.data)
    model = MultimodalVAE(cfg.model)
    batch = load_dataset(cfg.data, "test").batch(torch.arange(4))
    assert torch.isfinite(model.loss(batch.data, batch.mask).loss)
    with pytest.raises(ConfigError, match="data.root=PATH"):
        build_run_config("user", "crmvae", "paper")


@pytest.mark.parametrize("shape", [[3, 28, 28], [1, 17, 40], [3, 3, 3], [1, 64, 64]])
def test_generic_conv_restores_any_image_size(shape: list[int]) -> None:
    encoder, decoder = build_networks(ModalityConfig("x", shape, "generic_conv"), 5)
    mu, logvar = encoder(torch.rand(2, *shape))
    assert mu.shape == logvar.shape == (2, 5) and decoder(mu).shape == (2, *shape)


@pytest.mark.parametrize("length", [1, 5, 33])
def test_generic_tokens_give_logits_per_position(length: int) -> None:
    encoder, decoder = build_networks(ModalityConfig("t", [length], "generic_tokens", "categorical", vocab_size=7), 5)
    mu, _ = encoder(torch.randint(0, 7, (2, length)))
    assert decoder(mu).shape == (2, length, 7)


def test_downsampling_halves_until_the_smallest_side_is_small() -> None:
    assert downsampled_sizes([28, 28]) == [(28, 28), (14, 14), (7, 7), (4, 4)]  # as the PolyMNIST net
    assert downsampled_sizes([17, 40]) == [(17, 40), (9, 20), (5, 10), (3, 5)]
    assert downsampled_sizes([4]) == [(4,)]
    assert len(downsampled_sizes([4096, 4096])) == 6  # capped at 5 halvings


# --------------------------------------------------------------------------------------------
# validation: every damage names the file, the modality and the expectation


def _npz(root: Path, **changes: Any) -> None:
    arrays = make_arrays()
    write_npz(root, arrays)
    with np.load(root / "data.npz") as npz:
        contents = {key: npz[key] for key in npz.files}
    contents.update(changes)
    np.savez(root / "data.npz", **{k: v for k, v in contents.items() if v is not None})


def _png(root: Path, data: bytes | None = None, image: Image.Image | None = None) -> None:
    write_files(root, make_arrays())
    target = min((root / "photo").iterdir())
    if image is not None:
        image.save(target)
    else:
        contents = target.read_bytes()
        target.write_bytes(data if data is not None else contents[: len(contents) // 2])


def _yaml(root: Path, text: str) -> None:
    _npz(root)
    (root / "modalities.yaml").write_text(text)


def _first_row_empty() -> np.ndarray:
    """A mask keeping the (always stored) images of every example but the first, which keeps nothing."""
    mask = np.zeros((N, 3), bool)
    mask[1:, 0] = True
    return mask


RNG = np.random.default_rng(1)
DAMAGES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "image shape": (lambda r: _npz(r, photo=np.zeros((N, 6, 5, 1), np.uint8)), ["data.npz['photo']", "'photo'", "expected [N, 1, 6, 5]"]),
    "image dtype": (lambda r: _npz(r, photo=np.zeros((N, 1, 6, 5), bool)), ["'photo'", "dtype bool", "uint8"]),
    "image int range": (lambda r: _npz(r, photo=np.full((N, 1, 6, 5), 300)), ["'photo'", "[300, 300]", "0..255"]),
    "image float range": (lambda r: _npz(r, photo=np.full((N, 1, 6, 5), 2.0)), ["'photo'", "expected [0, 1]"]),
    "vector dtype": (lambda r: _npz(r, feat=np.array([["a"] * 4] * N)), ["data.npz['feat']", "'feat'", "expected numbers"]),
    "vector inf": (lambda r: _npz(r, feat=np.full((N, 4), np.inf)), ["'feat'", "infinite"]),
    "vector partly NaN": (lambda r: _npz(r, feat=np.array([[np.nan, 0, 0, 0]] * N)), ["'feat'", "example 0 is partly NaN"]),
    "tokens out of vocab": (lambda r: _npz(r, cap=np.full((N, 3), 6)), ["data.npz['cap']", "'cap'", "token id 6", "[0, 6)"]),
    "tokens float": (lambda r: _npz(r, cap=np.ones((N, 3))), ["'cap'", "expected integer token ids"]),
    "pairing counts": (lambda r: _npz(r, feat=np.ones((N - 1, 4))), ["data.npz['feat']", f"has {N - 1} examples but", f"has {N}"]),
    "label range": (lambda r: _npz(r, labels=np.full(N, 3)), ["data.npz['labels']", "labels span [3, 3]", "0..2"]),
    "negative label": (lambda r: _npz(r, labels=np.full(N, -1)), ["labels span [-1, -1]"]),
    "float labels": (lambda r: _npz(r, labels=np.zeros(N)), ["labels must be integers"]),
    "mask shape": (lambda r: _npz(r, mask=np.ones((N, 2), bool)), ["data.npz['mask']", f"expected bool [{N}, 3]"]),
    "mask claims absent": (lambda r: _npz(r, feat=np.full((N, 4), np.nan), mask=np.ones((N, 3), bool)), ["'mask'", "example 0 marks modality 'feat' present"]),
    "all modalities missing": (lambda r: _npz(r, mask=_first_row_empty()), ["example 0 has no modality present", "every example needs"]),
    "unknown array": (lambda r: _npz(r, colour=np.ones(N)), ["data.npz['colour']", "is no modality"]),
    "no source": (lambda r: _npz(r, feat=None), ["no data for modality 'feat'", "feat.npy"]),
    "corrupt npz": (lambda r: (r / "data.npz").write_bytes(b"PK\x03\x04 not really"), ["data.npz", "is not a NumPy file"]),
    "corrupt png": (lambda r: _png(r, bytes(RNG.integers(0, 256, 200, dtype=np.uint8))), ["photo", "'photo'", "unreadable or truncated"]),
    "truncated png": (lambda r: _png(r), ["'photo'", "unreadable or truncated"]),
    "png size": (lambda r: _png(r, image=Image.new("L", (6, 5))), ["'photo'", "L 6x5 image", "expected L 5x6"]),
    "png mode": (lambda r: _png(r, image=Image.new("RGB", (5, 6))), ["'photo'", "RGB 5x6", "expected L 5x6"]),
    "png name": (lambda r: (_png(r, image=Image.new("L", (5, 6))), (r / "photo" / "x.png").write_bytes(b"")), ["x.png", "{index}.png"]),
    "png beyond arrays": (lambda r: (_png(r, image=Image.new("L", (5, 6))), Image.new("L", (5, 6)).save(r / "photo" / "99.png")), ["99.png", "index 99", f"hold {N}"]),
    "empty folder": (lambda r: (_png(r, image=Image.new("L", (5, 6))), [p.unlink() for p in (r / "photo").iterdir()]), ["photo: empty folder", "'photo'"]),
    "text token": (lambda r: (write_files(r, make_arrays()), (r / "cap.txt").write_text("red purple\n" * N)), ["cap.txt:1", "'cap'", "'purple' is not in vocab.txt"]),
    "text too long": (lambda r: (write_files(r, make_arrays()), (r / "cap.txt").write_text("red " * 4 + "\n")), ["cap.txt:1", "4 tokens, expected at most 3"]),
    "two sources": (lambda r: (_npz(r), np.save(r / "feat.npy", np.ones((N, 4)))), ["'feat'", "both .npy files and members"]),
    "no modalities file": (lambda r: (_npz(r), (r / "modalities.yaml").unlink()), ["no modalities.yaml"]),
    "yaml missing key": (lambda r: _yaml(r, "modalities:\n  - {name: photo, shape: [1, 6, 5]}\n"), ["modalities.yaml", "modalities[0] lacks key(s) ['kind']"]),
    "yaml unknown key": (lambda r: _yaml(r, "modalities:\n  - {name: a, kind: vector, shape: [4], colour: 1}\n"), ["modalities[0]", "unknown key(s) ['colour']"]),
    "yaml bad kind": (lambda r: _yaml(r, "modalities:\n  - {name: a, kind: audio, shape: [4]}\n"), ["modalities[0].kind", "'audio' is not one of"]),
    "yaml image channels": (lambda r: _yaml(r, "modalities:\n  - {name: a, kind: image, shape: [2, 6, 5]}\n"), ["modality 'a'", "C = 1 (grey) or 3"]),
    "yaml no vocab": (lambda r: _yaml(r, "modalities:\n  - {name: cap, kind: tokens, shape: [3]}\n"), ["'cap' needs vocab"]),
    "yaml no modalities": (lambda r: _yaml(r, "num_classes: 3\n"), ["key 'modalities'"]),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_data_fails_with_a_message_naming_file_modality_and_expectation(tmp_path: Path, damage: str) -> None:
    write_format(tmp_path, num_classes=3)
    apply, fragments = DAMAGES[damage]
    apply(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig("user", root=str(tmp_path), params={"test_fraction": 0.25}), "train")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_the_undamaged_baseline_of_every_damage_loads(tmp_path: Path) -> None:
    for name, setup in (("npz", lambda r: _npz(r)), ("files", lambda r: write_files(r, make_arrays()))):
        root = tmp_path / name
        write_format(root, num_classes=3)
        setup(root)
        assert len(load_dataset(DataConfig("user", root=str(root), params={"test_fraction": 0.25}), "train")) == 18


def test_one_split_folder_without_the_other_is_an_error(tmp_path: Path) -> None:
    user_dataset(tmp_path)
    (tmp_path / "test" / "data.npz").unlink()
    (tmp_path / "test").rmdir()
    with pytest.raises(DataError, match="has train/ but no test/"):
        load_dataset(DataConfig("user", root=str(tmp_path)), "train")


# --------------------------------------------------------------------------------------------
# the command line


def test_cli_trains_on_user_data_and_generates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, out = tmp_path / "mydata", tmp_path / "run"
    user_dataset(root, write_files)
    fast = ["--epochs", "2", "--set", "train.threads=1"]  # the rest is the cpu-short preset as it stands
    assert main(["train", "--data", str(root), "--model", "crmvae", "--preset", "cpu-short", "--out", str(out), *fast]) == 0
    assert (out / "checkpoint.pt").is_file() and (out / "model.pt").is_file()
    saved = load_config(RunConfig, out / "config.yaml")  # enough to reload the data and the model
    assert saved.data.dataset == "user" and Path(saved.data.root) == root.resolve()
    assert saved.model.modalities == user_modality_configs(saved.data)
    model = load_model(out / "model.pt")
    assert model.config.modalities == saved.model.modalities
    assert len(load_dataset(saved.data, "train")) == N
    assert main(["generate", str(out / "model.pt"), "--from", "feat,cap", "--n", "4", "--out", str(tmp_path / "gen")]) == 0
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["from_feat+cap.png", "prior_samples.png"]
    with Image.open(tmp_path / "gen" / "from_feat+cap.png") as grid:
        assert grid.size == (4 * 5 + 3 * 2, 6 + 2 + 6 + 6)  # one input row and one generated row of 5x6 images
    assert main(["data", "info", "user", "--set", f"root={root}"]) == 0
    assert '"name": "user"' in capsys.readouterr().out


def test_cli_reports_bad_user_data_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--preset", "cpu-short", "--out", str(tmp_path / "r")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--dataset", "polymnist", "--out", str(tmp_path / "r")]) == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_model_config_with_generic_networks_round_trips(tmp_path: Path) -> None:
    user_dataset(tmp_path)
    modalities = user_modality_configs(DataConfig("user", root=str(tmp_path)))
    model = MultimodalVAE(ModelConfig(modalities, latent_dim=3, objective="mopoe"))
    assert set(model.encoders) == {"photo", "feat", "cap"}
    assert dataset_info(DataConfig("user", root=str(tmp_path)))["modalities"][2]["vocab_size"] == len(VOCAB)
