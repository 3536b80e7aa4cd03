"""Fault injection: damaged checkpoints, unwritable or full locations, kills during writes and
absurd data values each end in one line (what, which file, what to do), exit status 2, no
traceback, and nothing saved before is damaged."""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from crmvae import evaluation, fileio
from crmvae.checkpoint import MODEL_KEYS, TRAINING_KEYS, read_checkpoint, validate_checkpoint
from crmvae.cli import _run_config, build_parser, main
from crmvae.config import DataConfig, ModalityConfig, ModelConfig, RunConfig, TrainConfig, load_config
from crmvae.data import DATASETS, get_dataset
from crmvae.errors import CheckpointError, ConfigError
from crmvae.evaluation.classifiers import ARCHITECTURES
from crmvae.likelihoods import LIKELIHOODS, build_likelihood
from crmvae.model import MultimodalVAE
from crmvae.nets import NETWORKS
from crmvae.objectives import OBJECTIVES, get_objective
from crmvae.presets import build_run_config
from crmvae.training import read_metrics, train, trainer
from crmvae.training.progress import show_messages

Capsys = pytest.CaptureFixture[str]
SPECS = [{"name": "img", "kind": "image", "shape": [1, 4, 4]}, {"name": "vec", "kind": "vector", "shape": [3]}]
FAST = ["--preset", "cpu-short", "--set", "train.threads=1", "--set", "train.batch_size=8", "--set", "model.latent_dim=4",
        "--set", "train.grid_examples=0", "--set", "train.progress=false"]


def user_data(root: Path, vec: np.ndarray | None = None) -> Path:
    """A tiny user dataset of 24 examples: a 1x4x4 image and a 3-vector."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modalities.yaml").write_text(yaml.safe_dump({"modalities": SPECS}))
    np.save(root / "img.npy", rng.integers(0, 256, (24, 1, 4, 4), dtype=np.uint8))
    np.save(root / "vec.npy", rng.normal(size=(24, 3)).astype(np.float32) if vec is None else vec)
    return root


def fails(capsys: Capsys, args: list[str], *fragments: str) -> str:
    """Run the CLI in-process; assert exit 2 and one error line (after any progress lines)
    naming ``fragments``, no traceback; return the line."""
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("crmvae: error")]
    assert errors == [err.strip().splitlines()[-1]] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, err)
    return errors[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run on user data (model.pt and checkpoint.pt)."""
    base = tmp_path_factory.mktemp("faults")
    out = base / "run"
    assert main(["train", "--data", str(user_data(base / "data")), "--out", str(out), "--epochs", "1", *FAST]) == 0
    return out


