"""benchmarks/study.sh: the compare commands of each study and stage, with a stand-in ``crmvae``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = """#!/usr/bin/env bash
# records every call; a training call leaves a record folder for its model and seed, as compare does
echo "$*" >> "$CALLS"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in --out) out=${args[i+1]} ;; --models) models=${args[i+1]} ;; --seeds) seeds=${args[i+1]} ;; esac
done
[[ " $* " == *" --report-only "* ]] || mkdir -p "$out/records/$models/seed$seeds"
"""


def run_study(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None, command: str = "compare") -> list[list[str]]:
    """The arguments of every ``crmvae COMMAND`` call the script makes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "crmvae").write_text(FAKE)
    (bin_dir / "crmvae").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls), "RUNS_DIR": str(tmp_path / "runs"),
           **(env_extra or {})}
    # a copy of the script in a scratch tree, so the report folders it names are made there
    (tmp_path / "benchmarks").mkdir(exist_ok=True)
    (tmp_path / "benchmarks" / "study.sh").write_text((ROOT / "benchmarks" / "study.sh").read_text())
    subprocess.run(["bash", str(tmp_path / "benchmarks" / "study.sh"), *args], env=env, check=True, capture_output=True)
    return [line.split()[1:] for line in calls.read_text().splitlines() if line.split()[0] == command]


