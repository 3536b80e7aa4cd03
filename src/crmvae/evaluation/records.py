"""Study records: one small JSON file per (model, seed, snapshot) of a comparison study.

A record is what a report needs from one evaluated training state, and nothing heavy: the
evaluation result, the training summary at that point, the full run and evaluation settings
(each with a sha256 of its canonical JSON), software versions, the CPU, wall times, and the name
of a small generation grid stored beside it. Records live in the report folder::

    <report>/records/<model>/seed<seed>/epoch<E>.json   (+ epoch<E>.png)

so a study is committed together with its report, while checkpoints stay in the runs folder.
A record is reused by a later study only when its settings match that study's expectation for
the same (model, seed, epochs): every run setting equal, every evaluation setting equal, and
its metrics a superset of the ones asked for. Anything else is a mismatch, reported by the
dotted names of the differing keys.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import flatten
from ..errors import ConfigError
from ..fileio import atomic_write, make_dir
from .evaluate import METRIC_RESULTS

RECORDS_DIR = "records"
FORMAT = 1
_RECORD_NAME = re.compile(r"epoch(\d+)\.json")
_MISSING = object()
#: Summary entries that reports read as numbers.
_SUMMARY_NUMBERS = ("examples_seen", "global_step", "test_loss", "train_loss", "wall_time_s", "examples_per_s")


@dataclass(frozen=True)
class RecordKey:
    """Which training state a record describes."""

    model: str
    seed: int
    epochs: int

    def path(self, report_dir: Path) -> Path:
        """``<report_dir>/records/<model>/seed<seed>/epoch<epochs>.json``."""
        return Path(report_dir) / RECORDS_DIR / self.model / f"seed{self.seed}" / f"epoch{self.epochs}.json"


def canonical_json(value: Any) -> str:
    """Key-sorted, compact JSON: the text that settings hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def settings_sha256(value: Any) -> str:
    """sha256 of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def differing_keys(
    expected: Mapping[str, Any], found: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Dotted names of the leaves whose values differ (or exist on one side only). A leaf that
    ``found`` lacks matches when ``expected`` holds its value in ``defaults`` (flat, dotted): a
    setting added later, at the default that keeps the earlier behaviour."""
    a, b, base = flatten(expected), flatten(found), flatten(defaults or {})
    return sorted(
        key for key in a.keys() | b.keys()
        if a.get(key, _MISSING) != b.get(key, _MISSING)
        and not (key not in b and key in base and a[key] == base[key])
    )