def payload(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def without(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda p: {k: v for k, v in p.items() if k != key}


def reshaped(p: dict[str, Any]) -> dict[str, Any]:
    name, weight = next(iter(p["model"].items()))
    return p | {"model": p["model"] | {name: torch.zeros(weight.shape[0] + 1, *weight.shape[1:])}}


#: A damaged model file, built from a good payload: (what to write, words of the message).
MODEL_DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    **{f"no {key}": (without(key), f"'{key}'") for key in ("model_config", "model")},
    "no format": (without("format"), "not a crmvae checkpoint"),
    "no version": (without("version"), "version None is not supported"),
    "wrong-shape weight": (reshaped, "stored weights are unusable"),
    "unknown weight": (lambda p: p | {"model": p["model"] | {"extra.weight": torch.zeros(1)}}, "unknown weights ['extra.weight']"),
    "bad model_config": (lambda p: p | {"model_config": p["model_config"] | {"latent_dim": "big"}}, "model configuration is invalid"),
    "weights not tensors": (lambda p: p | {"model": {"w": [1, 2]}}, "values other than tensors"),
    "NaN weight": (lambda p: p | {"model": {k: v.float().fill_(torch.nan) for k, v in p["model"].items()}}, "NaN/inf values in"),
    "another library's file": (lambda p: p["model"], "not a crmvae checkpoint"),
}
#: Damaged bytes: (the damage, words of the message).
BYTE_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda b: b[: len(b) // 2], "is not a PyTorch file (truncated"),
    "garbage": (lambda b: np.random.default_rng(0).bytes(4096), "is not a PyTorch file"),
    "empty": (lambda b: b"", "is not a PyTorch file"),
    "numpy file": (lambda b: _npy_bytes(), "is not a PyTorch file"),
    "one flipped bit in a weight": (lambda b: flip_a_weight_bit(b), "differ from their stored CRC-32"),
}


def flip_a_weight_bit(data: bytes) -> bytes:
    """``data`` (a torch.save archive) with one bit flipped in the middle of its largest tensor:
    still a loadable archive, with one weight silently changed unless the CRC-32 is checked."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    name_len, extra_len = struct.unpack("<HH", data[largest.header_offset + 26: largest.header_offset + 30])
    offset = largest.header_offset + 30 + name_len + extra_len + largest.file_size // 2
    flipped = bytearray(data)
    flipped[offset] ^= 0x10
    return bytes(flipped)


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


def damaged_model(run: Path, tmp_path: Path, case: str) -> tuple[Path, str]:
    """A copy of the run's model.pt (beside its config.yaml) damaged as ``case`` says."""
    path = tmp_path / "model.pt"
    (tmp_path / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    if case in MODEL_DAMAGE:
        damage, words = MODEL_DAMAGE[case]
        torch.save(damage(payload(run / "model.pt")), path)
    else:
        damage, words = BYTE_DAMAGE[case]
        path.write_bytes(damage((run / "model.pt").read_bytes()))
    return path, words


@pytest.mark.parametrize("command", ["info", "generate", "evaluate"])
@pytest.mark.parametrize("case", [*MODEL_DAMAGE, *BYTE_DAMAGE])
def test_damaged_model_file_is_one_line(run: Path, tmp_path: Path, capsys: Capsys, command: str, case: str) -> None:
    path, words = damaged_model(run, tmp_path, case)
    before = path.read_bytes()
    line = fails(capsys, [command, str(path)], str(path), words)
    assert "weights_only" not in line  # torch's advice to unpickle anything is not passed on
    assert path.read_bytes() == before


def test_random_bytes_are_always_a_checkpoint_error(tmp_path: Path) -> None:
    """Random bytes reach torch's legacy unpickler, which fails in many ways; all are caught."""
    rng, path = np.random.default_rng(0), tmp_path / "model.pt"
    for size in [1, 2, 3, 8, 64, 4096] * 50:
        path.write_bytes(rng.bytes(size))
        with pytest.raises(CheckpointError, match="is not a PyTorch file"):
            read_checkpoint(path)


def test_the_stored_crc_of_every_tensor_is_checked(run: Path, tmp_path: Path, capsys: Capsys) -> None:
    """torch.load itself accepts a flipped bit in a weight; every reader of crmvae refuses it."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(flip_a_weight_bit((run / "checkpoint.pt").read_bytes()))
    torch.load(path, weights_only=True)  # loads, with one weight changed
    entry = fileio.crc_failure(path)
    assert entry is not None and entry.startswith(("archive/data/", "checkpoint/data/"))
    assert fileio.crc_failure(run / "checkpoint.pt") is None
    with pytest.raises(CheckpointError, match=f"bytes of {entry} differ from their stored CRC-32"):
        read_checkpoint(path)
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.copy(path, resumed / "checkpoint.pt")
    fails(capsys, ["train", "--out", str(resumed), "--resume", "--epochs", "2"], "checkpoint.pt", "CRC-32")


def test_files_saved_without_crcs_still_load(tmp_path: Path) -> None:
    """An archive written with torch's CRC-32 turned off stores 0 for each entry: nothing to check."""
    path = tmp_path / "plain.pt"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.arange(4.0)}, path)
    finally:
        torch.serialization.set_crc32_options(True)
    assert fileio.crc_failure(path) is None
    assert torch.equal(fileio.torch_load(path)["w"], torch.arange(4.0))


def test_pickled_objects_are_refused(tmp_path: Path, capsys: Capsys) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "crmvae", "version": 1, "hook": os.system}, path)
    line = fails(capsys, ["info", str(path)], str(path), "refused", "could run code")
    assert "weights_only" not in line


