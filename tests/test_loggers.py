"""The Weights & Biases logger: what it hands to wandb (against a stand-in module that records the
calls), the run id kept across a resume, and, with the real package, an offline run."""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crmvae.config import RunConfig, load_config, to_dict
from crmvae.errors import ConfigError
from crmvae.training import read_metrics, train
from crmvae.training.loggers import WANDB_DIR, WANDB_ID_FILE, scalars
from test_training import tiny_config


class RecordingRun:
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.logged: list[tuple[int, dict[str, Any]]] = []
        self.finished = False

    def log(self, data: dict[str, Any], step: int) -> None:
        self.logged.append((step, data))

    def finish(self) -> None:
        self.finished = True


class Image:
    def __init__(self, path: str) -> None:
        self.path = path


def logged_records(metrics_path: Path) -> list[tuple[int, dict[str, Any]]]:
    """What the logger should log for the records of ``metrics.jsonl``: (step, {"step/loss": ...})."""
    return [(r["global_step"], {f"{'step' if r['kind'] == 'step' else 'epoch'}/{k}": v for k, v in scalars(r).items()})
            for r in read_metrics(metrics_path)]


@pytest.fixture
def wandb(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in ``wandb`` module: ``init`` returns a :class:`RecordingRun`, kept in ``runs``."""
    module = types.ModuleType("wandb")
    module.runs = []  # type: ignore[attr-defined]

    def init(**settings: Any) -> RecordingRun:
        module.runs.append(RecordingRun(**settings))  # type: ignore[attr-defined]
        return module.runs[-1]  # type: ignore[attr-defined]

    module.init = init  # type: ignore[attr-defined]
    module.Image = Image  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return module


def test_wandb_gets_the_config_the_metrics_file_and_the_grids(data_dir: Path, tmp_path: Path, wandb: Any) -> None:
    result = train(tiny_config(data_dir, "train.loggers=[wandb]"), tmp_path / "out")
    (run,) = wandb.runs
    run_id = (result.out_dir / WANDB_DIR / WANDB_ID_FILE).read_text().strip()
    assert run.settings == {"project": "crmvae", "name": "out", "dir": str(result.out_dir), "id": run_id,
                            "resume": "allow", "config": to_dict(load_config(RunConfig, result.config_path))}
    assert run.logged[:-1] == logged_records(result.metrics_path)
    assert "step/kl/joint||prior" in run.logged[0][1] and "epoch/test_loss" in run.logged[-2][1]
    step, grids = run.logged[-1]
    assert step == result.global_step and {name: image.path for name, image in grids.items()} == {
        f"grids/{path.stem}": str(path) for path in result.grids}
    assert run.finished


def test_a_resumed_run_continues_the_same_wandb_run(data_dir: Path, tmp_path: Path, wandb: Any) -> None:
    config = tiny_config(data_dir, "train.loggers=[wandb]", "train.checkpoint_every=4")
    out = tmp_path / "out"
    train(RunConfig(config.data, config.model, replace(config.train, max_steps=6)), out)
    train(config, out, resume=True)
    train(config, tmp_path / "other")
    first, resumed, other = wandb.runs
    assert first.settings["id"] == resumed.settings["id"] != other.settings["id"]
    # stopped at step 6 (checkpointed there), resumed from it: together, every record once
    assert first.logged[:-1] + resumed.logged[:-1] == logged_records(out / "metrics.jsonl")
    assert first.logged[-1][0] == 6 and resumed.logged[-1][0] == 16  # the grids
    assert all(run.finished for run in wandb.runs)


def test_wandb_missing_is_a_config_error(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"'wandb' needs the wandb package: pip install 'crmvae\[wandb\]'"):
        train(tiny_config(data_dir, "train.loggers=[wandb]"), tmp_path / "out")


def test_an_offline_wandb_run_holds_the_scalars_and_grids(data_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = train(tiny_config(data_dir, "train.loggers=[wandb]"), tmp_path / "out")
    run_id = (result.out_dir / WANDB_DIR / WANDB_ID_FILE).read_text().strip()
    (log,) = (result.out_dir / WANDB_DIR).glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    content = log.read_bytes()
    for name in ("step/loss", "step/kl/joint||prior", "epoch/test_loss", "grids/prior_samples"):
        assert name.encode() in content, name
