"""``crmvae compare``: aggregation by hand, the report's tables and files, an end-to-end study and its reuse."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from crmvae.cli import format_plan, main
from crmvae.config import load_config
from crmvae.errors import CheckpointError, ConfigError
from crmvae.evaluation.compare import (
    COMPARE_FILE,
    CompareConfig,
    aggregate,
    cached_evaluation,
    mean_std,
    plan_comparison,
    run_comparison,
    run_config,
    run_dir,
    trained_towards,
    store_evaluation,
)
from crmvae.evaluation.evaluate import EvalConfig
from crmvae.evaluation.records import settings_sha256
from crmvae.evaluation.report import build_tables, format_cell, write_report
from crmvae.presets import build_run_config
from crmvae.samplers import SamplerConfig
from crmvae.training import train

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
    """Two models x two seeds with hand-picked results; records that hold grids."""
    results = {
        ("good", 0): fake_result([0.5, 0.6], 0.30, {"m0": [10.0, 20.0, 30.0]}, [0.7, 0.8, 0.9]),
        ("good", 1): fake_result([0.7, 0.8], 0.50, {"m0": [20.0, 20.0, 20.0]}, [0.9, 0.8, 0.7]),
        ("bad", 0): fake_result([0.1, 0.2], 0.10, {"m0": [90.0, 80.0, 70.0]}, [0.2, 0.3, 0.4]),
        ("bad", 1): fake_result([0.3, 0.2], 0.70, {"m0": [70.0, 60.0, 50.0]}, [0.4, 0.5, 0.6]),
    }
    runs = []
    for (model, seed), result in results.items():
        record = f"records/{model}/seed{seed}/epoch1.json"
        (tmp_path / "report" / record).parent.mkdir(parents=True)
        Image.new("RGB", (20, 10), (seed * 100, 0, 0)).save((tmp_path / "report" / record).with_suffix(".png"))
        runs.append({
            "model": model, "seed": seed, "epochs": 1, "record": record, "train_seconds": 3.0,
            "eval_seconds": 4.0, "result": result, "cpu": "cpu", "settings": "ab / cd",
            "summary": {"global_step": 10, "test_loss": 100.0 + seed, "wall_time_s": 3.0, "examples_seen": 64},
            "run_config": {"model": {"modalities": [{"name": "m0"}, {"name": "m1"}, {"name": "m2"}]}},
        })
    config = {"dataset": "toy", "models": ["good", "bad"], "seeds": [0, 1], "preset": "cpu-short",
              "budget": ["train.epochs=1"], "eval": {"fid_samples": 50}, "out_dir": str(tmp_path / "report")}
    agg = {m: aggregate([r["result"] for r in runs if r["model"] == m]) for m in config["models"]}
    return {"config": config, "command": "crmvae compare --models good,bad", "versions": {"torch": "x"},
            "epochs": 1, "records": runs, "runs": runs, "aggregate": agg,
            "curves": {m: {"1": agg[m]} for m in config["models"]}, "examples": {"good/1": 64, "bad/1": 64}}


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
    # steps and seconds as whole numbers, the test loss with one decimal
    assert table_rows(md, "Training and evaluation")["good"][:3] == ["10 ± 0", "100.5 ± 0.7", "3 ± 0"]
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
    # the grids are the records' of each model's lowest seed
    assert paths["grids"]["bad"] == [tmp_path / "report" / "records" / "bad" / "seed0" / "epoch1.png"]
    assert "| good | 0 | 1 | 64 | 3 | 4 | cpu | ab / cd | [records/good/seed0/epoch1.json](records/good/seed0/epoch1.json) |" in md
    assert json.loads(paths["results"].read_text()) == comparison


def test_likelihoods_get_a_table() -> None:
    results = [{"likelihood": {"samples": 10, "n_test": 5, "joint": -100.0 - s,
                               "conditional": {"by_size": {"1": -20.0, "2": -18.0 - s}}}} for s in (0, 2)]
    comparison = {"config": {"models": ["a"]}, "runs": [], "aggregate": {"a": aggregate(results)}}
    table = next(t for t in build_tables(comparison) if t.title.startswith("Log-likelihood"))
    assert table.columns == ["joint log p(X)", "log p(x_m | X_S), |S|=1", "log p(x_m | X_S), |S|=2"]
    assert [format_cell(c, 1) for c in table.rows[0][1]] == ["-101.0 ± 1.4", "-20.0 ± 0.0", "-19.0 ± 1.4"]


def test_latent_usage_gets_a_table_with_the_joint_kl_absent_for_a_mixture() -> None:
    def usage(joint_kl: float | None, kls: list[float], units: list[int]) -> dict[str, Any]:
        entry = {"kl_mean": sum(kls) / len(kls), "kl_min": min(kls), "active_units_mean": sum(units) / len(units),
                 "active_units_min": float(min(units))}
        joint = {"active_units": 40.0, **({"kl": joint_kl} if joint_kl is not None else {})}
        return {"latent_usage": {"unimodal": entry, "joint": joint, "examples": {"m0": 9}}}

    comparison = {"config": {"models": ["poe", "mixture"]}, "runs": [], "aggregate": {
        "poe": aggregate([usage(120.0, [30.0, 0.0], [12, 0]), usage(100.0, [20.0, 10.0], [8, 4])]),
        "mixture": aggregate([usage(None, [50.0, 70.0], [30, 30])])}}
    table = next(t for t in build_tables(comparison) if t.title == "Latent usage")
    assert table.columns[:3] == ["KL joint", "KL unimodal, mean", "KL unimodal, least"]
    poe, mixture = ([format_cell(c, 1) for c in cells] for _, cells in table.rows)
    assert poe == ["110.0 ± 14.1", "15.0 ± 0.0", "5.0 ± 7.1", "40.0 ± 0.0", "6.0 ± 0.0", "2.0 ± 2.8"]
    assert mixture == ["–", "60.0", "50.0", "40.0", "30.0", "30.0"]
    assert "latent_usage.examples.m0" not in comparison["aggregate"]["poe"]


def test_a_score_that_some_seeds_lack_says_how_many_it_has() -> None:
    """An older record without latent usage: the model's row says over how many seeds its KL is."""
    results = [{"joint_coherence": 0.1 * s, **({"latent_usage": {"joint": {"kl": 10.0 * s}}} if s else {})}
               for s in range(3)]
    runs = [{"model": "a", "seed": s, "summary": {}, "result": r} for s, r in enumerate(results)]
    comparison = {"config": {"models": ["a"]}, "runs": runs, "aggregate": {"a": aggregate(results)}}
    tables = {t.title: t for t in build_tables(comparison)}
    assert tables["Joint coherence and latent similarity"].text_rows()[0][1][0][0] == "0.100 ± 0.100"
    assert tables["Latent usage"].text_rows()[0][1][0][0] == "15.0 ± 7.1 (n=2)"


