"""Studies side by side (``crmvae summarize``): verdicts, the snapshot they stand from, numbers,
and the marked blocks of a page rewritten from the records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crmvae.cli import main
from crmvae.errors import ConfigError
from crmvae.evaluation.compare import aggregate
from crmvae.evaluation.summary import read_study, render_summary, update_blocks

#: crmvae's advantage over mvtcae at each epoch: none at epoch 1, clear from epoch 2.
ADVANTAGE = {1: 0.0, 2: 0.2, 3: 0.3}


def result(model: str, seed: int, epochs: int, usage: bool = True) -> dict[str, Any]:
    """A PolyMNIST-like result: crmvae's coherence above mvtcae's by ``ADVANTAGE`` at every size."""
    base = 0.2 + 0.01 * seed + (ADVANTAGE[epochs] if model == "crmvae" else 0.0)
    out: dict[str, Any] = {
        "cross_coherence": {"by_size": {str(k): base + 0.05 * k for k in range(1, 5)}},
        "cosine_similarity_gap": {"mean": 0.01 * seed},
    }
    if usage:
        out["latent_usage"] = {"joint": {"kl": 100.0 + seed, "active_units": 50}}
    return out


def write_study(folder: Path, preset: str = "paper", seeds: int = 3, dataset: str = "polymnist") -> Path:
    """A report folder whose results.json holds crmvae and mvtcae x ``seeds`` at epochs 1, 2, 3
    (mvtcae seed 0 without latent usage)."""
    records = [
        {"model": m, "seed": s, "epochs": e, "result": result(m, s, e, usage=(m, s) != ("mvtcae", 0)),
         "run_config": {"model": {"objective_params": {"beta": 1.0}, "latent_dim": 8},
                        "train": {"lr": 5e-4, "batch_size": 256}},
         "summary": {"examples_seen": 100 * e}}
        for m in ("crmvae", "mvtcae") for s in range(seeds) for e in (1, 2, 3)
    ]
    runs = [r for r in records if r["epochs"] == 3]
    comparison = {
        "config": {"dataset": dataset, "preset": preset, "models": ["crmvae", "mvtcae"]},
        "records": records, "runs": runs,
        "aggregate": {m: aggregate([r["result"] for r in runs if r["model"] == m]) for m in ("crmvae", "mvtcae")},
    }
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(comparison))
    return folder


def test_the_claims_style_gives_each_study_its_verdicts(tmp_path: Path) -> None:
    studies = [read_study(write_study(tmp_path / "three")), read_study(write_study(tmp_path / "one", "cpu-short", seeds=1))]
    text = render_summary(studies, "claims", tmp_path)
    rows = {line.split(" | ")[0]: line.split(" | ")[1:] for line in text.splitlines() if line.startswith("| (")}
    assert rows["| (a) CRMVAE above MVTCAE in cross-coherence at every subset size (the ablation)"] == ["holds", "undecided |"]
    assert rows["| (b) CRMVAE above MoPoE, MMJSD-PoE and MVAE in cross-coherence"] == ["not measured", "not measured |"]
    assert "[`three`](three/report.md) | `polymnist`, `paper` | beta 1, lr 0.0005, batch 256, latent 8, 100 tuples a pass" \
        " | crmvae, mvtcae x 3 (seeds 0-2) | 1, 2, 3 |" in text
    assert "crmvae, mvtcae x 1 (seed 0)" in text
    assert "(f)" not in text  # measured, not decided
    assert "model | seeds" not in text  # the numbers are the full style's


def test_a_study_of_data_without_claims_has_no_claims_table(tmp_path: Path) -> None:
    text = render_summary([read_study(write_study(tmp_path / "study", dataset="user"))], "full", tmp_path)
    assert "| claim |" not in text and "| study |" in text and "| crmvae | 3 |" in text


def test_the_full_style_says_from_which_snapshot_a_verdict_stands(tmp_path: Path) -> None:
    text = render_summary([read_study(write_study(tmp_path / "study"))], "full", tmp_path)
    (a_row,) = [line for line in text.splitlines() if line.startswith("| (a)")]
    assert "**holds** from epoch 2: 4/4 in its direction; weakest: crmvae - mvtcae at k=" in a_row
    assert "+0.3 (p = " in a_row and "seeds 3/3)" in a_row
    (e_row,) = [line for line in text.splitlines() if line.startswith("| (e)")]
    assert "**undecided**: 0/1 in its direction" in e_row  # equal gaps: no test applies


def test_the_numbers_are_means_over_the_seeds_with_their_count_when_fewer(tmp_path: Path) -> None:
    text = render_summary([read_study(write_study(tmp_path / "study"))], "full", tmp_path)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| crmvae") or line.startswith("| mvtcae")}
    assert rows["| crmvae"].startswith("| crmvae | 3 | 0.560 / 0.610 / 0.660 / 0.710 |")  # 0.2 + 0.01 + 0.3 + 0.05 k
    assert "| 101.0 | 50.0 |" in rows["| crmvae"]
    assert "| 101.5 (n=2) | 50.0 (n=2) |" in rows["| mvtcae"]  # seeds 1 and 2 have latent usage


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    (b"{not json", "not a readable results file"),
    (b"[1, 2]", "a list, not a mapping"),
    (b'{"config": {}, "runs": [], "records": [], "aggregate": {}}', "config lacks its dataset"),
    (b'{"config": {"dataset": "polymnist", "preset": "paper", "models": []}, "runs": [], "records": [], "aggregate": {}}',
     "no run"),
    (b'{"config": {"dataset": "polymnist", "preset": "paper", "models": []}, "runs": [{"model": "crmvae"}], '
     b'"records": [], "aggregate": {}}', "run or record 0 lacks one of"),
])
def test_a_damaged_results_file_is_named(tmp_path: Path, content: bytes | None, words: str) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    if content is not None:
        (folder / "results.json").write_bytes(content)
    with pytest.raises(ConfigError, match=str(folder / "results.json")) as error:
        read_study(folder)
    assert words in str(error.value)


def page(tmp_path: Path, style: str = "claims", body: str = "") -> Path:
    write_study(tmp_path / "results" / "study")
    path = tmp_path / "page.md"
    path.write_text(f"# Results\n\nBefore.\n\n<!-- summarize {style}: results/study -->\n{body}<!-- end summarize -->\n\nAfter.\n")
    return path


def test_blocks_are_rewritten_from_the_folders_they_name_and_then_stand(tmp_path: Path) -> None:
    path = page(tmp_path, body="| stale |\n")
    example = "```markdown\n<!-- summarize full: elsewhere -->\n<!-- end summarize -->\n```\n"
    path.write_text(path.read_text() + example)
    assert update_blocks(path, check=True) == ["summarize claims: results/study"]
    assert "| stale |" in path.read_text()  # check writes nothing
    assert update_blocks(path) == ["summarize claims: results/study"]
    text = path.read_text()
    assert "| stale |" not in text and text.startswith("# Results\n\nBefore.\n\n") and text.endswith("\n\nAfter.\n" + example)
    assert "[`study`](results/study/report.md)" in text  # links relative to the page
    assert render_summary([read_study(tmp_path / "results" / "study")], "claims", tmp_path) in text
    assert update_blocks(path) == [] and path.read_text() == text


@pytest.mark.parametrize("text, where, words", [
    ("no block here\n", "page.md", "has no '<!-- summarize"),
    ("```\n<!-- summarize full: results/study -->\n<!-- end summarize -->\n```\n", "page.md", "has no '<!-- summarize"),
    ("<!-- summarize everything: results/study -->\n<!-- end summarize -->\n", "page.md", "style 'everything' is not one of"),
    ("<!-- summarize full: results/none -->\n<!-- end summarize -->\n", "results/none/results.json", "does not exist"),
])
def test_a_bad_block_is_named(tmp_path: Path, text: str, where: str, words: str) -> None:
    write_study(tmp_path / "results" / "study")
    path = tmp_path / "page.md"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where) as error:
        update_blocks(path)
    assert words in str(error.value)
    assert path.read_text() == text


def test_the_command_prints_updates_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = page(tmp_path, "full")
    assert main(["summarize", str(tmp_path / "results" / "study"), "--style", "claims"]) == 0
    assert "| (a) CRMVAE above MVTCAE" in capsys.readouterr().out
    assert main(["summarize", "--update", str(path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main(["summarize", "--update", str(path)]) == 0
    assert main(["summarize", "--update", str(path), "--check"]) == 0
    assert main(["summarize", "--update", str(path), str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["summarize"]) == 2


def test_settings_a_run_lacks_are_left_out(tmp_path: Path) -> None:
    folder = write_study(tmp_path / "study")
    comparison = json.loads((folder / "results.json").read_text())
    comparison["runs"][0]["run_config"] = {"train": {"lr": "fast"}}
    comparison["runs"][0]["summary"] = {}
    (folder / "results.json").write_text(json.dumps(comparison))
    row = render_summary([read_study(folder)], "claims", tmp_path).splitlines()[2]
    assert row.startswith("| [`study`](study/report.md) | `polymnist`, `paper` |  | crmvae, mvtcae x 3")
