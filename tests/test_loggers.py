"""The experiment loggers. Weights & Biases: what it hands to wandb (against a stand-in module that
records the calls), the run id kept across a resume, and, with the real package, an offline run
read back from its file.
MLflow: a real SQLite tracking store, read back with MLflow's client."""

from __future__ import annotations

import hashlib
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crmvae.config import RunConfig, flatten, load_config, to_dict
from crmvae.errors import ConfigError
from crmvae.training import read_metrics, train
from crmvae.training.loggers import MLFLOW_ID_FILE, WANDB_DIR, WANDB_ID_FILE, mlflow_name, scalars
from test_training import tiny_config


def hide_package(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``import package`` (and of any of its modules) raise ImportError, as if not installed."""
    for name in [package, *(m for m in sys.modules if m.startswith(f"{package}."))]:
        monkeypatch.setitem(sys.modules, name, None)


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
    hide_package(monkeypatch, "wandb")
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
    history = wandb_history(log)  # wandb merges what is logged at one step into one row
    for step, values in logged_records(result.metrics_path):
        assert {k: history[step][k] for k in values} == pytest.approx(values), step
    last = history[result.global_step]
    for grid in result.grids:  # the very files: wandb stores each grid's sha256
        assert (last[f"grids/{grid.stem}/_type"], last[f"grids/{grid.stem}/sha256"]) == (
            "image-file", hashlib.sha256(grid.read_bytes()).hexdigest())


def wandb_history(path: Path) -> dict[int, dict[str, Any]]:
    """The history rows of an offline ``.wandb`` file by step: a ``:W&B`` header (7 bytes), then
    LevelDB-log chunks (checksum 4, length 2, type 1: full, first, middle, last) in 32 KiB blocks,
    whose payloads are wandb's ``Record`` protobufs."""
    import json

    from wandb.proto import wandb_internal_pb2

    data, block, position, pending, rows = path.read_bytes(), 32768, 7, b"", {}
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record.FromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                rows[record.history.step.num] = row
    return rows


# --------------------------------------------------------------------------------------------
# MLflow, with a SQLite tracking store in the test's folder


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of an empty SQLite tracking store that the logger will use (artifacts in ``tmp_path``)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow puts the artifacts of a SQLite store in ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return MlflowClient()


def history(client: Any, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def test_mlflow_gets_the_config_the_metrics_file_and_the_grids(data_dir: Path, tmp_path: Path, mlflow_store: Any) -> None:
    result = train(tiny_config(data_dir, "train.loggers=[mlflow]"), tmp_path / "out")
    run = mlflow_store.get_run((result.out_dir / MLFLOW_ID_FILE).read_text().strip())
    assert run.info.run_name == "out" and run.info.status == "FINISHED"
    assert mlflow_store.get_experiment(run.info.experiment_id).name == "crmvae"
    config = to_dict(load_config(RunConfig, result.config_path))
    assert run.data.params["train.lr"] == str(config["train"]["lr"])
    assert run.data.params["model.objective"] == "crmvae" and len(run.data.params) == len(flatten(config))
    records = read_metrics(result.metrics_path)
    steps = [(r["global_step"], r["loss"]) for r in records if r["kind"] == "step"]
    assert history(mlflow_store, run.info.run_id, "step/loss") == pytest.approx(steps)
    assert [s for s, _ in history(mlflow_store, run.info.run_id, "epoch/test_loss")] == [8, 16]
    assert "step/kl/joint__prior" in run.data.metrics  # kl/joint||prior, in MLflow's alphabet
    grids = mlflow_store.list_artifacts(run.info.run_id, "grids")
    assert sorted(Path(a.path).name for a in grids) == sorted(p.name for p in result.grids)


def test_a_resumed_run_continues_the_same_mlflow_run(data_dir: Path, tmp_path: Path, mlflow_store: Any) -> None:
    config = tiny_config(data_dir, "train.loggers=[mlflow]")
    out = tmp_path / "out"
    train(RunConfig(config.data, config.model, replace(config.train, max_steps=6)), out)
    run_id = (out / MLFLOW_ID_FILE).read_text().strip()
    assert mlflow_store.get_run(run_id).info.status == "FINISHED"
    train(config, out, resume=True)
    assert (out / MLFLOW_ID_FILE).read_text().strip() == run_id
    assert len(mlflow_store.search_runs([mlflow_store.get_run(run_id).info.experiment_id])) == 1
    steps = [(r["global_step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert history(mlflow_store, run_id, "step/loss") == pytest.approx(steps)  # each step once


def test_an_unusable_mlflow_store_is_a_config_error(data_dir: Path, tmp_path: Path, mlflow_store: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nope://nowhere")
    with pytest.raises(ConfigError, match=r"train.loggers: 'mlflow': nope://nowhere: .*set MLFLOW_TRACKING_URI"):
        train(tiny_config(data_dir, "train.loggers=[mlflow]"), tmp_path / "out")


def test_mlflow_missing_is_a_config_error(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_package(monkeypatch, "mlflow")
    with pytest.raises(ConfigError, match=r"'mlflow' needs the mlflow package: pip install 'crmvae\[mlflow\]'"):
        train(tiny_config(data_dir, "train.loggers=[mlflow]"), tmp_path / "out")


def test_mlflow_names_keep_its_alphabet() -> None:
    assert mlflow_name("step/kl/joint||prior") == "step/kl/joint__prior"
    assert mlflow_name("epoch/val_loss") == "epoch/val_loss" and mlflow_name("a.b-c d:e") == "a.b-c d:e"


@pytest.mark.parametrize("content, shown", [(b"\xff\xfe", "bytes that are not UTF-8"), (b"", "''"),
                                            (b"../../etc x\n", "'../../etc x'")])
@pytest.mark.parametrize("tool", ["wandb", "mlflow"])
def test_a_damaged_run_id_file_is_a_config_error_on_resume(data_dir: Path, tmp_path: Path, request: pytest.FixtureRequest,
                                                          tool: str, content: bytes, shown: str) -> None:
    request.getfixturevalue("wandb" if tool == "wandb" else "mlflow_store")
    config = tiny_config(data_dir, f"train.loggers=[{tool}]")
    out = tmp_path / "out"
    train(RunConfig(config.data, config.model, replace(config.train, max_steps=6)), out)
    id_file = out / WANDB_DIR / WANDB_ID_FILE if tool == "wandb" else out / MLFLOW_ID_FILE
    id_file.write_bytes(content)
    name = "wandb" if tool == "wandb" else "MLflow"
    with pytest.raises(ConfigError, match=rf"{id_file} holds {shown}, not a {name} run id; delete it to log the resumed run"):
        train(config, out, resume=True)
    id_file.unlink()
    train(config, out, resume=True)  # a new run for the rest