def test_the_chance_level_column_is_not_ranked() -> None:
    results = [{"joint_coherence": 0.5, "cosine_similarity": c, "cosine_similarity_mismatched": c - 0.1}
               for c in (0.9, 0.2)]
    comparison = {"config": {"models": ["a", "b"]}, "runs": [],
                  "aggregate": {"a": aggregate(results[:1]), "b": aggregate(results[1:])}}
    table = next(t for t in build_tables(comparison) if t.title.startswith("Joint coherence"))
    assert table.columns == ["joint coherence", "cosine similarity", "cosine, different examples"]
    assert [table.best_rows(j) for j in range(3)] == [{0, 1}, {0}, set()]


def test_the_joint_table_shows_the_effective_classes_unranked() -> None:
    """A model coherent by drawing one class (1 effective class) beside one covering the classes."""
    results = {"one class": {"joint_coherence": 0.5, "joint_coherence_labels": {"effective_classes": 1.0, "agreed": [0, 5]}},
               "diverse": {"joint_coherence": 0.2, "joint_coherence_labels": {"effective_classes": 9.6, "agreed": [1, 1]}}}
    comparison = {"config": {"models": list(results)}, "runs": [],
                  "aggregate": {m: aggregate([r]) for m, r in results.items()}}
    table = next(t for t in build_tables(comparison) if t.title.startswith("Joint coherence"))
    assert table.columns == ["joint coherence", "joint: effective classes"]
    assert [row[1] for row in table.text_rows()] == [[("0.500", True), ("1.000", False)],
                                                     [("0.200", False), ("9.600", False)]]  # (text, bold)
    assert "1 when a generator draws one class" in table.note


