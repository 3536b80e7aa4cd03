"""``crmvae compare``: aggregation by hand, the report's tables and files, an end-to-end study and its reuse."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from crmvae.cli import main
from crmvae.config import load_config
from crmvae.errors import ConfigError
from crmvae.evaluation.compare import (
    COMPARE_FILE,
    EVALUATION_FILE,
    CompareConfig,
    aggregate,
    mean_std,
    run_comparison,
    run_dir,
)
from crmvae.evaluation.report import build_tables, format_cell, write_report

TINY_BUDGET = [
    "data.params.source=digits", "data.train_size=64", "data.test_size=32", "model.latent_dim=8",
    "train.batch_size=32", "train.epochs=2", "train.log_every=1", "train.grid_examples=2",
    "train.progress=false", "train.threads=1",
]


def fake_result(coherence: list[float], joint: float, fid: dict[str, list[float]], probes: list[float]) -> dict[str, Any]:
    """A result dict in the metrics package's schema for three modalities (coherence for k = 1, 2;
    probes for k = 1..3), the same score for every subset of one size."""
    return {
        "n_test": 32,
        "classifier_accuracy": {"m0": 0.99, "m1": 0.98, "m2": 0.97},
        "cross_coherence": {
            "table": {"m0": {"m1": coherence[0], "m1,m2": coherence[1]}, "m1": {"m0": coherence[0], "m0,m2": coherence[1]}},
            "by_size": {"1": coherence[0], "2": coherence[1]},
        },
        "joint_coherence": joint,
        "fid": {"samples": 50, "unconditional": {m: v[0] for m, v in fid.items()},
                "by_size": {m: {"1": v[1], "2": v[2]} for m, v in fid.items()}},
        "probes": {"table": {"m0": probes[0]}, "by_size": {str(k + 1): p for k, p in enumerate(probes)}, "train_examples": 20},
        "seconds": {"coherence": 1.5, "fid": 2.5, "total": 4.0},
    }


# --------------------------------------------------------------------------------------------
# aggregation and the report, from constructed results


def test_mean_std_is_the_sample_standard_deviation() -> None:
    cell = mean_std([0.5, 0.7, 0.9])
    assert cell["mean"] == pytest.approx(0.7) and cell["n"] == 3
    assert cell["std"] == pytest.approx(math.sqrt((0.04 + 0 + 0.04) / 2))
    assert mean_std([0.25]) == {"mean": 0.25, "std": 0.0, "n": 1, "values": [0.25]}


def test_aggregate_over_seeds_and_fid_means_over_targets() -> None:
    a = fake_result([0.5, 0.6], 0.3, {"m0": [10.0, 20.0, 30.0], "m1": [30.0, 40.0, 50.0]}, [0.7, 0.8, 0.9])
    b = fake_result([0.7, 0.8], 0.5, {"m0": [20.0, 20.0, 20.0], "m1": [40.0, 40.0, 40.0]}, [0.9, 0.8, 0.7])
    agg = aggregate([a, b])
    assert agg["cross_coherence.by_size.1"]["mean"] == pytest.approx(0.6)
    assert agg["cross_coherence.by_size.1"]["std"] == pytest.approx(math.sqrt(2) * 0.1)
    assert agg["cross_coherence.table.m0.m1,m2"]["values"] == [0.6, 0.8]
    # per run: unconditional mean (10+30)/2 = 20 and (20+40)/2 = 30 -> 25 +- sqrt(50)
    assert agg["fid.unconditional_mean"]["mean"] == pytest.approx(25.0)
    assert agg["fid.unconditional_mean"]["std"] == pytest.approx(math.sqrt(50))
    assert agg["fid.by_size_mean.2"]["values"] == [40.0, 30.0]
    assert "n_test" not in agg and not any(k.startswith("seconds") or k.endswith("samples") for k in agg)
    assert "probes.train_examples" not in agg and agg["probes.by_size.3"]["mean"] == pytest.approx(0.8)


def constructed_comparison(tmp_path: Path) -> dict[str, Any]:
    """Two models x two seeds with hand-picked results; run dirs that hold grids."""
    results = {
        ("good", 0): fake_result([0.5, 0.6], 0.30, {"m0": [10.0, 20.0, 30.0]}, [0.7, 0.8, 0.9]),
        ("good", 1): fake_result([0.7, 0.8], 0.50, {"m0": [20.0, 20.0, 20.0]}, [0.9, 0.8, 0.7]),
        ("bad", 0): fake_result([0.1, 0.2], 0.10, {"m0": [90.0, 80.0, 70.0]}, [0.2, 0.3, 0.4]),
        ("bad", 1): fake_result([0.3, 0.2], 0.70, {"m0": [70.0, 60.0, 50.0]}, [0.4, 0.5, 0.6]),
    }
    runs = []
    for (model, seed), result in results.items():
        out = tmp_path / "runs" / model / f"seed{seed}"
        (out / "grids").mkdir(parents=True)
        for name in ("prior_samples.png", "from_m0.png"):
            Image.new("RGB", (20, 10), (seed * 100, 0, 0)).save(out / "grids" / name)
        runs.append({
            "model": model, "seed": seed, "run_dir": str(out), "status": "new", "train_seconds": 3.0,
            "eval_seconds": 4.0, "eval_cached": False, "result": result,
            "summary": {"global_step": 10, "test_loss": 100.0 + seed, "wall_time_s": 3.0},
            "run_config": {"model": {"modalities": [{"name": "m0"}, {"name": "m1"}, {"name": "m2"}]}},
        })
    config = {"dataset": "polymnist", "models": ["good", "bad"], "seeds": [0, 1], "preset": "cpu-short",
              "budget": ["train.epochs=1"], "eval": {"fid_samples": 50}, "out_dir": str(tmp_path / "report")}
    agg = {m: aggregate([r["result"] for r in runs if r["model"] == m]) for m in config["models"]}
    return {"config": config, "command": "crmvae compare --models good,bad", "versions": {"torch": "x"},
            "runs": runs, "aggregate": agg, "seconds": 12.0}


def table_rows(markdown: str, title: str) -> dict[str, list[str]]:
    """``{row label: [cells]}`` of the Markdown table under the heading containing ``title``."""
    section = markdown.split(title, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[2:]}


def test_report_tables_hold_hand_computed_mean_std_and_bold_the_best(tmp_path: Path) -> None:
    comparison = constructed_comparison(tmp_path)
    paths = write_report(comparison, tmp_path / "report")
    md = paths["markdown"].read_text()
    # coherence k=1: good (0.5, 0.7) -> 0.600 +- 0.141; bad (0.1, 0.3) -> 0.200 +- 0.141; higher is better
    coherence = table_rows(md, "Cross-coherence by number of given modalities")
    assert coherence == {"good": ["**0.600 ± 0.141**", "**0.700 ± 0.141**"], "bad": ["0.200 ± 0.141", "0.200 ± 0.000"]}
    # joint: good (0.3, 0.5) -> 0.4; bad (0.1, 0.7) -> 0.4 +- 0.424: a tie, both bold
    joint = table_rows(md, "Joint coherence")
    assert joint["good"][0] == "**0.400 ± 0.141**" and joint["bad"][0] == "**0.400 ± 0.424**"
    assert len(joint["good"]) == 1 and "cosine" not in md  # no model has a cosine similarity: no column
    # FID: lower is better; good prior (10, 20) -> 15.0 +- 7.1, bad (90, 70) -> 80.0 +- 14.1
    fid = table_rows(md, "FID, 50 samples per set")
    assert fid["good"][0] == "**15.0 ± 7.1**" and fid["bad"][0] == "80.0 ± 14.1"
    assert fid["good"][2] == "**25.0 ± 7.1**" and fid["bad"][2] == "60.0 ± 14.1"
    assert "biased upward" in md.split("FID, 50 samples per set", 1)[1].split("\n## ", 1)[0]
    probes = table_rows(md, "Latent linear probe accuracy")
    assert probes["good"] == ["**0.800 ± 0.141**", "**0.800 ± 0.000**", "**0.800 ± 0.141**"]
    assert probes["bad"] == ["0.300 ± 0.141", "0.400 ± 0.141", "0.500 ± 0.141"]
    # the main model's per-subset table: rows are subsets (by size), columns targets, no bold
    subsets = table_rows(md, "Cross-coherence of good by conditioning subset")
    assert subsets == {"m0": ["–", "0.600 ± 0.141"], "m1": ["0.600 ± 0.141", "–"],
                       "m0,m2": ["–", "0.700 ± 0.141"], "m1,m2": ["0.700 ± 0.141", "–"]}
    # the HTML holds the same cells, opens offline and links only files beside it
    page = paths["html"].read_text()
    assert "<b>0.600 ± 0.141</b>" in page and "<td>0.200 ± 0.141</td>" in page
    assert not re.search(r"https?://", page) and "<script" not in page and "<link" not in page
    for src in re.findall(r'src="([^"]+)"', page):
        assert not Path(src).is_absolute() and (tmp_path / "report" / src).is_file(), src
    assert len(paths["plots"]) == 3 and set(paths["grids"]) == {"good", "bad"}
    for png in [*paths["plots"], *(p for ps in paths["grids"].values() for p in ps)]:
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG"
    # the grids come from each model's lowest seed
    with Image.open(tmp_path / "report" / "grids" / "bad" / "from_m0.png") as image:
        assert image.getpixel((0, 0)) == (0, 0, 0)
    assert json.loads(paths["results"].read_text()) == comparison


def test_format_cell_and_missing_scores() -> None:
    assert format_cell({"mean": 0.25, "std": 0.0, "n": 1}) == "0.250"
    assert format_cell({"mean": 12.345, "std": 1.0, "n": 2}, 1) == "12.3 ± 1.0"
    assert format_cell(None) == "–"
    comparison = {"config": {"models": ["a"]}, "runs": [], "aggregate": {"a": {"joint_coherence": mean_std([0.5])}}}
    titles = [t.title for t in build_tables(comparison)]
    assert titles == ["Joint coherence and latent similarity", "Training and evaluation"]


# --------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(("change", "message"), [
    ({"models": ["crmvae", "nope"]}, "unknown model/objective 'nope'"),
    ({"dataset": "nope"}, "no presets for dataset 'nope'"),
    ({"preset": "fast"}, "unknown preset 'fast'"),
    ({"seeds": [0, 0]}, "seeds repeated: 0"),
    ({"models": ["mvae", "MVAE"]}, "models repeated: mvae"),
    ({"seeds": []}, "no seeds"),
    ({"budget": ["train.epoch=1"]}, "unknown key"),
])
def test_bad_studies_are_refused_before_anything_runs(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    config = CompareConfig(**{"models": ["crmvae"], "out_dir": str(tmp_path / "out"), **change})
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_comparison(config)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_models_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--models", "crmvae,bogus", "--out", str(tmp_path / "out")]) == 2
    assert "unknown model/objective 'bogus'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# end to end: real training on the tiny dataset, a counting stand-in for the metrics


class CountingEvaluate:
    """A deterministic stand-in for ``evaluate_checkpoint``: scores derived from the run's test
    loss and seed; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, out: Path, config: Any) -> dict[str, Any]:
        self.calls.append(out)
        loss = json.loads((out / "summary.json").read_text())["test_loss"]
        seed = int(out.name.removeprefix("seed"))
        return {"n_test": 32, "joint_coherence": 1.0 / loss, "cross_coherence": {"by_size": {"1": 0.1 * (seed + 1)}}}


