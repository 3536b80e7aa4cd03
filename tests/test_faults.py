"""Fault injection: damaged checkpoints, unwritable or full locations, kills during writes and
absurd data values each end in one line (what, which file, what to do), exit status 2, no
traceback, and nothing saved before is damaged."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from crmvae import fileio
from crmvae.checkpoint import MODEL_KEYS, TRAINING_KEYS
from crmvae.cli import main

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


def fails(capsys: pytest.CaptureFixture[str], args: list[str], *fragments: str) -> str:
    """Run the CLI in-process; assert exit 2 and one line naming ``fragments``; return it."""
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crmvae: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return lines[0]


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
    "wrong-shape weight": (reshaped, "weights do not fit"),
    "unknown weight": (lambda p: p | {"model": p["model"] | {"extra.weight": torch.zeros(1)}}, "unknown weights ['extra.weight']"),
    "bad model_config": (lambda p: p | {"model_config": p["model_config"] | {"latent_dim": "big"}}, "model configuration is invalid"),
    "weights not tensors": (lambda p: p | {"model": {"w": [1, 2]}}, "values other than tensors"),
    "another library's file": (lambda p: p["model"], "not a crmvae checkpoint"),
}
#: Damaged bytes: (the damage, words of the message).
BYTE_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda b: b[: len(b) // 2], "not a PyTorch checkpoint (truncated"),
    "garbage": (lambda b: os.urandom(4096), "not a PyTorch checkpoint"),
    "empty": (lambda b: b"", "not a PyTorch checkpoint"),
    "numpy file": (lambda b: _npy_bytes(), "not a PyTorch checkpoint"),
}


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
def test_damaged_model_file_is_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, case: str) -> None:
    path, words = damaged_model(run, tmp_path, case)
    before = path.read_bytes()
    line = fails(capsys, [command, str(path)], str(path), words)
    assert "weights_only" not in line  # torch's advice to unpickle anything is not passed on
    assert path.read_bytes() == before


def test_pickled_objects_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    **{f"no {key}": (without(key), f"'{key}'") for key in [*MODEL_KEYS, *TRAINING_KEYS] if key not in ("format", "version", "optimizer")},
    "no optimizer": (without("optimizer"), "holds a model but no training state"),
    "no rng_state cpu": (lambda p: p | {"rng_state": {}}, "'rng_state' lacks 'cpu'"),
    "global_step a string": (lambda p: p | {"global_step": "7"}, "'global_step' is a str"),
    "wrong-shape weight": (reshaped, "weights do not fit"),
    "wrong-shape optimizer state": (_optimizer_reshaped, "optimizer state 'exp_avg'"),
}


@pytest.mark.parametrize("case", RESUME_DAMAGE)
def test_damaged_training_checkpoint_is_one_line_on_resume(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    damage, words = RESUME_DAMAGE[case]
    out = resumed(run, tmp_path, damage)
    before = (out / "checkpoint.pt").read_bytes()
    fails(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2"], str(out / "checkpoint.pt"), words)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_another_objectives_checkpoint_is_refused_on_resume(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    data = Path(payload(run / "model.pt")["run_config"]["data"]["root"])
    assert main(["train", "--data", str(data), "--model", "mvae", "--out", str(other), "--set", "train.max_steps=1", *FAST]) == 0
    capsys.readouterr()
    out = resumed(run, tmp_path, lambda p: payload(other / "checkpoint.pt"))
    fails(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2"], "model.objective")


def test_info_checks_the_weights(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(run / "checkpoint.pt")]) == 0
    assert "kind: training checkpoint" in capsys.readouterr().out