# --------------------------------------------------------------------------------------------
# resuming a damaged training checkpoint


def resumed(run: Path, tmp_path: Path, damage: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of the run folder with its checkpoint.pt damaged and model.pt removed."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (out / name).write_bytes((run / name).read_bytes())
    torch.save(damage(payload(run / "checkpoint.pt")), out / "checkpoint.pt")
    return out


def _optimizer_reshaped(p: dict[str, Any]) -> dict[str, Any]:
    state = {i: dict(s) for i, s in p["optimizer"]["state"].items()}
    state[0]["exp_avg"] = torch.zeros(state[0]["exp_avg"].numel() + 1)
    return p | {"optimizer": p["optimizer"] | {"state": state}}


RESUME_DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    **{f"no {key}": (without(key), f"'{key}'") for key in [*MODEL_KEYS, *TRAINING_KEYS]
       if key not in ("format", "version", "optimizer")},
    "no optimizer": (without("optimizer"), "holds a model but no training state"),
    "no rng_state cpu": (lambda p: p | {"rng_state": {}}, "'rng_state' lacks 'cpu'"),
    "global_step a string": (lambda p: p | {"global_step": "7"}, "'global_step' is a str"),
    "wrong-shape weight": (reshaped, "stored weights are unusable"),
    "wrong-shape optimizer state": (_optimizer_reshaped, "optimizer state 'exp_avg'"),
    "rng_state of another size": (lambda p: p | {"rng_state": {"cpu": torch.zeros(10, dtype=torch.uint8)}}, "no CPU RNG state"),
    "negative position": (lambda p: p | {"epoch": -1}, "'epoch' must be >= 0"),
    "sums of other terms": (
        lambda p: p | {"log_mark": {"sums": torch.zeros(1), "examples": 8}}, "'log_mark' does not hold one sum per term"
    ),
    "step beyond its epoch": (lambda p: p | {"step_in_epoch": 99}, "step 99 of an epoch of 3 steps"),
    "best weights not tensors": (lambda p: p | {"best_model": {"w": 1}}, "'best_model' holds values other than tensors"),
    "best loss a string": (lambda p: p | {"best_val_loss": "3.0"}, "'best_val_loss' is a str"),
    "plateau best a list": (lambda p: p | {"plateau_best": [1.0]}, "'plateau_best' is a list"),
    "stopped flag a number": (lambda p: p | {"early_stopped": 1}, "'early_stopped' is a int"),
    "negative plateau count": (lambda p: p | {"plateau_reductions": -2}, "'plateau_reductions' must be >= 0"),
    "best epoch a float": (lambda p: p | {"best_epoch": 1.5}, "'best_epoch' is a float"),
}


