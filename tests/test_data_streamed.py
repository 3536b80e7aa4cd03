"""Data read on access: a user's own Dataset and lazy image folders, trained through a DataLoader
to the same weights as the in-memory path; the item protocol's checks."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from PIL import Image

import crmvae.data.user
from crmvae import DataError, build_run_config, load_model
from crmvae.cli import main
from crmvae.config import DataConfig, RunConfig
from crmvae.data import ModalitySpec, MultimodalDataset, StreamedDataset, load_dataset, load_source
from crmvae.data.streamed import check_item
from crmvae.errors import ConfigError
from crmvae.training import train

N = 24
SPECS = [{"name": "photo", "kind": "image", "shape": [1, 6, 5]}, {"name": "feat", "kind": "vector", "shape": [4]}]


def write_folder(root: Path, n: int = N, seed: int = 0) -> np.ndarray:
    """``photo/{i}.png`` (some missing) and ``feat.npy`` (NaN rows missing) in ``root``; the presence mask."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, 2)) > 0.3
    present[~present.any(1), 0] = True
    (root / "photo").mkdir(parents=True)
    pixels = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
    for i in np.flatnonzero(present[:, 0]):
        Image.fromarray(pixels[i]).save(root / "photo" / f"{i}.png")
    np.save(root / "feat.npy", np.where(present[:, 1:], rng.normal(size=(n, 4)), np.nan).astype(np.float32))
    return present


def write_splits(root: Path) -> np.ndarray:
    """``modalities.yaml`` and the folders ``train/`` (N examples) and ``test/`` (8); train's presence mask."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "modalities.yaml").write_text(yaml.safe_dump({"modalities": SPECS}))
    write_folder(root / "test", 8, seed=1)
    return write_folder(root / "train")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_splits(root)
    return root


def config(root: Path, *overrides: str) -> RunConfig:
    return build_run_config("user", "crmvae", "cpu-short", [
        f"data.root={root}", "model.latent_dim=8", "train.batch_size=8", "train.epochs=2",
        "train.checkpoint_every=1000", "train.grid_examples=2", "train.progress=false", "train.threads=1", *overrides,
    ])


class Items(torch.utils.data.Dataset):
    """A user's Dataset following the item protocol, here over an in-memory dataset's tensors."""

    def __init__(self, data: MultimodalDataset, change: Callable[[int, dict], Any] = lambda i, item: item) -> None:
        self.data, self.change = data, change

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        item = {m: t[i] for m, t in self.data.tensors.items()} | {"mask": self.data.mask[i]}
        return self.change(i, item)


def streamed(data: MultimodalDataset) -> StreamedDataset:
    return StreamedDataset(Items(data), list(data.specs.values()), name="mine")


def own_data(cfg: RunConfig) -> tuple[StreamedDataset, StreamedDataset]:
    return streamed(load_dataset(cfg.data, "train")), streamed(load_dataset(cfg.data, "test"))


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run / "model.pt").state_dict()


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def in_memory(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: a run on the folder loaded in memory."""
    out = tmp_path_factory.mktemp("memory") / "run"
    train(config(root), out)
    return out


# --------------------------------------------------------------------------------------------
# a user's Dataset


@pytest.mark.parametrize("workers", [0, 2])
def test_own_dataset_trains_to_the_in_memory_weights(root: Path, in_memory: Path, tmp_path: Path, workers: int) -> None:
    cfg = config(root, f"data.num_workers={workers}")
    result = train(cfg, tmp_path / "run", datasets=own_data(cfg))
    assert result.global_step == 6
    assert_same_weights(in_memory, tmp_path / "run")
    assert result.metrics["test_loss"] == json.loads((in_memory / "summary.json").read_text())["test_loss"]


def test_own_dataset_holds_out_the_same_validation_split(root: Path, tmp_path: Path) -> None:
    """Early stopping's validation split is drawn the same way from streamed and in-memory data."""
    cfg = config(root, "train.validation_size=8")
    train(cfg, tmp_path / "memory")
    train(cfg, tmp_path / "streamed", datasets=own_data(cfg))
    assert_same_weights(tmp_path / "memory", tmp_path / "streamed")
    summary = json.loads((tmp_path / "streamed" / "summary.json").read_text())
    assert summary["best_val_loss"] == json.loads((tmp_path / "memory" / "summary.json").read_text())["best_val_loss"]


