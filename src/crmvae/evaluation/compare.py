"""A comparison study from one call: train (or reuse) every model x seed, evaluate, aggregate.

Run ``(model, seed)`` lives in ``runs_dir/<dataset>/<model>/seed<seed>``, trained with the preset,
the shared ``budget`` overrides and ``train.seed = seed``; every seed sees the same dataset
(``data.seed`` comes from the preset or the budget), as in the paper, so data and classifiers are
built once. A finished run with the same configuration is reused, an unfinished one resumed (the
trainer refuses a changed configuration), a missing one trained. Each run's evaluation is cached in its
``evaluation_cache.json``, keyed by the :class:`EvalConfig` and the sha256 of ``model.pt``, so a
rerun only evaluates what changed (``crmvae evaluate RUN`` writes its own ``evaluation.json``).
Every metric is then aggregated over seeds as mean and sample standard deviation
``s = sqrt(sum_i (x_i - mean)^2 / (n - 1))`` (0 for a single seed).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig, load_config, save_config, to_dict
from ..data import dataset_info
from ..errors import ConfigError
from ..model import MultimodalVAE
from ..objectives import OBJECTIVES, get_objective
from ..presets import PRESETS, build_run_config
from ..training import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE, SUMMARY_FILE, train
from ..training.progress import format_duration
from .evaluate import EvalConfig, evaluate_checkpoint

COMPARE_FILE = "compare.yaml"
EVALUATION_FILE = "evaluation_cache.json"

#: ``evaluate(run_dir, eval_config) -> result dict`` (the schema of :func:`evaluate_model`).
EvaluateFn = Callable[[Path, EvalConfig], dict[str, Any]]

#: Evaluation settings that do not change the result: not part of the cache key.
DISPLAY_ONLY = frozenset({"progress"})

#: Result entries that describe an evaluation rather than score a model: not aggregated.
NOT_SCORES = frozenset({"n_test", "seconds", "samples", "train_examples"})


@dataclass
class CompareConfig:
    """A comparison study: which models and seeds, the shared training budget, the evaluation.

    ``budget`` holds ``section.key=value`` overrides (``train.epochs=1``, ``data.train_size=20000``)
    applied identically to every model after the preset.
    """

    dataset: str = "polymnist"
    models: list[str] = field(default_factory=lambda: ["crmvae"])
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "cpu-short"
    budget: list[str] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "docs/results/compare"
    runs_dir: str = "runs"


# --------------------------------------------------------------------------------------------
# configuration


def run_config(config: CompareConfig, model: str, seed: int) -> RunConfig:
    """The training configuration of ``(model, seed)``: preset, budget, then the training seed."""
    return build_run_config(config.dataset, model, config.preset, [*config.budget, f"train.seed={seed}"])


def run_dir(config: CompareConfig, model: str, seed: int) -> Path:
    """``runs_dir/<dataset>/<model>/seed<seed>``."""
    return Path(config.runs_dir) / config.dataset / model / f"seed{seed}"


def validate(config: CompareConfig) -> dict[tuple[str, int], RunConfig]:
    """Check names, seeds and overrides before anything runs; the run configuration of each
    ``(model, seed)``. Raises :class:`ConfigError` naming the bad entry and the valid choices."""
    if config.dataset not in PRESETS:
        raise ConfigError(f"compare: no presets for dataset {config.dataset!r}; available: {sorted(PRESETS)}")
    if not config.models:
        raise ConfigError(f"compare: no models given; available: {sorted(OBJECTIVES)}")
    if not config.seeds:
        raise ConfigError("compare: no seeds given, e.g. seeds [0, 1]")
    for what, values in (("models", [get_objective(m).name for m in config.models]), ("seeds", config.seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"compare: {what} repeated: {', '.join(repeated)}")
    if any(seed < 0 for seed in config.seeds):
        raise ConfigError(f"compare: seeds must be >= 0, got {config.seeds}")
    return {(m, s): run_config(config, m, s) for m in config.models for s in config.seeds}


def resolved(config: RunConfig) -> RunConfig:
    """``config`` as the trainer writes it to ``config.yaml``: dataset and objective parameters
    with their defaults filled in."""
    data = replace(config.data, params=dataset_info(config.data)["params"])
    return replace(config, data=data, model=MultimodalVAE(config.model).config)


def _comparable(config: RunConfig) -> dict[str, Any]:
    values = to_dict(config)
    values["train"].pop("progress")  # display only
    return values


def run_status(out: Path, config: RunConfig) -> str:
    """``"finished"`` (``summary.json`` and ``model.pt`` of this very configuration), ``"unfinished"``
    (a checkpoint to resume; the trainer checks its configuration) or ``"new"``."""
    if not (out / CHECKPOINT_FILE).is_file() and not (out / MODEL_FILE).is_file():
        return "new"
    done = all((out / name).is_file() for name in (SUMMARY_FILE, MODEL_FILE, CONFIG_FILE))
    if done and _comparable(load_config(RunConfig, out / CONFIG_FILE)) == _comparable(resolved(config)):
        return "finished"
    return "unfinished"


# --------------------------------------------------------------------------------------------
# evaluation cache


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def cached_evaluation(out: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The result stored in ``out/evaluation_cache.json`` under ``key``, if any."""
    path = out / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())["entries"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None  # an unreadable cache is recomputed and rewritten
    return next((e["result"] for e in entries if e.get("key") == key), None)


def store_evaluation(out: Path, key: Mapping[str, Any], result: dict[str, Any]) -> None:
    """Add ``result`` under ``key`` to ``out/evaluation_cache.json`` (other keys kept; atomic write)."""
    path = out / EVALUATION_FILE
    entries = []
    if path.is_file():
        try:
            entries = [e for e in json.loads(path.read_text())["entries"] if e.get("key") != key]
        except (json.JSONDecodeError, KeyError, TypeError):
            entries = []
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"entries": [*entries, {"key": dict(key), "result": result}]}, indent=2) + "\n")
    tmp.replace(path)


