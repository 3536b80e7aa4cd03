"""A cumulative comparison study: train what is missing, record every state, aggregate the records.

Run ``(model, seed)`` lives in ``runs_dir/<dataset>/<model>/seed<seed>``, trained with the preset,
the shared ``budget`` overrides and ``train.seed = seed``; every seed sees the same dataset
(``data.seed`` comes from the preset or the budget), as in the paper, so data and classifiers are
built once (a validation split, ``train.validation_size``, is drawn with ``train.seed``, so it
differs between seeds). Each run is evaluated at its snapshots (epochs), and each evaluated state becomes a
small record in the report folder (:mod:`crmvae.evaluation.records`): the study's durable
result, committed with its report, while checkpoints stay in ``runs_dir``. A later call with
more models, seeds or snapshots reuses every record whose settings match, refuses one whose
settings differ, trains (or resumes) only what is missing, and aggregates all records. Each
run's evaluation is also cached in its ``evaluation_cache.json``, keyed by the evaluation
settings and the sha256 of ``model.pt``. Every metric is aggregated over seeds as mean and sample
standard deviation ``s = sqrt(sum_i (x_i - mean)^2 / (n - 1))`` (0 for a single seed).
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_model, read_checkpoint
from ..config import RunConfig, from_dict, load_config, save_config, to_dict
from ..data import dataset_info, load_dataset
from ..errors import ConfigError
from ..fileio import atomic_write, file_sha256, remove_stale_temporaries
from ..model import MultimodalVAE
from ..objectives import OBJECTIVES, get_objective
from ..presets import PRESETS, build_run_config
from ..training import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EPOCHS_DIR,
    GRIDS_DIR,
    METRICS_FILE,
    MODEL_FILE,
    NON_RESULT_KEYS,
    SUMMARY_FILE,
    run_config_to_resume,
    schedule_depends_on_epochs,
    train,
)
from ..training.loggers import MLFLOW_ID_FILE, TENSORBOARD_DIR, WANDB_DIR
from ..training.progress import format_duration
from ..visualize import image_modalities, save_generation_grids, subset_filename
from .evaluate import METRICS, EvalConfig, evaluate_checkpoint, metrics_in
from .records import RECORDS_DIR, RecordKey, find_records, make_record, read_record, record_mismatch, write_record

COMPARE_FILE = "compare.yaml"
EVALUATION_FILE = "evaluation_cache.json"

#: ``evaluate(run_dir, eval_config) -> result dict`` (the schema of :func:`evaluate_model`).
EvaluateFn = Callable[[Path, EvalConfig], dict[str, Any]]

#: Evaluation settings that do not change the result: not part of the cache key.
DISPLAY_ONLY = frozenset({"progress"})
#: Run settings that do not change the trained state: not compared when a record is reused.
IGNORED_SETTINGS = NON_RESULT_KEYS

#: Result entries that describe an evaluation rather than score a model: not aggregated.
NOT_SCORES = frozenset({"n_test", "seconds", "samples", "train_examples", "examples"})


@dataclass
class CompareConfig:
    """A comparison study: which models and seeds, the shared training budget, the evaluation.

    ``models`` are objective names, or variants with their own objective parameters
    (``crmvae@recon_coef=half``, see :func:`model_variant`), each a model of its own in the
    report. ``budget`` holds ``section.key=value`` overrides (``train.epochs=1``, ``data.train_size=20000``)
    applied identically to every model after the preset. ``snapshots`` lists the epochs at which
    every run is evaluated and recorded (empty: the budget's ``train.epochs`` alone); one run
    trains through them in order, resuming between them, so with the constant learning rate each
    state is that of one uninterrupted run. ``snapshot_metrics`` are the metrics evaluated at every
    snapshot but the last (``None``: ``eval.metrics``); leaving FID out of them saves most of the cost.
    """

    dataset: str = "polymnist"
    models: list[str] = field(default_factory=lambda: ["crmvae"])
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "cpu-short"
    budget: list[str] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "docs/results/compare"
    runs_dir: str = "runs"
    snapshots: list[int] = field(default_factory=list)
    snapshot_metrics: list[str] | None = None


# --------------------------------------------------------------------------------------------
# configuration


#: Separates an objective from its parameters in a study's model name (``crmvae@recon_coef=half``).
VARIANT_SEPARATOR = "@"


def model_variant(name: str) -> tuple[str, list[str]]:
    """The objective of a study's model name and its parameter overrides: ``"crmvae@recon_coef=half"``
    is the objective ``crmvae`` with ``model.objective_params.recon_coef=half`` (any number of
    ``@key=value``); a plain objective name has none. :class:`ConfigError` for an unknown
    objective or a parameter without a value."""
    objective, *params = name.split(VARIANT_SEPARATOR)
    bad = [p for p in params if "=" not in p or not p.split("=", 1)[0]]
    if bad:
        raise ConfigError(f"model {name!r}: expected objective@key=value, got {bad[0]!r}")
    return get_objective(objective).name, [f"model.objective_params.{p}" for p in params]


def canonical_model(name: str) -> str:
    """``name`` with its objective spelled as registered (``MVAE@beta=2`` -> ``mvae@beta=2``)."""
    objective, _ = model_variant(name)
    return VARIANT_SEPARATOR.join([objective, *name.split(VARIANT_SEPARATOR)[1:]])


def run_config(config: CompareConfig, model: str, seed: int, epochs: int | None = None) -> RunConfig:
    """The training configuration of ``(model, seed)``: preset, budget, the model's own parameters
    (:func:`model_variant`), the training seed, then ``train.epochs = epochs`` when given (a snapshot)."""
    objective, params = model_variant(model)
    snapshot = [f"train.epochs={epochs}"] if epochs is not None else []
    return build_run_config(config.dataset, objective, config.preset,
                            [*config.budget, *params, f"train.seed={seed}", *snapshot])


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
    for what, values in (("models", [canonical_model(m) for m in config.models]), ("seeds", config.seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"compare: {what} repeated: {', '.join(repeated)}")
    if any(seed < 0 for seed in config.seeds):
        raise ConfigError(f"compare: seeds must be >= 0, got {config.seeds}")
    if any(e < 1 for e in config.snapshots) or len(set(config.snapshots)) != len(config.snapshots):
        raise ConfigError(f"compare: snapshots must be distinct epochs >= 1, got {config.snapshots}")
    for what, metrics in (("eval.metrics", config.eval.metrics), ("snapshot_metrics", config.snapshot_metrics)):
        unknown = sorted(set(metrics or []) - set(METRICS))  # before any training, not at the first evaluation
        if unknown:
            raise ConfigError(f"compare: {what}: unknown metrics {unknown}; available: {list(METRICS)}")
    configs = {(m, s): run_config(config, m, s) for m in config.models for s in config.seeds}
    if config.snapshots and any(schedule_depends_on_epochs(rc.train) for rc in configs.values()):
        raise ConfigError(
            "compare: snapshots resume one run with more epochs each time, but a cosine learning-rate schedule "
            "without train.lr_horizon_steps stretches with train.epochs; set train.lr_horizon_steps in the budget"
        )
    if config.snapshots and any(rc.train.max_steps is not None for rc in configs.values()):
        raise ConfigError(
            "compare: snapshots are epochs, but train.max_steps stops every run at a fixed step whatever its epochs; "
            "leave train.max_steps out of the budget, or the snapshots out of the study"
        )
    return configs


def resolved(config: RunConfig) -> RunConfig:
    """``config`` as the trainer writes it to ``config.yaml``: dataset and objective parameters
    with their defaults filled in."""
    data = replace(config.data, params=dataset_info(config.data)["params"])
    return replace(config, data=data, model=MultimodalVAE(config.model).config)


def _comparable(config: RunConfig) -> dict[str, Any]:
    """``config`` as a dict without the settings that do not change results (``NON_RESULT_KEYS``)."""
    values = to_dict(config)
    for key in NON_RESULT_KEYS:
        section, name = key.split(".")
        values[section].pop(name)
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


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _cache_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of the evaluation cache ``path``; none when it is unreadable or malformed
    (it is then recomputed and rewritten)."""
    try:
        entries = json.loads(path.read_text())["entries"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def cached_evaluation(out: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The result stored in ``out/evaluation_cache.json`` under ``key``, if any."""
    path = out / EVALUATION_FILE
    if not path.is_file():
        return None
    entries = _cache_entries(path)
    return next((e["result"] for e in entries if e.get("key") == key and "result" in e), None)


def store_evaluation(out: Path, key: Mapping[str, Any], result: dict[str, Any]) -> None:
    """Add ``result`` under ``key`` to ``out/evaluation_cache.json`` (other keys kept; atomic write)."""
    path = out / EVALUATION_FILE
    entries = [e for e in _cache_entries(path) if e.get("key") != key] if path.is_file() else []
    atomic_write(path, json.dumps({"entries": [*entries, {"key": dict(key), "result": result}]}, indent=2) + "\n")


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


def snapshot_epochs(config: CompareConfig) -> list[int]:
    """The epochs at which every run is recorded, ascending: ``config.snapshots``, or the
    training budget's ``train.epochs`` alone."""
    if config.snapshots:
        return sorted(config.snapshots)
    return [run_config(config, config.models[0], config.seeds[0]).train.epochs]


def eval_settings(config: CompareConfig, final: bool) -> dict[str, Any]:
    """The evaluation settings of a record (display-only ones left out): ``config.eval``, with
    ``snapshot_metrics`` as the metrics of every snapshot but the last."""
    settings = {k: v for k, v in _json_roundtrip(to_dict(config.eval)).items() if k not in DISPLAY_ONLY}
    if not final and config.snapshot_metrics is not None:
        settings["metrics"] = list(config.snapshot_metrics)
    return settings


def expected_run_settings(config: CompareConfig, key: RecordKey) -> dict[str, Any]:
    """The resolved run configuration of ``key``'s training state, as its record must hold it."""
    return _comparable(resolved(run_config(config, key.model, key.seed, key.epochs)))


def load_records(config: CompareConfig, final: int) -> dict[RecordKey, dict[str, Any]]:
    """Every record in the report folder, each checked against this study's settings for its
    (model, seed, epochs); :class:`ConfigError` naming the file and the differing keys on a
    mismatch. Records of other models, seeds and epochs join the study when their settings match."""
    records = {}
    defaults = {"run": _json_roundtrip(to_dict(RunConfig())), "eval": _json_roundtrip(to_dict(EvalConfig()))}
    for path in find_records(Path(config.out_dir)):
        record = read_record(path)
        try:
            model_variant(record["model"])
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        key = RecordKey(record["model"], int(record["seed"]), int(record["epochs"]))
        keys = record_mismatch(record, expected_run_settings(config, key), eval_settings(config, key.epochs >= final),
                               ignored=IGNORED_SETTINGS, run_defaults=defaults["run"], eval_defaults=defaults["eval"])
        if keys:
            raise ConfigError(
                f"{path} was made with other settings than this study's, in {', '.join(keys)}; use the same "
                f"preset, budget and evaluation settings, or another --out folder (records are never mixed)"
            )
        records[key] = record
    return records


def trained_towards(out: Path) -> int:
    """The epochs the run in ``out`` trains towards: its ``train.epochs``, where ``config.yaml``
    lacks it taken from its checkpoint (:func:`~crmvae.training.run_config_to_resume`); 0 without either."""
    values = run_config_to_resume(out)
    return 0 if values is None else from_dict(RunConfig, values, where=str(out / CONFIG_FILE)).train.epochs


#: What a run writes before its first checkpoint: a run folder holding nothing else was stopped
#: before it had anything to resume.
BEFORE_FIRST_CHECKPOINT = frozenset({CONFIG_FILE, METRICS_FILE, GRIDS_DIR, EPOCHS_DIR, TENSORBOARD_DIR, WANDB_DIR,
                                     MLFLOW_ID_FILE})


def clear_unstarted_run(out: Path) -> list[str]:
    """Empty the run folder ``out`` when it holds a run stopped before its first checkpoint (only
    :data:`BEFORE_FIRST_CHECKPOINT` entries), so that the run starts again; the names removed.
    :class:`ConfigError` naming anything else such a folder holds."""
    if not out.is_dir():
        return []
    remove_stale_temporaries(out)
    entries = sorted(p.name for p in out.iterdir())
    foreign = [name for name in entries if name not in BEFORE_FIRST_CHECKPOINT]
    if foreign:
        raise ConfigError(f"run folder {out} holds no checkpoint to resume, and {foreign}, which a run does not "
                          f"write: move them away or delete the folder")
    for name in entries:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    return entries


def _train_to(config: RunConfig, out: Path, epochs: int, log: Callable[[str], None]) -> str:
    """Bring the run in ``out`` to ``config`` (``epochs`` of training): reuse it when it finished
    there, otherwise train or resume it (a run stopped before its first checkpoint starts again);
    its status before (new / unfinished / finished). :class:`ConfigError` when the run has gone
    past ``epochs`` (its state there is lost)."""
    status = run_status(out, config)
    if status == "finished":
        return status
    if status == "new" and (removed := clear_unstarted_run(out)):
        log(f"{out} held a run stopped before its first checkpoint ({', '.join(removed)}): starting it again")
    target = trained_towards(out)
    if target > epochs:
        raise ConfigError(
            f"{out} is trained towards {target} epochs, past {epochs}, where a record is missing; "
            f"delete {out} to train it again"
        )
    if 0 < target < epochs and schedule_depends_on_epochs(config.train):
        raise ConfigError(
            f"{out} was trained towards {target} epochs under a cosine learning-rate schedule that spans them; "
            f"continued to {epochs} it would differ from an uninterrupted run. Set train.lr_horizon_steps in the "
            f"budget, or delete {out} to train it again"
        )
    train(config, out, resume=status == "unfinished")
    return status


def _record_grid(run: Path, path: Path, seed: int, examples: int = 4) -> str | None:
    """A small generation grid of ``run``'s model (from its first image modality) saved at ``path``;
    its file name, or ``None`` without image modalities."""
    model = load_model(run / MODEL_FILE).eval()
    first = image_modalities(model)[:1]
    if not first:
        return None
    config = load_config(RunConfig, run / CONFIG_FILE)
    test = load_dataset(config.data, "test")
    batch = test.batch(torch.arange(min(examples, len(test))))
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        source = Path(tmp) / subset_filename(first)
        save_generation_grids(model, batch, tmp, [first], seed=seed, decode_text=test.text_decoders)
        source.replace(path)
    return path.name


def _record_state(
    config: CompareConfig, key: RecordKey, out: Path, final: bool, evaluate: EvaluateFn, log: Callable[[str], None],
) -> dict[str, Any]:
    """Evaluate the run in ``out`` (through its evaluation cache), write and return its record."""
    settings = eval_settings(config, final)
    eval_config = from_dict(EvalConfig, {**to_dict(config.eval), "metrics": settings["metrics"]}, where="evaluation")
    cache_key = {"eval_config": settings, "model_sha256": file_sha256(out / MODEL_FILE)}
    start = time.perf_counter()
    result = cached_evaluation(out, cache_key)
    if result is None:
        result = _json_roundtrip(evaluate(out, eval_config))
        store_evaluation(out, cache_key, result)
    eval_s = time.perf_counter() - start
    path = key.path(Path(config.out_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = _record_grid(out, path.with_suffix(".png"), key.seed)
    record = make_record(
        key, to_dict(load_config(RunConfig, out / CONFIG_FILE)), settings, result,
        json.loads((out / SUMMARY_FILE).read_text()), versions(), eval_s, grid, cache_key["model_sha256"],
        metrics_in(result),
    )
    write_record(path, record)
    log(f"{key.model} seed {key.seed} epoch {key.epochs}: evaluated in {format_duration(eval_s)} -> {path}")
    return record


def _checked(config: CompareConfig) -> tuple[CompareConfig, dict[tuple[str, int], RunConfig], list[int]]:
    """``config`` with its model names canonical, the run configuration of each ``(model, seed)``
    (:func:`validate`) and the snapshot epochs."""
    config = replace(config, models=[canonical_model(m) for m in config.models])
    return config, validate(config), snapshot_epochs(config)


def run_comparison(
    config: CompareConfig,
    evaluate: EvaluateFn = default_evaluate,
    command: str | None = None,
    log: Callable[[str], None] = _say,
    report_only: bool = False,
) -> dict[str, Any]:
    """Train what is missing, record every ``(model, seed, snapshot)``, and aggregate all records
    (``report_only``: aggregate the records already there, train and evaluate nothing).

    Writes ``compare.yaml`` into ``config.out_dir`` first. Records already in the folder are
    checked (a mismatch raises :class:`ConfigError`) and reused; a ``(model, seed)`` with a
    missing snapshot is trained through its snapshots in order, resuming between them, and each
    missing snapshot is evaluated and recorded as soon as it is reached. Returns ``{"config",
    "command", "versions", "epochs", "records": [...], "runs": [...], "aggregate": {model: {score:
    {mean, std, n, values}}}, "curves": {model: {epochs: aggregate}}, "examples"}``:
    ``runs`` and ``aggregate`` are at the last snapshot, ``curves`` at every snapshot recorded.
    """
    config, configs, epochs = _checked(config)
    final = epochs[-1]
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / COMPARE_FILE)
    records = load_records(config, final)
    start, trained = time.perf_counter(), []
    for i, (model, seed) in enumerate([] if report_only else configs, 1):
        tag, out = f"[{i}/{len(configs)}] {model} seed {seed}", run_dir(config, model, seed)
        missing = [e for e in epochs if RecordKey(model, seed, e) not in records]
        if not missing:
            log(f"{tag}: every snapshot recorded ({', '.join(map(str, epochs))} epochs), reused")
            continue
        for e in missing:  # a recorded snapshot needs no training: the run resumes past it
            key = RecordKey(model, seed, e)
            train_start = time.perf_counter()
            status = _train_to(run_config(config, model, seed, e), out, e, log)
            verb = {"new": "trained", "unfinished": "resumed", "finished": "reused"}[status]
            log(f"{tag}: epoch {e} {verb} in {format_duration(time.perf_counter() - train_start)} -> {out}")
            if status != "finished":
                trained.append((model, seed, e))
            records[key] = _record_state(config, key, out, e == final, evaluate, log)
    log(f"{len(trained)} snapshot(s) trained, {len(records)} record(s) in {out_dir / RECORDS_DIR}, "
        f"{format_duration(time.perf_counter() - start)}")
    return summarize(config, records, final, command)


@dataclass(frozen=True)
class PlannedRun:
    """One ``(model, seed)`` of a study as :func:`plan_comparison` finds it: the snapshots already
    recorded and those still to train and evaluate, and the state of its run folder: ``"new"``,
    ``"finished"`` (at ``trained_epochs``) or ``"unfinished"`` (a checkpoint after ``trained_epochs``
    complete epochs, of the ``target_epochs`` it was training towards)."""

    model: str
    seed: int
    recorded: list[int]
    missing: list[int]
    run_state: str
    trained_epochs: int = 0
    target_epochs: int = 0


def plan_comparison(config: CompareConfig) -> list[PlannedRun]:
    """What :func:`run_comparison` would do, with every check it makes first (names, settings,
    each record against the study's settings), training, evaluating and writing nothing."""
    config, configs, epochs = _checked(config)
    records = load_records(config, epochs[-1])
    plan = []
    for model, seed in configs:
        out = run_dir(config, model, seed)
        recorded = [e for e in epochs if RecordKey(model, seed, e) in records]
        missing = [e for e in epochs if e not in recorded]
        state, trained, target = "new", 0, 0
        if (out / CONFIG_FILE).is_file() and (out / CHECKPOINT_FILE).is_file():
            target = trained_towards(out)
            trained = int(read_checkpoint(out / CHECKPOINT_FILE)["epoch"])
            state = "finished" if (out / SUMMARY_FILE).is_file() and trained >= target else "unfinished"
        plan.append(PlannedRun(model, seed, recorded, missing, state, trained, target))
    return plan


def _record_run(record: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A record in the shape of a report's run entry."""
    return {
        "model": record["model"], "seed": record["seed"], "epochs": record["epochs"], "record": str(path),
        "summary": record["summary"], "run_config": record["run_config"], "result": record["result"],
        "train_seconds": record.get("train_seconds"), "eval_seconds": record.get("eval_seconds"),
        "cpu": record.get("versions", {}).get("cpu", ""),
        "settings": f"{record.get('run_config_sha256', '')[:8]} / {record.get('eval_config_sha256', '')[:8]}",
    }


def summarize(
    config: CompareConfig, records: Mapping[RecordKey, Mapping[str, Any]], final: int, command: str | None = None,
) -> dict[str, Any]:
    """The study's content for the report, from its records alone (see :func:`run_comparison`),
    so the same records give the same report."""
    out_dir = Path(config.out_dir)
    extra = sorted({k.model for k in records} - set(config.models))
    models = [*config.models, *extra]
    entries = [
        {**_record_run(record, key.path(out_dir)), "record": key.path(out_dir).relative_to(out_dir).as_posix()}
        for key, record in sorted(records.items(), key=lambda kv: (models.index(kv[0].model), kv[0].seed, kv[0].epochs))
    ]
    runs = [e for e in entries if e["epochs"] == final]
    curves = {
        m: {str(e): aggregate([r["result"] for r in entries if r["model"] == m and r["epochs"] == e])
            for e in sorted({r["epochs"] for r in entries if r["model"] == m})}
        for m in models
    }
    examples = {(r["model"], r["epochs"]): r["summary"].get("examples_seen") for r in entries}
    return {
        "config": {**to_dict(config), "models": models}, "command": command or " ".join(sys.argv),
        "versions": versions(), "epochs": final, "records": entries, "runs": runs,
        "aggregate": {m: aggregate([r["result"] for r in runs if r["model"] == m]) for m in models},
        "curves": curves,
        "examples": {f"{m}/{e}": n for (m, e), n in examples.items()},
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