def test_own_dataset_resumes_mid_epoch_at_the_right_batch(root: Path, in_memory: Path, tmp_path: Path) -> None:
    cfg = config(root)
    stopped = train(replace(cfg, train=replace(cfg.train, max_steps=4)), tmp_path / "run", datasets=own_data(cfg))
    assert stopped.global_step == 4  # epoch 2, after its first of 3 batches
    resumed = train(cfg, tmp_path / "run", resume=True, datasets=own_data(cfg))
    assert resumed.global_step == 6
    assert_same_weights(in_memory, tmp_path / "run")


def test_a_bare_torch_dataset_is_refused_with_a_hint(root: Path, tmp_path: Path) -> None:
    cfg = config(root)
    bare = Items(load_dataset(cfg.data, "train"))
    with pytest.raises(ConfigError, match=r"a Items is no dataset to train on: .* StreamedDataset\(dataset, modality_specs\)"):
        train(cfg, tmp_path / "run", datasets=(bare, bare))


def test_batches_follow_the_in_memory_order(root: Path) -> None:
    data = load_dataset(DataConfig("user", root=str(root)), "train")
    for start in (0, 2):
        mem = data.batches(5, shuffle=True, generator=torch.Generator().manual_seed(3), start=start)
        own = streamed(data).batches(5, shuffle=True, generator=torch.Generator().manual_seed(3), start=start)
        pairs = list(zip(mem, own, strict=True))
        assert len(pairs) == 5 - start
        for a, b in pairs:
            assert torch.equal(a.mask, b.mask) and all(torch.equal(a.data[m], b.data[m]) for m in a.data)


# --------------------------------------------------------------------------------------------
# the item protocol


def _set(key: str, value: Any) -> Callable[[int, dict], Any]:
    return lambda i, item: item | {key: value} if i == 3 else item


BAD_ITEMS: dict[str, tuple[Callable[[int, dict], Any], str]] = {
    "not a dict": (lambda i, item: tuple(item.values()) if i == 3 else item, "a tuple, expected a dict"),
    "no mask": (lambda i, item: {k: v for k, v in item.items() if k != "mask"} if i == 3 else item, "keys ['feat', 'photo'], expected ['photo', 'feat', 'mask']"),
    "unknown key": (_set("depth", torch.zeros(1)), "expected ['photo', 'feat', 'mask']"),
    "mask of ints": (_set("mask", torch.ones(2, dtype=torch.int64)), "'mask' is torch.int64 [2], expected bool [2]"),
    "mask too long": (_set("mask", torch.ones(3, dtype=torch.bool)), "'mask' is torch.bool [3], expected bool [2]"),
    "nothing present": (_set("mask", torch.zeros(2, dtype=torch.bool)), "no modality present"),
    "mask not a tensor": (_set("mask", [True, True]), "modality 'mask': a list, expected a tensor"),
    "wrong shape": (_set("feat", torch.zeros(5)), "modality 'feat': examples have shape (5,), expected (4,)"),
    "float image out of range": (_set("photo", torch.full((1, 6, 5), 2.0)), "float images must lie in [0, 1]"),
}


@pytest.mark.parametrize("case", list(BAD_ITEMS))
def test_a_bad_item_is_a_one_line_error_naming_it(root: Path, case: str) -> None:
    change, message = BAD_ITEMS[case]
    data = load_dataset(DataConfig("user", root=str(root)), "train")
    own = StreamedDataset(Items(data, change), list(data.specs.values()), name="mine", num_workers=2)
    with pytest.raises(DataError) as caught:
        list(own.batches(8))
    assert str(caught.value).startswith("mine, item 3") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_token_ids_are_checked_against_the_vocabulary() -> None:
    specs = {"cap": ModalitySpec("cap", "tokens", (3,), vocab_size=5)}
    with pytest.raises(DataError, match=r"item 7, modality 'cap': token ids span \[0, 5\], expected \[0, 5\)"):
        check_item("mine", specs, 7, {"cap": torch.tensor([0, 5, 1]), "mask": torch.tensor([True])})