@pytest.fixture(scope="module")
def study(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[CompareConfig, CountingEvaluate, dict]:
    root = tmp_path_factory.mktemp("study")
    config = CompareConfig(
        dataset="polymnist", models=["crmvae", "mvae"], seeds=[0, 1], preset="cpu-short",
        budget=[*TINY_BUDGET, f"data.data_dir={data_dir}", "train.max_steps=2"],
        out_dir=str(root / "report"), runs_dir=str(root / "runs"),
    )
    evaluate = CountingEvaluate()
    comparison = run_comparison(config, evaluate, command="test")
    write_report(comparison)
    return config, evaluate, comparison


def test_study_trains_every_run_and_aggregates_over_seeds(study) -> None:
    config, evaluate, _ = study
    results = json.loads((Path(config.out_dir) / "results.json").read_text())
    assert [(r["model"], r["seed"], r["status"]) for r in results["runs"]] == [
        ("crmvae", 0, "new"), ("crmvae", 1, "new"), ("mvae", 0, "new"), ("mvae", 1, "new")]
    assert len(evaluate.calls) == 4 and results["command"] == "test"
    for r in results["runs"]:
        out = run_dir(config, r["model"], r["seed"])
        assert r["run_dir"] == str(out) and r["summary"]["global_step"] == 2
        assert r["run_config"]["train"]["seed"] == r["seed"] and r["run_config"]["data"]["seed"] == 0
        assert r["run_config"]["model"]["objective"] == r["model"]
        assert r["result"]["joint_coherence"] == pytest.approx(1.0 / r["summary"]["test_loss"])
        assert json.loads((out / EVALUATION_FILE).read_text())["entries"][0]["result"] == r["result"]
    # the two seeds' runs differ (data and weights), and the aggregate is their mean +- std
    for model in config.models:
        values = [r["result"]["joint_coherence"] for r in results["runs"] if r["model"] == model]
        assert values[0] != values[1]
        cell = results["aggregate"][model]["joint_coherence"]
        assert cell["mean"] == pytest.approx(sum(values) / 2)
        assert cell["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        assert results["aggregate"][model]["cross_coherence.by_size.1"]["mean"] == pytest.approx(0.15)
    assert results["config"]["budget"] == config.budget and results["versions"]["torch"]
    assert load_config(CompareConfig, Path(config.out_dir) / COMPARE_FILE) == config
    md = (Path(config.out_dir) / "report.md").read_text()
    assert "| crmvae | **0.150 ± 0.071** |" in md
    for model in config.models:
        assert (Path(config.out_dir) / "grids" / model / "prior_samples.png").is_file()


def test_rerun_reuses_runs_and_cached_evaluations(study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, evaluate, first = study
    models = {r["run_dir"]: (Path(r["run_dir"]) / "model.pt").stat().st_mtime_ns for r in first["runs"]}
    again = run_comparison(config, evaluate)
    assert [r["status"] for r in again["runs"]] == ["finished"] * 4 and all(r["eval_cached"] for r in again["runs"])
    assert len(evaluate.calls) == 4  # nothing evaluated again
    assert {d: (Path(d) / "model.pt").stat().st_mtime_ns for d in models} == models  # nothing retrained
    assert again["aggregate"] == first["aggregate"]
    lines = capsys.readouterr().out.splitlines()
    assert sum("reused" in line for line in lines) == 4 and sum("evaluation cached" in line for line in lines) == 4
    # on a copy of one run: a longer budget resumes it (train.max_steps may change) and re-evaluates
    copy = CompareConfig(**{**vars(config), "models": ["mvae"], "seeds": [1], "runs_dir": str(tmp_path / "runs")})
    shutil.copytree(run_dir(config, "mvae", 1), run_dir(copy, "mvae", 1))
    longer = CompareConfig(**{**vars(copy), "budget": [*config.budget[:-1], "train.max_steps=3"]})
    resumed = run_comparison(longer, evaluate)
    assert resumed["runs"][0]["status"] == "unfinished" and resumed["runs"][0]["summary"]["global_step"] == 3
    assert len(evaluate.calls) == 5
    # a changed configuration that cannot be resumed is refused, naming the difference
    changed = CompareConfig(**{**vars(copy), "budget": [*config.budget, "train.lr=0.01"]})
    with pytest.raises(ConfigError, match=r"train\.lr"):
        run_comparison(changed, evaluate)


@pytest.mark.slow
def test_cli_compare_with_the_real_metrics_reuses_the_runs(study, capsys: pytest.CaptureFixture[str]) -> None:
    """``crmvae compare`` on the study's runs (reused, not retrained) with the metrics package:
    coherence and probes on 32 test examples, classifiers trained for one epoch (threshold off)."""
    config, _, _ = study
    out = Path(config.out_dir).parent / "cli-report"
    args = ["compare", "--dataset", "polymnist", "--models", "crmvae,mvae", "--seeds", "0,1",
            *(a for b in config.budget for a in ("--budget", b)), "--runs-dir", config.runs_dir, "--out", str(out),
            "--n-test", "32", *(a for s in ["metrics=[coherence,probes]", "probe_train_size=32", "classifier.epochs=1",
                                            "classifier.train_size=256", "classifier_thresholds={polymnist: 0.0}",
                                            "progress=false"] for a in ("--eval-set", s))]
    assert main(args) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["finished"] * 4
    assert results["command"].startswith("crmvae compare --dataset polymnist")
    for r in results["runs"]:
        result = r["result"]
        assert result["n_test"] == 32 and set(result["cross_coherence"]["by_size"]) == {"1", "2", "3", "4"}
        assert set(result["probes"]["by_size"]) == {"1", "2", "3", "4", "5"} and "fid" not in result
        assert all(0 <= v <= 1 for v in result["cross_coherence"]["by_size"].values())
    for model in ("crmvae", "mvae"):
        values = [r["result"]["probes"]["by_size"]["5"] for r in results["runs"] if r["model"] == model]
        assert results["aggregate"][model]["probes.by_size.5"]["mean"] == pytest.approx(sum(values) / 2)
    page = (out / "report.html").read_text()
    assert "Cross-coherence of crmvae by conditioning subset" in page and not re.search(r"https?://", page)
