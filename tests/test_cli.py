"""The command line: kill + resume, error messages, info, generate, models, data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crmvae.cli import main
from crmvae.config import RunConfig, load_config
from crmvae.training import read_metrics, train

TIMEOUT_S = 120


def train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """A tiny PolyMNIST run: 64 examples in batches of 16, 2 epochs (8 steps)."""
    sets = [
        "data.params.source=digits", "data.train_size=64", "data.test_size=32", "model.latent_dim=8",
        "train.batch_size=16", "train.epochs=2", "train.log_every=1", "train.checkpoint_every=2",
        "train.grid_examples=2", "train.progress=false", "train.threads=1",
        "train.lr=5e-4", "model.objective_params.beta=1.0",  # asserted below, whatever the preset says
    ]
    return ["train", "--dataset", "polymnist", "--model", "crmvae", "--preset", "cpu-short",
            "--data-dir", str(data_dir), "--out", str(out), *(a for s in sets for a in ("--set", s)), *extra]


def run_cli(*args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmvae", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run made through the CLI (in-process)."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(train_args(data_dir, out, "--set", "train.max_steps=2")) == 0
    return out


def test_killed_run_resumes_to_the_same_weights(data_dir: Path, tmp_path: Path) -> None:
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    args = train_args(data_dir, killed)
    main(["data", "build", "polymnist", "--data-dir", str(data_dir), "--set", "params.source=digits"])
    proc = subprocess.Popen([sys.executable, "-m", "crmvae", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (killed / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and 0 < state["step_in_epoch"] < 4, "the kill should land mid-epoch 1"
    assert not (killed / "model.pt").exists()

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    config = load_config(RunConfig, killed / "config.yaml")
    train(config, reference)  # the same run, uninterrupted

    got = torch.load(killed / "model.pt", weights_only=True)["model"]
    want = torch.load(reference / "model.pt", weights_only=True)["model"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    steps = [(r["global_step"], r["loss"]) for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "step"]
    want_steps = [(r["global_step"], r["loss"]) for r in read_metrics(reference / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == want_steps  # no duplicated or missing records, identical losses


def test_resume_refuses_a_changed_config(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(trained), "--resume", "--set", "train.validation_size=8"]) == 2
    err = capsys.readouterr().err
    assert "crmvae: error: cannot resume" in err and "train.validation_size: run has 0, given 8" in err


def test_resume_continues_from_the_run_config(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(trained), "--resume", "--set", "train.max_steps=3"]) == 0
    assert json.loads((trained / "summary.json").read_text())["global_step"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "nope"], "unknown model/objective 'nope'"),
        (["train", "--dataset", "nope"], "'nope'"),
        (["train", "--set", "train.nokey=1"], "unknown key(s) ['nokey']"),
        (["train", "--set", "nosection"], "not of the form section.key=value"),
        (["train", "--config", "/nonexistent.yaml"], "/nonexistent.yaml does not exist"),
        (["info", "/nonexistent.pt"], "checkpoint /nonexistent.pt does not exist"),
        (["generate", "/nonexistent.pt"], "checkpoint /nonexistent.pt does not exist"),
        (["data", "info", "nope"], "unknown dataset 'nope'"),
    ],
)
def test_errors_are_one_line_messages(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("crmvae: error: ") and message in err and "Traceback" not in err


def test_corrupt_checkpoint_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_cli("info", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"crmvae: error: checkpoint {bad} is not a PyTorch file") and "Traceback" not in result.stderr


def test_info(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(trained / "checkpoint.pt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "training checkpoint" and info["objective"] == "crmvae"
    assert info["latent_dim"] == 8 and [m["name"] for m in info["modalities"]] == [f"m{i}" for i in range(5)]
    assert info["parameters"] > 0 and info["global_step"] >= 2 and info["size_mb"] > 0
    assert main(["info", str(trained / "model.pt")]) == 0
    out = capsys.readouterr().out
    assert "kind: model" in out and "objective_params: {'beta': 1.0" in out


def test_generate(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grids"
    args = ["generate", str(trained / "model.pt"), "--from", "m0", "--from", "m0,m1", "--n", "3", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["from_m0.png", "from_m0+m1.png", "prior_samples.png"]
    first = (out / "from_m0.png").read_bytes()
    assert main(args) == 0 and (out / "from_m0.png").read_bytes() == first  # deterministic
    assert main([*args, "--from", "m9"]) == 2
    assert "unknown modalities ['m9']" in capsys.readouterr().err


def test_generate_from_a_mixture_fitted_to_the_aggregate_posterior(trained: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", str(trained), "--n", "3", "--out", str(tmp_path), "--sampler", "gmm",
            "--sampler-set", "n_components=2", "--sampler-set", "covariance=diag"]
    assert main(args) == 0
    assert Path(capsys.readouterr().out.split()[-1]).name == "gmm_samples.png"
    first = (tmp_path / "gmm_samples.png").read_bytes()
    assert main(args) == 0 and (tmp_path / "gmm_samples.png").read_bytes() == first  # the fit is seeded too
    assert main([*args, "--sampler-set", "n_components=0"]) == 2
    assert "sampler.n_components must be >= 1" in capsys.readouterr().err
    assert main(["generate", str(trained), "--sampler", "flow"]) == 2
    assert "unknown sampler 'flow'; available: ['gmm', 'maf', 'prior']" in capsys.readouterr().err
    flow = ["generate", str(trained), "--n", "3", "--out", str(tmp_path), "--sampler", "maf",
            "--sampler-set", "flow_epochs=2", "--sampler-set", "flow_hidden=16"]
    assert main(flow) == 0 and Path(capsys.readouterr().out.split()[-1]).name == "maf_samples.png"
    first = (tmp_path / "maf_samples.png").read_bytes()
    assert main(flow) == 0 and (tmp_path / "maf_samples.png").read_bytes() == first  # reloaded, same draws


def test_models_and_data_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "crmvae:" in out and "mvtcae:" in out and "beta: float = 1.0" in out
    assert main(["data", "list"]) == 0
    assert "polymnist:" in capsys.readouterr().out


def test_generate_from_an_empty_subset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_faults import FAST, user_data

    run = tmp_path / "run"
    assert main(["train", "--data", str(user_data(tmp_path / "data")), "--out", str(run), "--epochs", "1", *FAST]) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--from", ",", "--n", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith("subset '': an empty subset; the model has ['img', 'vec']")


def test_print_config_is_the_run_configuration_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmvae.config import RunConfig, load_config
    from crmvae.presets import build_run_config

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "polymnist", "--preset", "cpu-short", "--set", "train.optimizer=adamw",
                 "--epochs", "4", "--print-config"]) == 0
    (tmp_path / "printed.yaml").write_text(capsys.readouterr().out)
    expected = build_run_config("polymnist", "crmvae", "cpu-short", ["train.optimizer=adamw", "train.epochs=4"])
    assert load_config(RunConfig, tmp_path / "printed.yaml") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["printed.yaml"]  # no run folder


def test_encode_writes_the_latents_of_each_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from test_faults import FAST, user_data

    run = tmp_path / "run"
    assert main(["train", "--data", str(user_data(tmp_path / "data")), "--out", str(run), "--epochs", "1", *FAST]) == 0
    assert main(["encode", str(run)]) == 0
    assert capsys.readouterr().out.strip().endswith("mean:img [5, 4], mean:vec [5, 4], mean:img,vec [5, 4]")
    with np.load(run / "latents-test.npz") as arrays:
        assert sorted(arrays.files) == ["logvar:img", "logvar:img,vec", "logvar:vec", "mean:img", "mean:img,vec",
                                        "mean:vec", "modalities", "present"]
    out = tmp_path / "train.npz"
    assert main(["encode", str(run / "model.pt"), "--from", "vec,img", "--dataset-split", "train", "--n", "7",
                 "--out", str(out)]) == 0
    with np.load(out) as arrays:
        assert arrays["mean:img,vec"].shape == (7, 4) and arrays["present"].shape == (7, 2)
    capsys.readouterr()
    assert main(["encode", str(run), "--from", "img,sound"]) == 2
    assert "subset 'img,sound': unknown modalities ['sound']" in capsys.readouterr().err
    for flag in ("--n", "--batch-size"):
        assert main(["encode", str(run), flag, "0"]) == 2
        assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_compare_all_models_is_crmvae_then_every_other_objective() -> None:
    from crmvae.cli import _study_models
    from crmvae.objectives import OBJECTIVES

    assert _study_models("all") == ["crmvae", *sorted(set(OBJECTIVES) - {"crmvae"})]
    assert _study_models("mvae, crmvae") == ["mvae", "crmvae"]