#: CPU flags that change the speed and the float rounding of the kernels a run uses.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_model() -> str:
    """The CPU from ``/proc/cpuinfo``: model name, family and model numbers, and which of
    :data:`CPU_FLAGS` it has (``platform.processor()`` elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        return platform.processor() or "unknown"
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return (f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}; {' '.join(f for f in CPU_FLAGS if f in flags) or 'no AVX2'})")


def make_record(
    key: RecordKey,
    run_config: Mapping[str, Any],
    eval_config: Mapping[str, Any],
    result: Mapping[str, Any],
    summary: Mapping[str, Any],
    versions: Mapping[str, str],
    eval_seconds: float,
    grid: str | None,
    model_sha256: str | None = None,
    metrics_run: list[str] | None = None,
) -> dict[str, Any]:
    """The record of one evaluated training state (JSON-ready); ``model_sha256`` is the hash of
    the evaluated ``model.pt``, ``metrics_run`` the metrics that made ``result`` (which
    ``eval_config`` may leave to the dataset's defaults)."""
    return {
        "format": FORMAT,
        "model": key.model, "seed": key.seed, "epochs": key.epochs, "model_sha256": model_sha256,
        "metrics_run": metrics_run,
        "train_examples": summary.get("examples_seen"),
        "run_config": dict(run_config), "run_config_sha256": settings_sha256(run_config),
        "eval_config": dict(eval_config), "eval_config_sha256": settings_sha256(eval_config),
        "result": dict(result),
        "summary": {k: v for k, v in summary.items() if k != "files"},
        "train_seconds": summary.get("wall_time_s"), "eval_seconds": eval_seconds,
        "versions": {**versions, "cpu": cpu_model()},
        "grid": grid,
    }


def write_record(path: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` to ``path`` atomically."""
    make_dir(path.parent)
    return atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_record(path: Path) -> dict[str, Any]:
    """The record in ``path``; :class:`ConfigError` naming the file when it is not one."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable study record ({exc}); delete it to recompute it") from None
    needed = {"format", "model", "seed", "epochs", "run_config", "eval_config", "result", "summary"}
    if not isinstance(record, dict) or not needed <= record.keys() or record["format"] != FORMAT:
        raise ConfigError(f"{path}: not a study record of format {FORMAT} (needs keys {sorted(needed)}); "
                          f"delete it to recompute it")
    if not (isinstance(record["model"], str) and all(type(record[k]) is int for k in ("seed", "epochs"))):
        raise ConfigError(f"{path}: its model must be a name and its seed and epochs integers; delete it to recompute it")
    wrong = [f"{name} = {_show(record[name])} (expected {expected})" for name, (check, expected) in _FIELDS.items()
             if name in record and not check(record[name])]
    result, summary = record["result"], record["summary"]
    leaves = flatten(result).items() if isinstance(result, dict) else ()
    wrong += [f"result.{k} = {_show(v)} (expected a number)" for k, v in leaves if not _is_measurement(v)]
    numbers = [(k, summary[k]) for k in _SUMMARY_NUMBERS if k in summary] if isinstance(summary, dict) else []
    wrong += [f"summary.{k} = {_show(v)} (expected a number or null)" for k, v in numbers
              if not (v is None or _is_number(v))]
    ran = record.get("metrics_run") if isinstance(result, dict) and not wrong else None
    wrong += [f"result has no {METRIC_RESULTS[m]!r}, although metrics_run lists {m!r}" for m in ran or ()
              if m in METRIC_RESULTS and METRIC_RESULTS[m] not in result]
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise ConfigError(f"{path}: {wrong[0]}{more}; delete it to recompute it")
    if path.name != f"epoch{record['epochs']}.json" or path.parent.name != f"seed{record['seed']}" \
            or path.parent.parent.name != record["model"]:
        raise ConfigError(f"{path}: its content is for {record['model']} seed {record['seed']} epoch "
                          f"{record['epochs']}, not for the place it is stored in")
    return record


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_measurement(value: Any) -> bool:
    """A result leaf: a number (not a bool), null, or a list of those."""
    if isinstance(value, list):
        return all(_is_measurement(v) and not isinstance(v, list) for v in value)
    return value is None or _is_number(value)


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The record's fields beyond the required names, and the JSON each must hold (when present).
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "run_config": (lambda v: isinstance(v, dict), "an object"),
    "eval_config": (lambda v: isinstance(v, dict), "an object"),
    "result": (lambda v: isinstance(v, dict), "an object"),
    "summary": (lambda v: isinstance(v, dict), "an object"),
    "versions": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "an object of strings"),
    "grid": (lambda v: v is None or (isinstance(v, str) and v == Path(v).name and v.endswith(".png")),
             "null or the name of a .png file beside the record"),
    "model_sha256": (lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None),
                     "null or a sha256 in hex"),
    "run_config_sha256": (lambda v: isinstance(v, str), "a string"),
    "eval_config_sha256": (lambda v: isinstance(v, str), "a string"),
    "metrics_run": (lambda v: v is None or (isinstance(v, list) and all(isinstance(m, str) for m in v)),
                    "null or a list of metric names"),
    "train_examples": (lambda v: v is None or (_is_number(v) and v >= 0), "null or a count"),
    "train_seconds": (lambda v: v is None or _is_number(v), "null or seconds"),
    "eval_seconds": (lambda v: v is None or _is_number(v), "null or seconds"),
}


def find_records(report_dir: Path) -> list[Path]:
    """Every record file under ``<report_dir>/records``, sorted."""
    root = Path(report_dir) / RECORDS_DIR
    return sorted(p for p in root.glob("*/seed*/epoch*.json") if _RECORD_NAME.fullmatch(p.name)) if root.is_dir() else []


def record_mismatch(
    record: Mapping[str, Any], run_config: Mapping[str, Any], eval_config: Mapping[str, Any],
    ignored: Iterable[str] = (), run_defaults: Mapping[str, Any] | None = None,
    eval_defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Why ``record`` cannot stand for a state trained with ``run_config`` and evaluated with
    ``eval_config``: the differing setting names (``run.train.lr``, ``eval.n_test``), empty when it
    can. ``eval.metrics`` differs only when the record lacks a metric asked for (a record left to
    the dataset's defaults counts with the metrics it ran, ``metrics_run``); ``ignored``
    names settings that do not change results (``train.progress``); a setting the record lacks
    matches at its value in ``run_defaults`` / ``eval_defaults`` (see :func:`differing_keys`)."""
    skip = set(ignored)
    run = [f"run.{k}" for k in differing_keys(run_config, record["run_config"], run_defaults) if k not in skip]
    expected = {k: v for k, v in eval_config.items() if k != "metrics"}
    found = {k: v for k, v in record["eval_config"].items() if k != "metrics"}
    evaluation = [f"eval.{k}" for k in differing_keys(expected, found, eval_defaults) if k not in skip]
    wanted, have = eval_config.get("metrics"), record["eval_config"].get("metrics")
    if wanted is not None and have is None:
        have = record.get("metrics_run")
    if wanted is None or have is None:
        if wanted != have:
            evaluation.append("eval.metrics")
    elif not set(wanted) <= set(have):
        evaluation.append("eval.metrics")
    return run + sorted(evaluation)


__all__ = [
    "RECORDS_DIR",
    "RecordKey",
    "canonical_json",
    "cpu_model",
    "differing_keys",
    "find_records",
    "flatten",
    "make_record",
    "read_record",
    "record_mismatch",
    "settings_sha256",
    "write_record",
]