@pytest.mark.parametrize("case", RESUME_DAMAGE)
def test_damaged_training_checkpoint_is_one_line_on_resume(run: Path, tmp_path: Path, capsys: Capsys, case: str) -> None:
    damage, words = RESUME_DAMAGE[case]
    out = resumed(run, tmp_path, damage)
    before = (out / "checkpoint.pt").read_bytes()
    fails(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2"], str(out / "checkpoint.pt"), words)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_another_objectives_checkpoint_is_refused_on_resume(run: Path, tmp_path: Path, capsys: Capsys) -> None:
    other = tmp_path / "other"
    data = Path(payload(run / "model.pt")["run_config"]["data"]["root"])
    assert main(["train", "--data", str(data), "--model", "mvae", "--out", str(other), "--set", "train.max_steps=1", *FAST]) == 0
    capsys.readouterr()
    out = resumed(run, tmp_path, lambda p: payload(other / "checkpoint.pt"))
    fails(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2"], "model.objective")


def test_info_checks_the_weights(run: Path, capsys: Capsys) -> None:
    assert main(["info", str(run / "checkpoint.pt")]) == 0
    assert "kind: training checkpoint" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# unwritable and full locations, kills during writes, permissions


class _FullDisk:
    """A file handle whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, handle: Any, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data: bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def fail_opening(monkeypatch: pytest.MonkeyPatch, fault: Callable[[str, str, Any], Any]) -> None:
    """Route :mod:`crmvae.fileio`'s ``open`` through ``fault(path, mode, handle_opener)``."""
    real = open
    def opened(path: Any, mode: str = "r", **kw: Any) -> Any:
        return fault(str(path), mode, lambda: real(path, mode, **kw))

    monkeypatch.setattr(fileio, "open", opened, raising=False)


def copy_run(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "model.pt"):
        (out / name).write_bytes((run / name).read_bytes())
    return out


@pytest.mark.parametrize("target", ["checkpoint.pt", "metrics.jsonl", "model.pt"])
def test_full_disk_is_one_line_and_keeps_the_saved_files(
    run: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    out = copy_run(run, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    room = 1000 if target.endswith(".pt") else 0  # torch.save fails midway; a log line at once
    fail_opening(monkeypatch, lambda path, mode, opener: _FullDisk(opener(), room) if target in Path(path).name else opener())
    args = ["train", "--out", str(out), "--resume", "--epochs", "2"]
    fails(capsys, args, f"cannot write {out / target}: No space left on device", "free some space")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    if target.endswith(".pt"):
        assert (out / target).read_bytes() == before[target]
    for name in ("checkpoint.pt", "model.pt"):
        validate_checkpoint(out / name)


def test_read_only_location_is_one_line(run: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(path: str, mode: str, opener: Callable[[], Any]) -> Any:
        if any(c in mode for c in "wxa"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return opener()

    fail_opening(monkeypatch, read_only)
    data = Path(payload(run / "model.pt")["run_config"]["data"]["root"])
    out = tmp_path / "out"
    fails(capsys, ["train", "--data", str(data), "--out", str(out), *FAST], f"cannot write {out / 'config.yaml'}", "read-only")


@pytest.mark.parametrize("command", ["train", "generate", "evaluate"])
def test_output_under_proc_is_one_line(run: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Training fails before it loads data, evaluating before it evaluates."""
    for module, name in ((trainer, "load_source"), (evaluation, "evaluate_checkpoint")):
        monkeypatch.setattr(module, name, lambda *args: pytest.fail("the work started"))
    out = "/proc/crmvae-test/out"
    args = {
        "train": ["train", "--data", str(payload(run / "model.pt")["run_config"]["data"]["root"]), "--out", out, *FAST],
        "generate": ["generate", str(run / "model.pt"), "--n", "2", "--out", out],
        "evaluate": ["evaluate", str(run), "--out", f"{out}/evaluation.json"],
    }[command]
    fails(capsys, args, "cannot create the folder /proc/crmvae-test", "choose another location")


def test_a_write_killed_midway_leaves_a_temporary_that_the_next_run_removes(run: Path, tmp_path: Path, capsys: Capsys) -> None:
    out = copy_run(run, tmp_path)
    before = (out / "checkpoint.pt").read_bytes()
    writer = (
        "import sys, time; from crmvae.fileio import atomic_write\n"
        "def write(f): f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(fileio.__file__).parents[1])}
    command = [sys.executable, "-c", writer, str(out / "checkpoint.pt")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        proc.send_signal(signal.SIGKILL)
    stale = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].startswith(".checkpoint.pt.")
    assert (out / "checkpoint.pt").read_bytes() == before
    fails(capsys, ["train", "--out", str(out), "--resume", "--set", "train.seed=1"], "configuration differs")
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == stale  # fresh: perhaps another namespace's
    age(out / stale[0])
    fails(capsys, ["train", "--out", str(out), "--resume", "--set", "train.seed=1"], "configuration differs")  # any start cleans
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("error", [ValueError("a bug in the writer"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: BaseException) -> None:
    path = fileio.atomic_write(tmp_path / "model.pt", b"old")

    def write(handle: Any) -> None:
        handle.write(b"half")
        raise error

    with pytest.raises(type(error)):  # not an OSError: raised as it is
        fileio.atomic_write(path, write)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def age(path: Path) -> None:
    """Make ``path`` look untouched for longer than a dead writer's temporary may stay."""
    then = time.time() - fileio.STALE_AFTER_S - 60
    os.utime(path, (then, then))


def test_temporaries_of_live_writers_are_kept(tmp_path: Path) -> None:
    mine = tmp_path / f".model.pt.{fileio._HOST}.{os.getpid()}.0123abcd.tmp"
    mine.write_bytes(b"in progress")
    assert fileio.remove_stale_temporaries(tmp_path) == [] and mine.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_are_created_with_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = fileio.atomic_write(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_run_files_are_group_readable_under_the_default_umask(run: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.pt", "checkpoint.pt", "config.yaml", "summary.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# --------------------------------------------------------------------------------------------
# registries


#: Each registry, a function looking a name up in it, and an entry it holds.
REGISTRIES: dict[str, tuple[Any, Callable[[str], Any], str]] = {
    "objective": (OBJECTIVES, get_objective, "crmvae"),
    "network": (NETWORKS, NETWORKS.lookup, "generic_mlp"),
    "dataset": (DATASETS, get_dataset, "polymnist"),
    "likelihood": (LIKELIHOODS, build_likelihood, "normal"),
    "classifier": (ARCHITECTURES, ARCHITECTURES.lookup, "mlp"),
}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_registries_refuse_duplicates_and_list_the_known_names(kind: str) -> None:
    registry, lookup, known = REGISTRIES[kind]
    with pytest.raises(ConfigError, match=f"'{known}' is already registered"):
        registry.add(known, registry[known])
    with pytest.raises(ConfigError, match=rf"unknown .*'nope'; available: \[.*'{known}'"):
        lookup("nope")


# --------------------------------------------------------------------------------------------
# configuration values: checked when a configuration is built, so the API meets the CLI's errors

BAD_VALUES = {
    "train.epochs=0": "train.epochs must be >= 1, got 0",  # would write an untrained model.pt
    "train.lr=-1": "train.lr must be a positive number, got -1",
    "train.lr=.nan": "train.lr must be a positive number, got nan",
    "train.batch_size=0": "train.batch_size must be >= 1, got 0",
    "train.max_steps=0": "train.max_steps must be >= 1 or null, got 0",
    "train.precision=fp16": "train.precision: 'fp16' is not one of",
    "data.train_size=0": "data.train_size must be >= 1 or null, got 0",
    "data.seed=-1": "data.seed must be >= 0, got -1",
    "model.latent_dim=0": "model.latent_dim must be >= 1, got 0",
    "model.objective=vae": "unknown model/objective 'vae'; available: [",
    "model.objective_params.beta=-1": "beta must be a number >= 0, got -1",
    "model.objective_params.beta=.inf": "beta must be a number >= 0, got inf",
    "train.threads=100000": "train.threads must be <= 1024 or null, got 100000",  # torch crashed at 65,536
}


@pytest.mark.parametrize("override", BAD_VALUES)
def test_bad_values_are_refused_when_the_config_is_built(override: str, capsys: Capsys) -> None:
    message = BAD_VALUES[override]
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_run_config("polymnist", "crmvae", "cpu-short", [override])
    section, assignment = override.split(".", 1)
    key, value = assignment.split("=")
    cls = {"train": TrainConfig, "data": DataConfig, "model": ModelConfig}[section]
    kwargs = {"objective_params": {"beta": yaml.safe_load(value)}} if key == "objective_params.beta" else {key: yaml.safe_load(value)}
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(**kwargs)
    fails(capsys, ["train", "--set", override], message)


def test_values_assigned_after_building_are_checked_by_train(tmp_path: Path) -> None:
    config = build_run_config("polymnist", "crmvae", "cpu-short")
    config.train.epochs = 0
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        train(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value, message", [
    ("shape", [3, 0], "shape must be a non-empty list of positive sizes"),
    ("likelihood_scale", 0.0, "likelihood_scale must be > 0"),
    ("weight", -1.0, "weight must be >= 0"),
])
def test_bad_modality_values_are_refused_when_built(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"modality 'm': {message}"):
        ModalityConfig(**{"name": "m", "shape": [3], field: value})


# --------------------------------------------------------------------------------------------
# absurd data values


def _vectors(row: int, value: float) -> np.ndarray:
    x = np.random.default_rng(1).normal(size=(24, 3))
    x[row, 1] = value
    return x


@pytest.mark.parametrize("value, words", [
    (1e30, "example 5 holds 1e+30, outside [-1e+06, 1e+06]"),
    (-2e7, "example 5 holds -2e+07, outside [-1e+06, 1e+06]"),
    (np.inf, "example 5 is infinite"),
    (1e300, "example 5 is infinite or beyond float32's range"),
    (np.nan, "example 5 is partly NaN"),
])
def test_absurd_vector_values_are_refused_on_load(tmp_path: Path, capsys: Capsys, value: float, words: str) -> None:
    root = user_data(tmp_path / "data", _vectors(5, value))
    args = ["train", "--data", str(root), "--out", str(tmp_path / "out"), *FAST]
    fails(capsys, args, str(root / "vec.npy"), "modality 'vec'", words)
    assert not any((tmp_path / "out").iterdir())


def test_a_modality_missing_in_every_training_example_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    root = user_data(tmp_path / "data", np.full((24, 3), np.nan, dtype=np.float32))  # NaN rows: missing entries
    args = ["train", "--data", str(root), "--out", str(tmp_path / "out"), *FAST]
    fails(capsys, args, "modality 'vec' is missing in all 19 training examples", "give it data or remove it")
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_a_test_split_may_lack_a_modality(tmp_path: Path) -> None:
    """Inference from the modalities present: a test folder without one of them trains and evaluates."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 20), ("test", 8)):
        user_data(root / split)
        vec = rng.normal(size=(n, 3)).astype(np.float32)
        if split == "test":
            vec[:] = np.nan
        np.save(root / split / "img.npy", rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8))
        np.save(root / split / "vec.npy", vec)
    (root / "modalities.yaml").write_text((root / "train" / "modalities.yaml").read_text())
    for split in ("train", "test"):
        (root / split / "modalities.yaml").unlink()
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "out"), "--epochs", "1", *FAST]) == 0


def test_bernoulli_vectors_must_lie_in_the_unit_interval(tmp_path: Path, capsys: Capsys) -> None:
    root = user_data(tmp_path / "data", np.random.default_rng(1).random((24, 3)) * 1.5)
    specs = [SPECS[0], SPECS[1] | {"likelihood": "bernoulli"}]
    (root / "modalities.yaml").write_text(yaml.safe_dump({"modalities": specs}))
    fails(capsys, ["data", "build", "user", "--set", f"root={root}"], "modality 'vec'", "outside [0, 1] that a bernoulli decoder")


# --------------------------------------------------------------------------------------------
# messages


def test_messages_are_lines_through_the_progress_writer(capsys: Capsys) -> None:
    show_messages()
    show_messages()  # once per process
    logging.getLogger("crmvae.data.cache").warning("data cache %s is corrupt; rebuilding it", "x.pt")
    logging.getLogger("crmvae.data.cache").info("building x")  # notices below warnings stay quiet
    assert capsys.readouterr().err == "crmvae: warning: data cache x.pt is corrupt; rebuilding it\n"


def test_flags_apply_after_set_and_the_config_is_checked_once(tmp_path: Path) -> None:
    """``--epochs 1`` overrides ``--set train.epochs=0``: only the final configuration is checked."""
    args = build_parser().parse_args(["train", "--set", "train.epochs=0", "--epochs", "1", "--data-dir", str(tmp_path / "a b")])
    config, label = _run_config(args)
    assert (config.train.epochs, config.data.data_dir, label) == (1, str(tmp_path / "a b"), "paper")


# --------------------------------------------------------------------------------------------
# other things a new user tries


@pytest.mark.parametrize("command", ["info", "generate", "evaluate", "export"])
def test_a_folder_without_a_model_is_one_line(tmp_path: Path, capsys: Capsys, command: str) -> None:
    fails(capsys, [command, str(tmp_path)], f"folder {tmp_path} holds none of model.pt, checkpoint.pt or model.safetensors")


def test_a_folder_given_as_checkpoint_is_one_line(run: Path) -> None:
    with pytest.raises(CheckpointError, match=f"checkpoint {run} is a folder; give a model.pt or checkpoint.pt file"):
        read_checkpoint(run)


@pytest.mark.parametrize("content, words", [
    (b"\x90\xf1 binary", "not valid YAML/JSON: 'utf-8' codec can't decode"),
    (b"train: [1,2", "not valid YAML/JSON: while parsing a flow sequence"),  # a multi-line YAML error, on one line
])
def test_unreadable_config_file_is_one_line(tmp_path: Path, capsys: Capsys, content: bytes, words: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    fails(capsys, ["train", "--config", str(path)], str(path), words)


@pytest.mark.parametrize("content", [b"", b"null\n", b"# only a comment\n"])
@pytest.mark.parametrize("command", ["resume", "generate", "evaluate"])
def test_an_empty_run_config_is_refused_not_read_as_defaults(
    run: Path, tmp_path: Path, capsys: Capsys, content: bytes, command: str
) -> None:
    out = copy_run(run, tmp_path)
    (out / "config.yaml").write_bytes(content)
    args = {"resume": ["train", "--out", str(out), "--resume", "--epochs", "2"],
            "generate": ["generate", str(out / "model.pt"), "--n", "2"],
            "evaluate": ["evaluate", str(out / "model.pt"), "--metrics", "similarity", "--n-test", "8"]}[command]
    fails(capsys, args, f"{out / 'config.yaml'} is empty")


@pytest.mark.parametrize("command, section, source", [("resume", "train", "checkpoint.pt"), ("evaluate", "data", "model.pt")])
def test_a_run_config_cut_at_a_line_end_is_completed_from_the_checkpoint(
    run: Path, tmp_path: Path, capsys: Capsys, command: str, section: str, source: str
) -> None:
    """Cut at a line end, config.yaml stays valid YAML: the keys it lost are named and taken from
    the configuration stored in the checkpoint, not from the defaults; a resumed run writes it whole again."""
    out = copy_run(run, tmp_path)
    whole = (out / "config.yaml").read_text()
    lines = whole.splitlines(keepends=True)
    start = lines.index(f"{section}:\n")
    (out / "config.yaml").write_text("".join(lines[: start + 3]))
    args = {"resume": ["train", "--out", str(out), "--resume", "--epochs", "2"],
            "evaluate": ["evaluate", str(out / "model.pt"), "--metrics", "similarity", "--n-test", "8"]}[command]
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("crmvae: warning")]
    assert len(warnings) == 1 and "Traceback" not in err, err
    assert str(out / "config.yaml") in warnings[0] and "cut short" in warnings[0]
    assert f"{section}.{lines[start + 3].split(':')[0].strip()}" in warnings[0]  # the first key cut off
    assert warnings[0].endswith(f"they take the values stored in {out / source}")
    if command == "resume":
        assert (out / "config.yaml").read_text() == whole.replace("epochs: 1\n", "epochs: 2\n", 1)


def test_a_run_without_its_config_file_resumes_with_the_checkpoints(run: Path, tmp_path: Path, capsys: Capsys) -> None:
    out = copy_run(run, tmp_path)
    (out / "config.yaml").unlink()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert f"{out / 'config.yaml'} is missing; resuming with the run configuration stored in {out / 'checkpoint.pt'}" in err
    assert load_config(RunConfig, out / "config.yaml").data.dataset == "user"


#: Damaged metrics.jsonl lines before the last: (the text, words of the message).
METRICS_DAMAGE = {
    "not UTF-8": (b"\xff\xfe{}\n", "not UTF-8 text"),
    "not JSON": (b'{"global_step": 1\n{"global_step": 2}\n', "line 1: not JSON"),
    "an array": (b'[1, 2]\n{"global_step": 2}\n', "line 1: '[1, 2]' is not a JSON object"),
    "null": (b'null\n{"global_step": 2}\n', "line 1: 'null' is not a JSON object"),
    "a text step": (b'{"global_step": "3"}\n', "line 1: global_step '3' is not an integer"),
    "a whole last line not JSON": (b'{"global_step": 1}\nhello\n', "line 2: not JSON ('hello')"),
}


@pytest.mark.parametrize("case", METRICS_DAMAGE)
def test_a_damaged_metrics_log_is_one_line_on_resume(run: Path, tmp_path: Path, capsys: Capsys, case: str) -> None:
    out = copy_run(run, tmp_path)
    content, words = METRICS_DAMAGE[case]
    (out / "metrics.jsonl").write_bytes(content)
    fails(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2"], str(out / "metrics.jsonl"), words, "move it aside")
    assert (out / "metrics.jsonl").read_bytes() == content


def test_a_line_torn_by_a_kill_is_dropped_on_resume(run: Path, tmp_path: Path) -> None:
    out = copy_run(run, tmp_path)
    log = out / "metrics.jsonl"
    whole = read_metrics(log)
    log.write_text(log.read_text() + '{"kind": "step", "global_st')
    assert read_metrics(log) == whole
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--set", "train.progress=false"]) == 0
    assert read_metrics(log)[: len(whole)] == whole


def test_an_unusable_run_file_is_one_line(run: Path, tmp_path: Path, capsys: Capsys) -> None:
    out = copy_run(run, tmp_path)
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").mkdir()
    fails(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2"], f"cannot use {out / 'metrics.jsonl'}: Is a directory")


def test_huge_labels_are_refused_on_load(tmp_path: Path, capsys: Capsys) -> None:
    root = user_data(tmp_path / "data")
    np.save(root / "labels.npy", np.r_[np.zeros(23, dtype=np.int64), 10**12])
    args = ["data", "build", "user", "--set", f"root={root}"]
    fails(capsys, args, str(root / "labels.npy"), "labels span [0, 1000000000000], expected 0..99999")


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 204800000000 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 190.73 GiB. GPU 0 has a total capacity of 79 GiB"),
])
def test_out_of_memory_is_one_line(tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """What torch raises for model.latent_dim=100000000 (200 GB of weights), without allocating it."""
    def allocate(*args: Any) -> None:
        raise error

    monkeypatch.setattr(MultimodalVAE, "__init__", allocate)
    args = ["train", "--data", str(user_data(tmp_path / "data")), "--out", str(tmp_path / "out"), *FAST]
    fails(capsys, args, "out of memory (tried to allocate ", "use a smaller model (model.latent_dim)")


@pytest.mark.parametrize("name, write, words", [
    ("vec.npy", lambda p: p.write_bytes(b"x"), "is not a NumPy file (truncated"),
    ("vec.npy", lambda p: np.save(p, np.array([[{"a": 1}] * 3] * 24, dtype=object)), "holds Python objects rather than numbers"),
    ("data.npz", lambda p: p.write_bytes(b"PK\x03\x04 not really"), "is not a NumPy file"),
    ("data.npz", lambda p: np.savez(p, labels=np.array([None] * 24, dtype=object)), "holds Python objects rather than numbers"),
])
def test_unloadable_arrays_are_one_line_without_numpys_pickle_advice(
    tmp_path: Path, capsys: Capsys, name: str, write: Callable[[Path], Any], words: str
) -> None:
    root = user_data(tmp_path / "data")
    write(root / name)
    line = fails(capsys, ["data", "build", "user", "--set", f"root={root}"], str(root / name), words)
    assert "allow_pickle" not in line


def test_rewriting_a_file_removes_the_temporaries_killed_writes_left_of_it(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as proc:
        pass  # a process id that no longer runs
    stale = [tmp_path / f".{name}.{host}.{proc.pid}.0123abcd.tmp"
             for name, host in (("cache.pt", fileio._HOST), ("other.pt", fileio._HOST), ("cache.pt", "elsewhere"))]
    for path in stale:
        path.write_bytes(b"half")
        age(path)
    fresh = tmp_path / f".cache.pt.{fileio._HOST}.{proc.pid}.4567abcd.tmp"
    fresh.write_bytes(b"being written by a process this namespace cannot see")
    fileio.atomic_write(tmp_path / "cache.pt", b"new")
    assert fresh.exists()
    fresh.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([stale[1].name, stale[2].name, "cache.pt"])