def test_the_report_names_the_sampler_of_the_unconditional_scores() -> None:
    results = [{"joint_coherence": 0.5, "fid": {"samples": 10, "unconditional_mean": 80.0, "by_size_mean": {"1": 60.0}}}]
    for eval_config, label, source in (({}, "prior", "z ~ p(z)"),
                                       ({"sampler": {"name": "gmm"}}, "gmm", "z from the gmm sampler fitted")):
        comparison = {"config": {"models": ["a"], "eval": eval_config}, "runs": [], "aggregate": {"a": aggregate(results)}}
        tables = {t.title.split(",")[0].split(" and ")[0]: t for t in build_tables(comparison)}
        assert tables["FID"].columns == [label, "k=1"] and source in tables["FID"].note
        assert f"Joint coherence: {source}" in tables["Joint coherence"].note


def test_format_cell_and_missing_scores() -> None:
    assert format_cell({"mean": 0.25, "std": 0.0, "n": 1}) == "0.250"
    assert format_cell({"mean": 12.345, "std": 1.0, "n": 2}, 1) == "12.3 ± 1.0"
    assert format_cell(None) == "–"
    assert format_cell({"mean": 12.345, "std": 1.0, "n": 2}, 1, seeds=3) == "12.3 ± 1.0 (n=2)"
    assert format_cell({"mean": 0.25, "std": 0.0, "n": 1}, seeds=1) == "0.250"
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
    ({"snapshots": [1, 1]}, "snapshots must be distinct epochs >= 1"),
    ({"snapshots": [1, 3], "budget": ["train.lr_schedule=cosine"]}, "set train.lr_horizon_steps"),
    ({"snapshots": [1, 3], "budget": ["train.max_steps=50"]}, "leave train.max_steps out of the budget"),
    ({"snapshots": [1, 3], "snapshot_metrics": ["coherence", "cohrence"]}, "snapshot_metrics: unknown metrics ['cohrence']"),
    ({"eval": EvalConfig(metrics=["fid", "nope"])}, "eval.metrics: unknown metrics ['nope']"),
])
def test_bad_studies_are_refused_before_anything_runs(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    config = CompareConfig(**{"models": ["crmvae"], "out_dir": str(tmp_path / "out"), **change})
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_comparison(config)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_models_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--models", "crmvae,bogus", "--out", str(tmp_path / "out")]) == 2
    assert "unknown model/objective 'bogus'" in capsys.readouterr().err


def test_cli_plan_of_a_new_study_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--plan", "--models", "crmvae,mvae", "--seeds", "0,1", "--snapshots", "1,3",
                 "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "4 run(s); 0 snapshot(s) recorded, 8 to train and evaluate (nothing was run)" in out
    assert "  mvae seed 1: recorded none; to do: 1, 3 (no run yet)" in out
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# end to end: real training on the tiny dataset, a counting stand-in for the metrics


class CountingEvaluate:
    """A deterministic stand-in for ``evaluate_checkpoint``: scores derived from the run's test
    loss and seed; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, list[str] | None]] = []

    def __call__(self, out: Path, config: Any) -> dict[str, Any]:
        self.calls.append((out, config.metrics))
        loss = json.loads((out / "summary.json").read_text())["test_loss"]
        seed = int(out.name.removeprefix("seed"))
        return {"n_test": 32, "joint_coherence": 1.0 / loss, "cross_coherence": {"by_size": {"1": 0.1 * (seed + 1)}}}


STUDY_BUDGET = [b for b in TINY_BUDGET if not b.startswith("train.epochs=")]


@pytest.fixture(scope="module")
def study(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[CompareConfig, CountingEvaluate, dict]:
    """crmvae and mvae, seeds 0 and 1, recorded at epochs 1 and 2 (2 steps an epoch)."""
    root = tmp_path_factory.mktemp("study")
    config = CompareConfig(
        dataset="polymnist", models=["crmvae", "mvae"], seeds=[0, 1], preset="cpu-short",
        budget=[*STUDY_BUDGET, f"data.data_dir={data_dir}"], snapshots=[1, 2],
        snapshot_metrics=["coherence"], eval=EvalConfig(metrics=["coherence", "similarity"]),
        out_dir=str(root / "report"), runs_dir=str(root / "runs"),
    )
    evaluate = CountingEvaluate()
    comparison = run_comparison(config, evaluate, command="test")
    write_report(comparison)
    return config, evaluate, comparison


def report_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_study_records_every_snapshot_and_aggregates_the_last(study) -> None:
    config, evaluate, _ = study
    out = Path(config.out_dir)
    results = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["seed"], r["epochs"]) for r in results["records"]] == [
        (m, s, e) for m in ("crmvae", "mvae") for s in (0, 1) for e in (1, 2)]
    assert [(r["model"], r["seed"]) for r in results["runs"]] == [("crmvae", 0), ("crmvae", 1), ("mvae", 0), ("mvae", 1)]
    # the last snapshot takes the full metrics, the others snapshot_metrics
    assert [m for _, m in evaluate.calls] == [["coherence"], ["coherence", "similarity"]] * 4
    for r in results["records"]:
        record = json.loads((out / r["record"]).read_text())
        assert record["summary"]["global_step"] == 2 * r["epochs"] and record["train_examples"] == 64 * r["epochs"]
        assert record["run_config"]["train"]["epochs"] == r["epochs"] and record["run_config"]["train"]["seed"] == r["seed"]
        assert record["run_config_sha256"] == settings_sha256(record["run_config"])
        assert re.fullmatch(r"[0-9a-f]{64}", record["model_sha256"])
        assert record["versions"]["torch"] and record["versions"]["cpu"]
        with Image.open(out / r["record"].replace(".json", ".png")) as image:
            assert image.format == "PNG"
    for model in config.models:
        values = [r["result"]["joint_coherence"] for r in results["runs"] if r["model"] == model]
        assert values[0] != values[1]
        cell = results["aggregate"][model]["joint_coherence"]
        assert cell["mean"] == pytest.approx(sum(values) / 2)
        assert cell["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        assert set(results["curves"][model]) == {"1", "2"}
    md = (out / "report.md").read_text()
    assert "| crmvae | **0.150 ± 0.071** |" in md and "## Records used" in md
    claims = md.split("## Claims of the paper", 1)[1]  # polymnist's claims, decided on the fake scores
    assert "| (c) | MVAE has the lowest cross-coherence |" in claims and "| (b) |" in claims
    assert (out / "plots" / "learning_curves.png").is_file()
    assert load_config(CompareConfig, out / COMPARE_FILE) == config


def test_snapshots_are_the_states_of_one_uninterrupted_run(study, data_dir: Path, tmp_path: Path) -> None:
    config, _, _ = study
    direct = train(build_run_config("polymnist", "mvae", "cpu-short", [*config.budget, "train.seed=1", "train.epochs=2"]),
                   tmp_path / "direct")
    snapshots = torch.load(run_dir(config, "mvae", 1) / "model.pt", weights_only=True)["model"]
    uninterrupted = torch.load(direct.model_path, weights_only=True)["model"]
    assert snapshots.keys() == uninterrupted.keys()
    assert all(torch.equal(snapshots[k], uninterrupted[k]) for k in snapshots)


def test_rerun_with_the_records_trains_nothing_and_writes_the_same_report(study, tmp_path: Path) -> None:
    config, _, _ = study
    out = Path(config.out_dir)
    before = report_files(out)
    # with the runs folder gone, the records alone make the report
    shutil.move(config.runs_dir, tmp_path / "runs")
    try:
        evaluate = CountingEvaluate()
        write_report(run_comparison(config, evaluate, command="test"))
        assert evaluate.calls == [] and not Path(config.runs_dir).exists()
    finally:
        shutil.rmtree(config.runs_dir, ignore_errors=True)
        shutil.move(tmp_path / "runs", config.runs_dir)
    assert report_files(out) == before
    assert json.loads((out / "results.json").read_text()) == json.loads(before["results.json"])


def test_report_only_trains_nothing_and_reports_the_records(study, tmp_path: Path) -> None:
    config, _, first = study
    copy = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                            "seeds": [0, 1, 2]})
    shutil.copytree(config.out_dir, copy.out_dir)
    evaluate = CountingEvaluate()
    comparison = run_comparison(copy, evaluate, report_only=True)
    assert evaluate.calls == [] and not (tmp_path / "runs").exists()  # seed 2 is missing, and stays so
    assert comparison["aggregate"] == json.loads(json.dumps(first["aggregate"]))


def test_more_seeds_train_only_what_is_missing(study, tmp_path: Path) -> None:
    config, _, _ = study
    copy = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs")})
    shutil.copytree(config.out_dir, copy.out_dir)
    more = CompareConfig(**{**vars(copy), "models": ["mvae"], "seeds": [0, 2]})
    evaluate = CountingEvaluate()
    comparison = run_comparison(more, evaluate)
    assert [out.name for out, _ in evaluate.calls] == ["seed2", "seed2"]
    assert not run_dir(more, "mvae", 0).exists()
    # every record in the folder joins the report, crmvae's too
    assert comparison["config"]["models"] == ["mvae", "crmvae"]
    assert sorted((r["model"], r["seed"]) for r in comparison["runs"]) == [
        ("crmvae", 0), ("crmvae", 1), ("mvae", 0), ("mvae", 1), ("mvae", 2)]


def test_plan_lists_what_is_recorded_and_what_remains_and_writes_nothing(study, tmp_path: Path) -> None:
    config, _, _ = study
    copy = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                            "models": ["mvae"], "seeds": [0, 1, 2], "snapshots": [1, 2, 3]})
    shutil.copytree(config.out_dir, copy.out_dir)
    shutil.copytree(run_dir(config, "mvae", 0), run_dir(copy, "mvae", 0))
    (Path(copy.out_dir) / "records" / "mvae" / "seed0" / "epoch2.json").unlink()
    before = report_files(tmp_path)
    plan = plan_comparison(copy)
    assert report_files(tmp_path) == before
    assert [(r.model, r.seed, r.recorded, r.missing, r.run_state, r.trained_epochs, r.target_epochs) for r in plan] == [
        ("mvae", 0, [1], [2, 3], "finished", 2, 2),  # its run is copied: trained to the old last snapshot
        ("mvae", 1, [1, 2], [3], "new", 0, 0),       # recorded, but its run stayed in the study's runs_dir
        ("mvae", 2, [], [1, 2, 3], "new", 0, 0),
    ]
    text = format_plan(plan, copy.out_dir)
    assert "3 run(s); 3 snapshot(s) recorded, 6 to train and evaluate (nothing was run)" in text
    assert "mvae seed 0: recorded 1; to do: 2, 3 (run finished at epoch 2)" in text
    crmvae = plan_comparison(CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"),
                                               "models": ["crmvae"]}))
    assert format_plan(crmvae, "x").splitlines()[1:] == ["  crmvae seed 0: recorded 1, 2; complete",
                                                         "  crmvae seed 1: recorded 1, 2; complete"]
    changed = CompareConfig(**{**vars(copy), "eval": EvalConfig(metrics=["coherence", "similarity"], n_test=16)})
    with pytest.raises(ConfigError, match=r"eval\.n_test"):  # the checks of a real run
        plan_comparison(changed)


def test_plan_shows_an_unfinished_run(study, tmp_path: Path) -> None:
    config, _, _ = study
    one = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                           "models": ["mvae"], "seeds": [0], "snapshots": [2]})
    snapshot = run_config(one, "mvae", 0, epochs=2)  # stopped after 3 of its 4 steps
    train(replace(snapshot, train=replace(snapshot.train, max_steps=3)), run_dir(one, "mvae", 0))
    assert [(r.run_state, r.trained_epochs, r.target_epochs) for r in plan_comparison(one)] == [("unfinished", 1, 2)]
    assert "(run at epoch 1 of 2, resumes)" in format_plan(plan_comparison(one), one.out_dir)


def test_plan_names_a_damaged_run(study, tmp_path: Path) -> None:
    config, _, _ = study
    one = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                           "models": ["mvae"], "seeds": [0]})
    run = run_dir(one, "mvae", 0)
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_text("not a checkpoint")
    (run / "config.yaml").write_text("train: [")
    with pytest.raises(ConfigError, match=r"config\.yaml: not valid YAML"):
        plan_comparison(one)
    (run / "config.yaml").write_text("train: {epochs: 2}")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is not a PyTorch file"):
        plan_comparison(one)


@pytest.mark.parametrize(("change", "keys"), [
    ({"budget": [*STUDY_BUDGET, "train.lr=0.01"]}, "run.train.lr"),
    ({"eval": EvalConfig(metrics=["coherence", "similarity"], n_test=16)}, "eval.n_test"),
    ({"eval": EvalConfig(metrics=["coherence", "similarity", "probes"])}, "eval.metrics"),
    ({"eval": EvalConfig(metrics=["coherence", "similarity"], sampler=SamplerConfig(name="gmm"))}, "eval.sampler.name"),
])
def test_a_record_made_with_other_settings_is_refused(study, tmp_path: Path, change: dict[str, Any], keys: str) -> None:
    config, _, _ = study
    report = tmp_path / "report"
    shutil.copytree(config.out_dir, report)
    if "budget" in change:
        change = {"budget": [*change["budget"], f"data.data_dir={config.budget[-1].split('=', 1)[1]}"]}
    changed = CompareConfig(**{**vars(config), "out_dir": str(report), "runs_dir": str(tmp_path / "runs"), **change})
    with pytest.raises(ConfigError, match=re.escape(keys)) as error:
        run_comparison(changed, CountingEvaluate())
    assert "records/crmvae/seed0/epoch" in str(error.value) and not (tmp_path / "runs").exists()


def test_a_damaged_record_is_named(study, tmp_path: Path) -> None:
    config, _, _ = study
    report = tmp_path / "report"
    shutil.copytree(config.out_dir, report)
    (report / "records" / "mvae" / "seed1" / "epoch2.json").write_text("{not json")
    changed = CompareConfig(**{**vars(config), "out_dir": str(report), "runs_dir": str(tmp_path / "runs")})
    with pytest.raises(ConfigError, match=r"epoch2\.json: not a readable study record"):
        run_comparison(changed, CountingEvaluate())


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
    assert len(results["runs"]) == 4
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


def test_a_missing_record_behind_the_run_is_named(study, tmp_path: Path) -> None:
    """The run went on past a snapshot whose record is gone: its state there is lost, and the
    error says how to recover."""
    config, _, _ = study
    copy = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                            "models": ["mvae"], "seeds": [0]})
    shutil.copytree(config.out_dir, copy.out_dir)
    shutil.copytree(run_dir(config, "mvae", 0), run_dir(copy, "mvae", 0))
    (Path(copy.out_dir) / "records" / "mvae" / "seed0" / "epoch1.json").unlink()
    with pytest.raises(ConfigError, match="is trained towards 2 epochs, past 1, where a record is missing"):
        run_comparison(copy, CountingEvaluate())


def test_a_run_stopped_past_a_recorded_snapshot_goes_on_from_where_it_is(study, tmp_path: Path) -> None:
    """A stop after the run passed snapshot 1 (recorded) and before snapshot 2 was recorded: the
    rerun evaluates and records snapshot 2 from the run as it stands, and trains nothing again."""
    config, _, first = study
    copy = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                            "models": ["mvae"], "seeds": [0]})
    shutil.copytree(config.out_dir, copy.out_dir)
    shutil.copytree(run_dir(config, "mvae", 0), run_dir(copy, "mvae", 0))
    record = Path(copy.out_dir) / "records" / "mvae" / "seed0" / "epoch2.json"
    before = json.loads(record.read_text())
    record.unlink()
    (run_dir(copy, "mvae", 0) / "evaluation_cache.json").unlink()
    model = (run_dir(copy, "mvae", 0) / "model.pt").read_bytes()
    evaluate = CountingEvaluate()
    comparison = run_comparison(copy, evaluate)
    assert (run_dir(copy, "mvae", 0) / "model.pt").read_bytes() == model
    assert [(out.name, metrics) for out, metrics in evaluate.calls] == [("seed0", ["coherence", "similarity"])]
    after = json.loads(record.read_text())
    assert after["result"] == before["result"] and after["summary"] == before["summary"]
    assert comparison["aggregate"]["mvae"] == json.loads(json.dumps(first["aggregate"]["mvae"]))


def test_a_run_stopped_before_its_first_checkpoint_starts_again(study, tmp_path: Path) -> None:
    """A run folder holding only what a run writes before its first checkpoint (config.yaml,
    metrics.jsonl, grids/) is emptied and trained afresh, to the same records; anything else is named."""
    config, _, first = study
    copy = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                            "models": ["mvae"], "seeds": [0]})
    out = run_dir(copy, "mvae", 0)
    (out / "grids").mkdir(parents=True)
    (out / "config.yaml").write_bytes((run_dir(config, "mvae", 0) / "config.yaml").read_bytes())
    (out / "metrics.jsonl").write_text('{"global_step": 1}\n')
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds no checkpoint to resume, and \['notes.txt'\], which a run does not"):
        run_comparison(copy, CountingEvaluate())
    (out / "notes.txt").unlink()
    said: list[str] = []
    comparison = run_comparison(copy, CountingEvaluate(), log=said.append)
    assert f"{out} held a run stopped before its first checkpoint (config.yaml, grids, metrics.jsonl): starting it again" in said
    before = next(r for r in first["runs"] if (r["model"], r["seed"]) == ("mvae", 0))
    assert [r["result"] for r in comparison["runs"]] == [json.loads(json.dumps(before["result"]))]


def test_the_epochs_a_run_trains_towards_come_from_its_checkpoint_where_its_config_lacks_them(
    study, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, _, _ = study
    out = tmp_path / "run"
    shutil.copytree(run_dir(config, "mvae", 0), out)
    assert trained_towards(out) == 2
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(text[: text.index("train:")])  # cut at a line end: no train section
    with caplog.at_level("WARNING"):
        assert trained_towards(out) == 2  # not the default 500
    assert "lacks train" in caplog.text and "checkpoint.pt" in caplog.text
    (out / "config.yaml").unlink()
    assert trained_towards(out) == 2
    (out / "checkpoint.pt").unlink()
    assert trained_towards(out) == 0


def test_a_longer_budget_trains_only_the_new_passes(study, tmp_path: Path) -> None:
    """Snapshots 1, 2 recorded; the study extended to 1, 2, 3 resumes each run from epoch 2 and
    records epoch 3 alone. The old last snapshot, evaluated with every metric, stands for a middle one."""
    config, _, _ = study
    longer = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                              "models": ["mvae"], "seeds": [0], "snapshots": [1, 2, 3]})
    shutil.copytree(config.out_dir, longer.out_dir)
    shutil.copytree(run_dir(config, "mvae", 0), run_dir(longer, "mvae", 0))
    evaluate = CountingEvaluate()
    comparison = run_comparison(longer, evaluate)
    assert [(out.name, metrics) for out, metrics in evaluate.calls] == [("seed0", ["coherence", "similarity"])]
    record = json.loads((Path(longer.out_dir) / "records" / "mvae" / "seed0" / "epoch3.json").read_text())
    assert record["summary"]["global_step"] == 6 and record["run_config"]["train"]["epochs"] == 3
    assert [(r["model"], r["seed"]) for r in comparison["runs"]] == [("mvae", 0)]  # the others stop at epoch 2
    assert set(comparison["curves"]["mvae"]) == {"1", "2", "3"}


def test_a_run_under_a_cosine_spanning_its_epochs_is_not_continued(study, tmp_path: Path) -> None:
    """Without snapshots nothing refuses the cosine up front; continuing its run to more epochs
    would restart the decay, so the run is refused at that point."""
    config, _, _ = study
    budget = [b for b in config.budget if not b.startswith("train.epochs")]
    cosine = CompareConfig(**{**vars(config), "out_dir": str(tmp_path / "report"), "runs_dir": str(tmp_path / "runs"),
                              "models": ["mvae"], "seeds": [0], "snapshots": [],
                              "budget": [*budget, "train.lr_schedule=cosine", "train.epochs=1"]})
    run_comparison(cosine, CountingEvaluate())
    longer = CompareConfig(**{**vars(cosine), "budget": [*budget, "train.lr_schedule=cosine", "train.epochs=2"]})
    with pytest.raises(ConfigError, match="under a cosine learning-rate schedule that spans them"):
        run_comparison(longer, CountingEvaluate())


def copied_study(config: CompareConfig, tmp_path: Path) -> tuple[CompareConfig, Path]:
    """The study with its report folder copied under ``tmp_path`` (and an empty runs folder there)."""
    report = tmp_path / "report"
    shutil.copytree(config.out_dir, report)
    return CompareConfig(**{**vars(config), "out_dir": str(report), "runs_dir": str(tmp_path / "runs")}), report


def test_a_record_of_the_default_metrics_counts_with_the_metrics_it_ran(study, tmp_path: Path) -> None:
    copy, report = copied_study(study[0], tmp_path)
    path = report / "records" / "mvae" / "seed0" / "epoch1.json"
    record = json.loads(path.read_text())
    record["eval_config"]["metrics"] = None  # left to the dataset's defaults, which ran coherence and more
    record["metrics_run"] = ["coherence", "fid", "probes"]
    record["result"].update(fid={"m0": 250.0}, probes={"by_size": {"1": 0.5}})  # what those metrics wrote
    path.write_text(json.dumps(record))
    evaluate = CountingEvaluate()
    run_comparison(copy, evaluate)  # epoch 1 asks for coherence alone: the record serves
    assert evaluate.calls == []
    record["metrics_run"] = ["fid"]
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"epoch1\.json was made with other settings .* in eval\.metrics"):
        run_comparison(copy, CountingEvaluate())


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b'{"entries": [1, "x"]}', b'{"entries": 3}', b"[]"])
def test_a_damaged_evaluation_cache_is_recomputed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "evaluation_cache.json").write_bytes(content)
    assert cached_evaluation(tmp_path, {"k": 1}) is None
    store_evaluation(tmp_path, {"k": 1}, {"score": 0.5})
    assert cached_evaluation(tmp_path, {"k": 1}) == {"score": 0.5}


def test_a_record_whose_seed_is_not_an_integer_is_named(study, tmp_path: Path) -> None:
    changed, report = copied_study(study[0], tmp_path)
    record = json.loads((report / "records" / "mvae" / "seed0" / "epoch1.json").read_text())
    (report / "records" / "mvae" / "seedX").mkdir()
    (report / "records" / "mvae" / "seedX" / "epoch1.json").write_text(json.dumps({**record, "seed": "X"}))
    with pytest.raises(ConfigError, match=r"seedX/epoch1\.json: its model must be a name and its seed"):
        run_comparison(changed, CountingEvaluate())


def test_settings_that_do_not_change_results_do_not_refuse_records(study, tmp_path: Path) -> None:
    config, _, _ = study
    report = tmp_path / "report"
    shutil.copytree(config.out_dir, report)
    loading = CompareConfig(**{**vars(config), "out_dir": str(report), "runs_dir": str(tmp_path / "runs"),
                               "budget": [*config.budget, "data.num_workers=1", "train.loggers=[]"]})
    evaluate = CountingEvaluate()
    run_comparison(loading, evaluate)
    assert evaluate.calls == [] and not (tmp_path / "runs").exists()


def test_a_variant_with_its_own_objective_parameters_is_a_model_of_its_own(data_dir: Path, tmp_path: Path) -> None:
    config = CompareConfig(
        dataset="polymnist", models=["mvae", "MVAE@beta=0.5@num_random_subsets=1"], seeds=[0], preset="cpu-short",
        budget=[*TINY_BUDGET, f"data.data_dir={data_dir}"], eval=EvalConfig(metrics=["coherence"]),
        out_dir=str(tmp_path / "report"), runs_dir=str(tmp_path / "runs"),
    )
    comparison = run_comparison(config, CountingEvaluate())
    write_report(comparison)
    variant = "mvae@beta=0.5@num_random_subsets=1"
    assert comparison["config"]["models"] == ["mvae", variant]
    record = json.loads((tmp_path / "report" / "records" / variant / "seed0" / f"epoch{comparison['epochs']}.json").read_text())
    params = record["run_config"]["model"]["objective_params"]
    assert params["beta"] == 0.5 and params["num_random_subsets"] == 1 and record["run_config"]["model"]["objective"] == "mvae"
    plain = json.loads(next((tmp_path / "report" / "records" / "mvae").rglob("*.json")).read_text())
    assert plain["run_config"]["model"]["objective_params"]["beta"] == 0.1  # the preset's
    assert f"| {variant} |" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(("model", "message"), [
    ("mvae@beta", "expected objective@key=value, got 'beta'"),
    ("nope@beta=1", "unknown model/objective 'nope'"),
    ("mvae@no_such_param=1", "no_such_param"),
])
def test_a_bad_variant_is_refused_before_anything_runs(tmp_path: Path, model: str, message: str) -> None:
    config = CompareConfig(models=[model], out_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_comparison(config)
    assert not (tmp_path / "out").exists()
