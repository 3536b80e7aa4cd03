"""Study records: settings comparison, and reading a record back with every field checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crmvae.errors import ConfigError
from crmvae.evaluation.records import RecordKey, differing_keys, make_record, read_record


def test_a_setting_added_later_matches_at_its_default() -> None:
    old = {"train": {"lr": 1e-3}}
    assert differing_keys({"train": {"lr": 1e-3, "clip": None}}, old, {"train": {"clip": None}}) == []
    assert differing_keys({"train": {"lr": 1e-3, "clip": 1.0}}, old, {"train": {"clip": None}}) == ["train.clip"]
    assert differing_keys({"train": {"lr": 1e-3, "clip": None}}, old) == ["train.clip"]  # no default known
    assert differing_keys({"train": {"lr": 1e-3}}, {"train": {"lr": 1e-3, "clip": None}}, {"train": {"clip": None}}) \
        == ["train.clip"]  # the record has a setting this version lacks


def _record() -> dict[str, Any]:
    key = RecordKey("crmvae", 0, 3)
    return make_record(key, {"train": {"lr": 1e-3}}, {"metrics": ["coherence"]},
                       {"cross_coherence": {"by_size": {"1": 0.25}}, "n_test": 2000, "fid": None},
                       {"examples_seen": 1800, "wall_time_s": 12.5, "global_step": 30, "model": "last step"},
                       {"torch": "2.13.0"}, eval_seconds=3.0, grid="epoch3.png", model_sha256="ab" * 32,
                       metrics_run=["coherence"])


def _write(tmp_path: Path, record: Any) -> Path:
    path = RecordKey("crmvae", 0, 3).path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_a_record_reads_back_as_written(tmp_path: Path) -> None:
    record = _record()
    assert read_record(_write(tmp_path, record)) == json.loads(json.dumps(record))


@pytest.mark.parametrize(("change", "message"), [
    ({"result": [0.25]}, "result = [0.25] (expected an object)"),
    ({"eval_config": "fast"}, "eval_config = 'fast' (expected an object)"),
    ({"result": {"cross_coherence": {"by_size": {"1": "0.25"}}}}, "result.cross_coherence.by_size.1 = '0.25' (expected a number)"),
    ({"result": {"joint_coherence": True}}, "result.joint_coherence = True (expected a number)"),
    ({"summary": {"examples_seen": "many", "wall_time_s": "long"}},
     "summary.examples_seen = 'many' (expected a number or null) (and 1 more)"),
    ({"train_seconds": "12"}, "train_seconds = '12' (expected null or seconds)"),
    ({"versions": {"torch": 2.13}}, "versions = {'torch': 2.13} (expected an object of strings)"),
    ({"grid": "../../../elsewhere.png"}, "grid = '../../../elsewhere.png' (expected null or the name of a .png file"),
    ({"model_sha256": "abc"}, "model_sha256 = 'abc' (expected null or a sha256 in hex)"),
    ({"metrics_run": "coherence"}, "metrics_run = 'coherence' (expected null or a list of metric names)"),
    ({"result": {"probes": "x" * 500}}, "result.probes = 'xxxxxxxx"),
])
def test_a_damaged_record_names_the_field_and_the_file(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = _write(tmp_path, {**_record(), **change})
    with pytest.raises(ConfigError) as caught:
        read_record(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: {message}") and text.endswith("delete it to recompute it")
    assert len(text) < len(str(path)) + 200  # a long value is cut


def test_a_record_missing_the_result_of_a_metric_it_ran_is_refused(tmp_path: Path) -> None:
    record = _record()
    del record["result"]["cross_coherence"]
    path = _write(tmp_path, record)
    with pytest.raises(ConfigError, match="result has no 'cross_coherence', although metrics_run lists 'coherence'"):
        read_record(path)