def value(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


@pytest.mark.parametrize(("study", "dataset", "preset", "out", "stage", "trained"), [
    ("polymnist-short", "polymnist", "cpu-short", "docs/results/polymnist-short-study", "6", [("mmvae", "0"), ("mmjsd", "0")]),
    ("polymnist", "polymnist", "paper", "docs/results/polymnist-study", "3", [("mopoe", "0"), ("mmjsd_poe", "0"), ("mvae", "0")]),
    ("polymnist", "polymnist", "paper", "docs/results/polymnist-study", "7", [("crmvae@recon_coef=half", "0")]),
    ("mnist_svhn_text-short", "mnist_svhn_text", "cpu-short", "docs/results/mnist-svhn-text-short-study", "4",
     [("mopoe", "1"), ("mvae", "1")]),
])
def test_each_stage_trains_its_models_and_reports_every_record(
    tmp_path: Path, study: str, dataset: str, preset: str, out: str, stage: str, trained: list[tuple[str, str]]
) -> None:
    calls = run_study(tmp_path, study, stage)
    training = [c for c in calls if "--report-only" not in c]
    assert [(value(c, "--models"), value(c, "--seeds")) for c in training] == trained
    for call in calls:
        assert (value(call, "--dataset"), value(call, "--preset"), value(call, "--out")) == (dataset, preset, out)
        assert value(call, "--snapshots") == "1,3,10" and value(call, "--n-test") == "2000"
        assert value(call, "--runs-dir") == str(tmp_path / "runs" / Path(out).name)
    reports = [c for c in calls if "--report-only" in c]
    assert len(reports) == len(trained)  # after each model, a report of every record so far
    assert value(reports[-1], "--models") == ",".join(m for m, _ in trained)


def test_after_each_model_the_summary_tables_are_rewritten(tmp_path: Path) -> None:
    calls = run_study(tmp_path, "polymnist", "3", command="summarize")
    assert calls == [["--update", "README.md", "--update", "docs/results/index.md"]] * 3


def test_the_long_mnist_svhn_text_study_continues_every_run_of_the_short_one(tmp_path: Path) -> None:
    for model in ("mopoe", "mvae"):
        run = tmp_path / "runs" / "mnist-svhn-text-short-study" / "mnist_svhn_text" / model / "seed1"
        run.mkdir(parents=True)
        (run / "checkpoint.pt").write_text(f"{model} at pass 10")
        records = tmp_path / "docs" / "results" / "mnist-svhn-text-short-study" / "records" / model / "seed1"
        records.mkdir(parents=True)
        (records / "epoch10.json").write_text("{}")
    calls = run_study(tmp_path, "mnist_svhn_text-short-long", "4")
    training = [c for c in calls if "--report-only" not in c]
    assert [(value(c, "--models"), value(c, "--seeds")) for c in training] == [("mopoe", "1"), ("mvae", "1")]
    assert all(value(c, "--snapshots") == "1,3,10,30" and value(c, "--dataset") == "mnist_svhn_text" for c in calls)
    assert all(value(c, "--out") == "docs/results/mnist-svhn-text-short-long-study" for c in calls)
    long_runs = tmp_path / "runs" / "mnist-svhn-text-short-long-study" / "mnist_svhn_text"
    assert (long_runs / "mvae" / "seed1" / "checkpoint.pt").read_text() == "mvae at pass 10"
    long_records = tmp_path / "docs" / "results" / "mnist-svhn-text-short-long-study" / "records"
    assert (long_records / "mopoe" / "seed1" / "epoch10.json").is_file()


def test_plan_asks_each_stage_for_its_plan_and_runs_nothing(tmp_path: Path) -> None:
    calls = run_study(tmp_path, "mnist_svhn_text-short", env_extra={"PLAN": "1"})
    assert all("--plan" in c and "--report-only" not in c for c in calls)
    assert [(value(c, "--models"), value(c, "--seeds")) for c in calls] == [
        ("crmvae,mvtcae", "0"), ("mopoe,mvae", "0"), ("crmvae,mvtcae", "1"), ("mopoe,mvae", "1")]
    (tmp_path / "one").mkdir()
    one_stage = run_study(tmp_path / "one", "polymnist", "2", env_extra={"PLAN": "1"})
    assert [(value(c, "--models"), value(c, "--seeds"), value(c, "--preset")) for c in one_stage] == [
        ("crmvae,mvtcae", "1", "paper")]


def test_an_unknown_study_is_refused(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as caught:
        run_study(tmp_path, "mnist")
    assert caught.value.returncode == 2 and b"unknown study mnist" in caught.value.stderr


def test_the_long_study_continues_the_short_studys_runs_and_records(tmp_path: Path) -> None:
    short_run = tmp_path / "runs" / "polymnist-short-study" / "polymnist" / "crmvae" / "seed0"
    short_run.mkdir(parents=True)
    (short_run / "checkpoint.pt").write_text("state at pass 10")
    short_records = tmp_path / "docs" / "results" / "polymnist-short-study" / "records" / "crmvae" / "seed0"
    short_records.mkdir(parents=True)
    for name in ("epoch1.json", "epoch1.png", "epoch3.json", "epoch10.json"):
        (short_records / name).write_text(name)
    calls = run_study(tmp_path, "polymnist-short-long")
    training = [c for c in calls if "--report-only" not in c]
    assert [(value(c, "--models"), value(c, "--seeds")) for c in training] == [("crmvae", "0"), ("mopoe", "0")]
    assert all(value(c, "--snapshots") == "1,3,10,30" and value(c, "--preset") == "cpu-short" for c in calls)
    long_run = tmp_path / "runs" / "polymnist-short-long-study" / "polymnist"
    assert (long_run / "crmvae" / "seed0" / "checkpoint.pt").read_text() == "state at pass 10"
    assert not (long_run / "mopoe").exists()  # no earlier run: it trains from the start
    long_records = tmp_path / "docs" / "results" / "polymnist-short-long-study" / "records" / "crmvae" / "seed0"
    assert sorted(p.name for p in long_records.iterdir()) == ["epoch1.json", "epoch1.png", "epoch10.json", "epoch3.json"]
    # a second call leaves the continued run alone
    (long_run / "crmvae" / "seed0" / "checkpoint.pt").write_text("state at pass 20")
    run_study(tmp_path, "polymnist-short-long")
    assert (long_run / "crmvae" / "seed0" / "checkpoint.pt").read_text() == "state at pass 20"