def default_evaluate(out: Path, config: EvalConfig) -> dict[str, Any]:
    """:func:`evaluate_checkpoint` on the run's ``model.pt`` with the run's data configuration."""
    return evaluate_checkpoint(out / MODEL_FILE, config)


# --------------------------------------------------------------------------------------------
# aggregation


def score_leaves(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric scores of a result dict as ``{"cross_coherence.by_size.1": 0.8, ...}``
    (descriptive entries in :data:`NOT_SCORES` left out)."""
    leaves: dict[str, float] = {}
    for key, value in result.items():
        if key in NOT_SCORES:
            continue
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            leaves.update(score_leaves(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            leaves[name] = float(value)
    return leaves


def mean_std(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}``; std is the sample standard deviation (ddof 1), 0 for n = 1."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "n": len(array), "values": list(map(float, array))}


def with_means(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` plus per-run means over target modalities of the FID figures:
    ``fid.unconditional_mean`` and ``fid.by_size_mean.<k>`` (mean over the modalities that have k)."""
    out = dict(result)
    fid = result.get("fid")
    if isinstance(fid, Mapping):
        fid = dict(fid)
        if fid.get("unconditional"):
            fid["unconditional_mean"] = float(np.mean(list(fid["unconditional"].values())))
        sizes: dict[str, list[float]] = {}
        for per_size in (fid.get("by_size") or {}).values():
            for k, value in per_size.items():
                sizes.setdefault(k, []).append(value)
        if sizes:
            fid["by_size_mean"] = {k: float(np.mean(v)) for k, v in sizes.items()}
        out["fid"] = fid
    return out


def aggregate(results: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`mean_std` over ``results`` (one per seed) of every score (and of :func:`with_means`); a score missing from some
    seeds is aggregated over the seeds that have it (its ``n`` says how many)."""
    per_key: dict[str, list[float]] = {}
    for result in results:
        for key, value in score_leaves(with_means(result)).items():
            per_key.setdefault(key, []).append(value)
    return {key: mean_std(values) for key, values in sorted(per_key.items())}


# --------------------------------------------------------------------------------------------
# the study


def versions() -> dict[str, str]:
    """Versions of the software and the machine the study ran on."""
    from .. import __version__

    return {
        "crmvae": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "platform": platform.platform(), "torch_threads": str(torch.get_num_threads()),
    }


def _say(message: str) -> None:
    print(message, flush=True)


def _train_run(config: RunConfig, out: Path) -> tuple[str, float]:
    """Train, resume or reuse the run in ``out``; its status before and the seconds spent."""
    status = run_status(out, config)
    start = time.perf_counter()
    if status != "finished":
        train(config, out, resume=status == "unfinished")
    return status, time.perf_counter() - start


def run_comparison(
    config: CompareConfig,
    evaluate: EvaluateFn = default_evaluate,
    command: str | None = None,
    log: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Train/reuse, evaluate and aggregate every ``(model, seed)`` of ``config``.

    Writes ``compare.yaml`` into ``config.out_dir`` first. Returns ``{"config", "command",
    "versions", "runs": [...], "aggregate": {model: {score: {mean, std, n, values}}},
    "seconds"}``, where each run holds its model, seed, run dir, status (new / unfinished /
    finished), training summary, evaluation result and timings.
    """
    config = replace(config, models=[get_objective(m).name for m in config.models])
    configs = validate(config)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / COMPARE_FILE)
    eval_key = {k: v for k, v in _json_roundtrip(to_dict(config.eval)).items() if k not in DISPLAY_ONLY}
    start, runs = time.perf_counter(), []
    for i, ((model, seed), rc) in enumerate(configs.items(), 1):
        out, tag = run_dir(config, model, seed), f"[{i}/{len(configs)}] {model} seed {seed}"
        status, train_s = _train_run(rc, out)
        verb = {"new": "trained", "unfinished": "resumed", "finished": "reused"}[status]
        log(f"{tag}: {verb} in {format_duration(train_s)} -> {out}")
        key = {"eval_config": eval_key, "model_sha256": file_sha256(out / MODEL_FILE)}
        eval_start = time.perf_counter()
        result = cached_evaluation(out, key)
        cached = result is not None
        if result is None:
            result = _json_roundtrip(evaluate(out, config.eval))
            store_evaluation(out, key, result)
        eval_s = time.perf_counter() - eval_start
        log(f"{tag}: evaluation {'cached' if cached else 'done'} in {format_duration(eval_s)}")
        runs.append({
            "model": model, "seed": seed, "run_dir": str(out), "status": status,
            "train_seconds": train_s, "eval_seconds": eval_s, "eval_cached": cached,
            "summary": json.loads((out / SUMMARY_FILE).read_text()),
            "run_config": to_dict(load_config(RunConfig, out / CONFIG_FILE)),
            "result": result,
        })
    aggregated = {m: aggregate([r["result"] for r in runs if r["model"] == m]) for m in config.models}
    return {
        "config": to_dict(config), "command": command or " ".join(sys.argv), "versions": versions(),
        "runs": runs, "aggregate": aggregated, "seconds": time.perf_counter() - start,
    }


def load_compare_config(path: str | Path) -> CompareConfig:
    """Read a ``compare.yaml``."""
    return load_config(CompareConfig, path)


__all__ = [
    "COMPARE_FILE",
    "EVALUATION_FILE",
    "CompareConfig",
    "aggregate",
    "load_compare_config",
    "mean_std",
    "run_comparison",
    "run_config",
    "run_dir",
    "run_status",
    "score_leaves",
    "validate",
    "with_means",
]