# --------------------------------------------------------------------------------------------
# lazy image folders


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the images opened through the user format's reader."""
    opened: list[str] = []
    original = crmvae.data.user.Image.open

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(path).name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(crmvae.data.user.Image, "open", counting)
    return opened


def test_a_lazy_folder_reads_images_on_access_only(root: Path, opens: list[str]) -> None:
    cfg = DataConfig("user", root=str(root), params={"lazy": True})
    lazy = load_source(cfg, "train")
    assert isinstance(lazy, StreamedDataset) and opens == []
    eager = load_dataset(cfg, "train")  # evaluation's view: every image read at load
    assert isinstance(eager, MultimodalDataset) and len(opens) == int(eager.mask[:, 0].sum())
    opens.clear()
    index = torch.tensor([5, 0, 9])
    a, b = eager.batch(index), lazy.batch(index)
    assert sorted(opens) == sorted(f"{i}.png" for i in index.tolist() if eager.mask[i, 0])  # absent entries are not read
    assert torch.equal(a.mask, b.mask) and all(torch.equal(a.data[m], b.data[m]) for m in a.data)
    for a, b in zip(eager.batches(7), lazy.batches(7), strict=True):
        assert torch.equal(a.mask, b.mask) and all(torch.equal(a.data[m], b.data[m]) for m in a.data)


def test_a_lazy_folder_split_by_seed_and_cut_keeps_the_same_examples(tmp_path: Path) -> None:
    (tmp_path / "modalities.yaml").write_text(yaml.safe_dump({"modalities": SPECS}))
    write_folder(tmp_path)
    cfg = DataConfig("user", root=str(tmp_path), train_size=10, params={"lazy": True})
    lazy, eager = load_source(cfg, "train"), load_dataset(cfg, "train")
    assert len(lazy) == len(eager) == 10
    a, b = eager.batch(torch.arange(10)), lazy.batch(torch.arange(10))
    assert torch.equal(a.mask, b.mask) and all(torch.equal(a.data[m], b.data[m]) for m in a.data)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_damaged_image_fails_when_read_naming_the_file(tmp_path: Path, workers: int) -> None:
    present = write_splits(tmp_path)
    bad = int(np.flatnonzero(present[:, 0])[-1])
    path = tmp_path / "train" / "photo" / f"{bad}.png"
    path.write_bytes(path.read_bytes()[:30])
    cfg = DataConfig("user", root=str(tmp_path), params={"lazy": True})
    lazy = replace(load_source(cfg, "train"), num_workers=workers)  # loads: nothing is read yet
    with pytest.raises(DataError) as caught:
        list(lazy.batches(8))
    assert str(caught.value).startswith(f"{path} (modality 'photo'): unreadable or truncated image")
    assert "\n" not in str(caught.value)


def test_lazy_must_be_a_boolean(root: Path) -> None:
    with pytest.raises(ConfigError, match="data.params.lazy='yes'; expected true or false"):
        load_source(DataConfig("user", root=str(root), params={"lazy": "yes"}), "train")


def test_cli_trains_a_lazy_folder_to_the_in_memory_weights(root: Path, in_memory: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(root), "--model", "crmvae", "--preset", "cpu-short", "--out", str(out), "--epochs", "2"]
    sets = ["model.latent_dim=8", "train.batch_size=8", "train.checkpoint_every=1000", "train.grid_examples=2",
            "train.progress=false", "train.threads=1", "data.params.lazy=true", "data.num_workers=2"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    assert_same_weights(in_memory, out)


# --------------------------------------------------------------------------------------------
# two gloo processes


def _ddp_worker(rank: int, port: int, memory: RunConfig, lazy: RunConfig, outs: tuple[Path, Path]) -> None:
    """One rank: the folder trained in memory, then lazily read, each in the same process group."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        for cfg, out in zip((memory, lazy), outs):
            assert train(cfg, out).global_step == 6
    finally:
        dist.destroy_process_group()


def test_two_processes_read_a_lazy_folder_as_the_in_memory_path(root: Path, tmp_path: Path) -> None:
    """Every rank reads the whole global batch and takes its share, as the in-memory path does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = (tmp_path / "memory", tmp_path / "lazy")
    mp.spawn(_ddp_worker, args=(port, config(root), config(root, "data.params.lazy=true"), outs), nprocs=2)
    assert_same_weights(*outs)
