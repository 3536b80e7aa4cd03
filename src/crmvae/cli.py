"""The ``crmvae`` command line: a thin layer over the Python API.

Subcommands: ``data {build,info,classifiers,list}``, ``train``, ``generate``, ``info``, ``models``, ``export``, ``evaluate``, ``compare``. Every
:class:`~crmvae.errors.CrmvaeError` is printed as ``crmvae: error: <message>`` (exit status 2,
no traceback); an interrupted training prints where its last checkpoint is (exit status 130).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .checkpoint import (
    EXPORT_CONFIG_FILE,
    export_safetensors,
    is_safetensors_export,
    load_model,
    load_safetensors,
    validate_checkpoint,
)
from .config import (
    DataConfig,
    RunConfig,
    apply_overrides,
    from_dict,
    load_config,
    load_mapping,
    to_dict,
)
from .data import MultimodalDataset, available_datasets, dataset_info, get_dataset, load_dataset
from .errors import ConfigError, CrmvaeError
from .fileio import atomic_write, make_dir, write_error
from .model import MultimodalVAE
from .objectives import OBJECTIVES
from .presets import build_run_config
from .samplers import SamplerConfig
from .training import CHECKPOINT_FILE, CONFIG_FILE, check_dataset, resolve_device, run_config_to_resume, train
from .training.distributed import detect_context
from .training.progress import show_messages, write_line
from .visualize import save_generation_grids

PROG = "crmvae"
DEFAULTS = {"dataset": "polymnist", "model": "crmvae", "preset": "paper"}


# --------------------------------------------------------------------------------------------
# data


def _data_config(dataset: str, overrides: Sequence[str], data_dir: str | None = None, seed: int | None = None) -> DataConfig:
    """A :class:`DataConfig` for ``dataset`` with ``key=value`` overrides (``data.`` prefix optional)."""
    values = apply_overrides(to_dict(DataConfig(dataset=dataset)), [s.removeprefix("data.") for s in overrides])
    if data_dir is not None:
        values["data_dir"] = data_dir
    if seed is not None:
        values["seed"] = seed
    return from_dict(DataConfig, values, where="data")


def cmd_data_build(args: argparse.Namespace) -> int:
    cfg = _data_config(args.dataset, args.set, args.data_dir, args.seed)
    splits = dataset_info(cfg).get("splits", {})
    for split in ("train", "test"):
        dataset = load_dataset(cfg, split)
        entry = splits.get(split, {})
        where = entry.get("cache") or entry.get("path") or "?"
        print(f"{split}: {len(dataset)} examples, modalities {dataset.modality_names} -> {where}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    cfg = _data_config(args.dataset, args.set, args.data_dir, args.seed)
    print(json.dumps(dataset_info(cfg), indent=2, default=str))
    return 0


def cmd_data_classifiers(args: argparse.Namespace) -> int:
    from .evaluation.cache import dataset_identity
    from .evaluation.classifiers import ClassifierConfig, export_classifiers, load_or_train_classifiers

    cfg = _data_config(args.dataset, args.set, args.data_dir, args.seed)
    config = from_dict(ClassifierConfig, apply_overrides(to_dict(ClassifierConfig()), args.classifier_set),
                       where="classifier config").for_dataset(cfg.dataset)
    out = Path(args.out or f"classifiers-{cfg.dataset}.pt")
    make_dir(out.parent)  # an unwritable place fails before the training, not after it
    classifiers = load_or_train_classifiers(cfg, config, progress=True)
    export_classifiers(classifiers, out, cfg.dataset,
                       about={"training": dataclasses.asdict(config), "data": dataset_identity(cfg)})
    for m, c in classifiers.items():
        print(f"{m}: {c.architecture}, test accuracy {c.test_accuracy:.4f}")
    print(f"classifiers: {out} (described in {out.with_suffix('.json')}); use them with "
          f"`{PROG} evaluate RUN --classifiers {out}`")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    for name in available_datasets():
        print(f"{name}: {get_dataset(name).summary}")
    return 0


# --------------------------------------------------------------------------------------------
# train


def _user_data_flag(args: argparse.Namespace) -> None:
    """``--data PATH``: dataset ``user`` with ``data.root=PATH``, made absolute so that the run's
    config.yaml finds the files again from anywhere."""
    if args.data is None:
        return
    if args.config or args.dataset not in (None, "user"):
        raise ConfigError("--data PATH trains on your own files (dataset 'user'); it cannot be combined with --config or --dataset")
    args.dataset = "user"
    args.set = [f"data.root={json.dumps(str(Path(args.data).expanduser().resolve()))}", *args.set]


def _run_config(args: argparse.Namespace) -> tuple[RunConfig, str]:
    """The run configuration from a preset or a file, the overrides and the shortcut flags (applied
    as overrides after ``--set``, so the configuration is built and checked once, at the end), and a
    label for the default output directory."""
    _user_data_flag(args)
    named = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if args.config and named:
        raise ConfigError(f"--config cannot be combined with {', '.join('--' + k for k in named)}; use --set")
    flags = (
        ("train.seed", args.seed), ("train.epochs", args.epochs), ("train.device", args.device),
        ("data.data_dir", args.data_dir),
    )
    overrides = [*args.set, *(f"{key}={json.dumps(value)}" for key, value in flags if value is not None)]
    if args.config:
        values = apply_overrides(to_dict(load_config(RunConfig, args.config)), overrides)
        return from_dict(RunConfig, values, where="run config"), Path(args.config).stem
    stored = run_config_to_resume(args.out) if args.resume and args.out and not named else None
    if stored is not None:
        where = str(Path(args.out) / CONFIG_FILE)
        values = apply_overrides(to_dict(from_dict(RunConfig, stored, where=where)), overrides)
        return from_dict(RunConfig, values, where="run config"), Path(CONFIG_FILE).stem
    choice = DEFAULTS | named
    return build_run_config(choice["dataset"], choice["model"], choice["preset"], overrides), choice["preset"]


def cmd_train(args: argparse.Namespace) -> int:
    config, label = _run_config(args)
    if args.print_config:  # the configuration a run would use, loadable with --config
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    out = Path(args.out or f"runs/{config.data.dataset}-{config.model.objective}-{label}-seed{config.train.seed}")
    verb = "resuming" if args.resume else "training"
    main_rank = detect_context().is_main  # under torchrun, rank 0 alone reports
    if main_rank:
        print(f"{verb} {config.model.objective} on {config.data.dataset} into {out}", flush=True)
    try:
        result = train(config, out, resume=args.resume)
    except KeyboardInterrupt:
        checkpoint = out / CHECKPOINT_FILE
        where = (f"the last checkpoint is {checkpoint}; resume with: {PROG} train --out {out} --resume"
                 if checkpoint.is_file() else f"no checkpoint was written yet in {out}")
        write_line(f"{PROG}: interrupted; {where}")
        return 130
    metrics = result.metrics
    if not main_rank:
        return 0
    if metrics:
        print(f"epochs {result.epochs_completed}, steps {result.global_step}: "
              f"train loss {metrics['train_loss']:.6g}, test loss {metrics['test_loss']:.6g}")
    for what, path in (
        ("config", result.config_path), ("metrics", result.metrics_path), ("checkpoint", result.checkpoint_path),
        ("model", result.model_path), ("summary", result.summary_path),
    ):
        print(f"{what}: {path}")
    for path in result.grids:
        print(f"grid: {path}")
    return 0


# --------------------------------------------------------------------------------------------
# generate and info


def _generation_data(args: argparse.Namespace, checkpoint: Path) -> DataConfig:
    """The dataset to condition on: ``--dataset``, else the run's (see :func:`run_data_config`);
    then ``--set``."""
    from .evaluation.evaluate import run_data_config

    if args.dataset:
        return _data_config(args.dataset, args.set)
    values = apply_overrides(to_dict(run_data_config(checkpoint)), [s.removeprefix("data.") for s in args.set])
    return from_dict(DataConfig, values, where="data")


def _conditioned_run(args: argparse.Namespace) -> tuple[Path, MultimodalVAE, MultimodalDataset, list[list[str]] | None]:
    """What ``generate`` and ``encode`` share: the checkpoint, its model (eval mode), the ``--from``
    subsets (checked against the model; None when none is given) and the split to condition on."""
    from .evaluation.evaluate import resolve_checkpoint
    from .evaluation.latents import subset_matrix

    checkpoint = resolve_checkpoint(args.checkpoint)
    model = load_model(checkpoint, map_location=resolve_device(args.device)).eval()
    subsets = [[name.strip() for name in item.split(",") if name.strip()] for item in args.subsets] or None
    if subsets:
        subset_matrix(subsets, model.modality_names)
    dataset = load_dataset(_generation_data(args, checkpoint), args.dataset_split)
    check_dataset(model.config, dataset)
    return checkpoint, model, dataset, subsets


def cmd_generate(args: argparse.Namespace) -> int:
    from .evaluation.fitted_samplers import load_or_fit_sampler

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    sampler_config = from_dict(SamplerConfig, apply_overrides(to_dict(SamplerConfig(name=args.sampler)), args.sampler_set),
                               where="sampler")
    checkpoint, model, dataset, subsets = _conditioned_run(args)
    sampler = load_or_fit_sampler(model, _generation_data(args, checkpoint), sampler_config)
    batch = dataset.batch(torch.arange(min(args.n, len(dataset))))
    out = Path(args.out or checkpoint.parent / f"generated-{args.dataset_split}")
    for path in save_generation_grids(model, batch, out, subsets, seed=args.seed, decode_text=dataset.text_decoders,
                                      sampler=sampler):
        print(path)
    return 0


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """A JSON-friendly description of a model or training checkpoint, or of a safetensors export."""
    from .evaluation.evaluate import resolve_checkpoint

    path = resolve_checkpoint(path)
    if is_safetensors_export(path):
        model = load_safetensors(path)
        kind, state, positions = "safetensors export", model.state_dict(), {}
        run = load_mapping(path.parent / EXPORT_CONFIG_FILE)
    else:
        payload, model = validate_checkpoint(path)
        kind = "training checkpoint" if "optimizer" in payload else "model"
        state, positions, run = payload["model"], payload, payload.get("run_config", {})
    config = model.config
    info: dict[str, Any] = {
        "file": str(path),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "kind": kind,
        "objective": config.objective,
        "objective_params": config.objective_params,
        "latent_dim": config.latent_dim,
        "modalities": [
            {"name": m.name, "shape": m.shape, "network": m.network, "likelihood": m.likelihood} for m in config.modalities
        ],
        "parameters": sum(t.numel() for t in state.values()),
    }
    if isinstance(run.get("data"), dict) and "dataset" in run["data"]:
        info["dataset"] = run["data"]["dataset"]
    for key in ("epoch", "step_in_epoch", "epochs_completed", "global_step"):
        if key in positions:
            info[key] = positions[key]
    return info


def cmd_encode(args: argparse.Namespace) -> int:
    from .evaluation.latents import encode_dataset

    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    checkpoint, model, dataset, subsets = _conditioned_run(args)
    names = model.modality_names
    if args.n is not None:
        dataset = dataset.subset(slice(0, args.n))
    arrays = encode_dataset(model, dataset, subsets or [*([name] for name in names), list(names)], args.batch_size)
    out = Path(args.out or checkpoint.parent / f"latents-{args.dataset_split}.npz")
    atomic_write(out, lambda handle: np.savez(handle, **arrays))
    print(f"{out}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items() if k.startswith("mean:")))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "modalities":
            print("modalities:")
            for m in value:
                print(f"  {m['name']}: shape {m['shape']}, network {m['network']}, likelihood {m['likelihood']}")
        else:
            print(f"{key}: {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    for name, entry in sorted(OBJECTIVES.items()):
        print(f"{name}: {entry.summary}")
        for f in dataclasses.fields(entry.config_cls):
            print(f"    {f.name}: {f.type} = {f.default!r}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import resolve_checkpoint

    checkpoint = resolve_checkpoint(args.checkpoint)
    if is_safetensors_export(checkpoint):
        raise ConfigError(f"{checkpoint} is already an export; give a model.pt or checkpoint.pt")
    weights = export_safetensors(checkpoint, args.out or checkpoint.parent / "export")
    print(f"weights: {weights}\nconfig: {weights.parent / EXPORT_CONFIG_FILE}")
    return 0


# --------------------------------------------------------------------------------------------
# evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import EvalConfig, evaluate_checkpoint, format_results
    from .evaluation.evaluate import resolve_checkpoint, run_data_config

    shortcuts = [f"{key}={value}" for key, value in (
        ("n_test", args.n_test), ("fid_samples", args.fid_samples), ("device", args.device),
        ("likelihood_samples", args.likelihood_samples), ("metrics", f"[{args.metrics}]" if args.metrics else None),
        ("sampler.name", args.sampler), ("classifiers", json.dumps(args.classifiers) if args.classifiers else None),
    ) if value is not None]
    config = from_dict(EvalConfig, apply_overrides(to_dict(EvalConfig()), [*args.set, *shortcuts]), where="evaluation config")
    checkpoint = resolve_checkpoint(args.checkpoint)
    data = run_data_config(checkpoint)
    if args.data_dir is not None:
        data = dataclasses.replace(data, data_dir=args.data_dir)
    out = Path(args.out or checkpoint.parent / "evaluation.json")
    make_dir(out.parent)  # an unwritable place fails before the evaluation, not after it
    results = evaluate_checkpoint(checkpoint, config, data)
    print(format_results(results))
    atomic_write(out, json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


# --------------------------------------------------------------------------------------------
# compare


def _names(text: str, what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--{what}: expected a comma-separated list, got {text!r}")
    return names


def _epochs(text: str) -> list[int]:
    try:
        return [int(e) for e in _names(text, "snapshots")]
    except ValueError:
        raise ConfigError(f"--snapshots: expected comma-separated epochs, got {text!r}") from None


def _study_models(text: str) -> list[str]:
    """``--models``: the names given, or ``all``: CRMVAE, then every other registered objective."""
    names = _names(text, "models")
    return ["crmvae", *sorted(m for m in OBJECTIVES if m != "crmvae")] if names == ["all"] else names


def format_plan(plan: list[Any], out_dir: str) -> str:
    """``compare --plan``: a line per ``(model, seed)`` of :func:`plan_comparison`, and a total."""
    def epochs(values: list[int]) -> str:
        return ", ".join(map(str, values)) or "none"

    lines = []
    for run in plan:
        state = {"new": "no run yet", "finished": f"run finished at epoch {run.trained_epochs}",
                 "unfinished": f"run at epoch {run.trained_epochs} of {run.target_epochs}, resumes"}[run.run_state]
        todo = f"to do: {epochs(run.missing)} ({state})" if run.missing else "complete"
        lines.append(f"  {run.model} seed {run.seed}: recorded {epochs(run.recorded)}; {todo}")
    recorded, missing = sum(len(r.recorded) for r in plan), sum(len(r.missing) for r in plan)
    return "\n".join([f"{out_dir}: {len(plan)} run(s); {recorded} snapshot(s) recorded, {missing} to train and "
                      f"evaluate (nothing was run)", *lines])


def cmd_compare(args: argparse.Namespace) -> int:
    # imported here: the report pulls in matplotlib, which no other command needs
    from .evaluation.compare import CompareConfig, EvalConfig, plan_comparison, run_comparison
    from .evaluation.report import write_report

    try:
        seeds = [int(seed) for seed in _names(args.seeds, "seeds")]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    shortcuts = [f"{key}={value}" for key, value in (("n_test", args.n_test), ("fid_samples", args.fid_samples))
                 if value is not None]
    evaluation = from_dict(EvalConfig, apply_overrides(to_dict(EvalConfig()), [*args.eval_set, *shortcuts]),
                           where="evaluation config")
    config = CompareConfig(
        dataset=args.dataset, models=_study_models(args.models), seeds=seeds, preset=args.preset,
        budget=list(args.budget), eval=evaluation, out_dir=args.out or f"docs/results/{args.dataset}-compare",
        runs_dir=args.runs_dir, snapshots=_epochs(args.snapshots) if args.snapshots else [],
        snapshot_metrics=_names(args.snapshot_metrics, "snapshot-metrics") if args.snapshot_metrics else None,
    )
    if args.plan:
        print(format_plan(plan_comparison(config), config.out_dir))
        return 0
    command = " ".join([PROG, *map(shlex.quote, args.argv)])
    paths = write_report(run_comparison(config, command=command, report_only=args.report_only), config.out_dir)
    print(f"report: {paths['html']} ({paths['markdown'].name}, {paths['results'].name} beside it)")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from .evaluation.summary import read_study, render_summary, update_blocks

    if args.update and args.folders:
        raise ConfigError("give report folders (printed side by side) or --update FILE (whose blocks name them), not both")
    if not args.update:
        if not args.folders:
            raise ConfigError("give one or more compare report folders, or --update FILE")
        print(render_summary([read_study(folder) for folder in args.folders], args.style), end="")
        return 0
    stale = False
    for path in args.update:
        for block in update_blocks(path, check=args.check):
            stale = True
            print(f"{path}: {'out of date' if args.check else 'rewrote'} '{block}'")
    return 1 if stale and args.check else 0


# --------------------------------------------------------------------------------------------
# the parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Multimodal VAEs: data, training, generation.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="build, describe or list datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("build", cmd_data_build, "generate/cache the train and test splits"),
        ("info", cmd_data_info, "describe a dataset (builds nothing)"),
        ("classifiers", cmd_data_classifiers, "train (or take from the cache) the coherence classifiers and export them"),
    ):
        sub = data_commands.add_parser(name, help=text)
        sub.add_argument("dataset", metavar="DATASET")
        sub.add_argument("--data-dir", help="where generated data is cached")
        sub.add_argument("--seed", type=int, help="generation seed (data.seed)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a DataConfig override, e.g. params.source=digits")
        sub.set_defaults(func=func)
        if name == "classifiers":
            sub.add_argument("--out", help="the file to write (default classifiers-<dataset>.pt), with a .json description beside it")
            sub.add_argument("--classifier-set", action="append", default=[], metavar="KEY=VALUE",
                             help="a training setting, e.g. epochs=5 (see `evaluate --set classifier.KEY=VALUE`)")
    data_commands.add_parser("list", help="list the datasets").set_defaults(func=cmd_data_list)

    tr = commands.add_parser("train", help="train a model (resumable)")
    tr.add_argument("--dataset", help=f"dataset (default {DEFAULTS['dataset']})")
    tr.add_argument("--data", metavar="PATH", help="train on your own files (dataset 'user'; see the 'Your own data' guide)")
    tr.add_argument("--model", help=f"objective (default {DEFAULTS['model']}; see `{PROG} models`)")
    tr.add_argument("--preset", help=f"preset: paper or cpu-short (default {DEFAULTS['preset']})")
    tr.add_argument("--config", help="a run configuration file (e.g. a run's config.yaml) instead of a preset")
    tr.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="an override, e.g. train.lr=0.001")
    tr.add_argument("--out", help="run directory (default runs/<dataset>-<model>-<preset>-seed<seed>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tr.add_argument("--print-config", action="store_true",
                    help="print the resolved run configuration as YAML (for --config) and exit without training")
    tr.add_argument("--seed", type=int, help="train.seed")
    tr.add_argument("--epochs", type=int, help="train.epochs")
    tr.add_argument("--device", help="train.device, e.g. cpu or cuda")
    tr.add_argument("--data-dir", help="data.data_dir")
    tr.set_defaults(func=cmd_train)

    gen = commands.add_parser("generate", help="write generation grids from a checkpoint")
    gen.add_argument("checkpoint", metavar="CHECKPOINT")
    gen.add_argument("--dataset-split", default="test", help="split to condition on (default test)")
    gen.add_argument("--from", dest="subsets", action="append", default=[], metavar="M0[,M1...]",
                     help="a conditioning subset (repeatable; default: each single modality)")
    gen.add_argument("--n", type=int, default=8, help="examples (columns) per grid")
    gen.add_argument("--out", help="output folder (default: <checkpoint folder>/generated-<split>)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dataset", help="dataset name (default: the run's config.yaml)")
    gen.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE", help="a data override")
    gen.add_argument("--sampler", default="prior", metavar="NAME",
                     help="latents of the unconditional grid: prior (default); gmm, a Gaussian mixture, or maf, a "
                          "masked autoregressive flow, fitted to the aggregate posterior on the training split")
    gen.add_argument("--sampler-set", action="append", default=[], metavar="KEY=VALUE",
                     help="a sampler setting, e.g. n_components=20, covariance=diag, fit_size=null, flow_epochs=100")
    gen.set_defaults(func=cmd_generate)

    enc = commands.add_parser("encode", help="write the posterior means of q(z | subset) for a split (.npz)")
    enc.add_argument("checkpoint", help="model.pt, checkpoint.pt, a run folder or an export folder")
    enc.add_argument("--from", dest="subsets", action="append", default=[], metavar="M0[,M1...]",
                     help="a subset to infer from (repeatable; default: each modality, then all of them)")
    enc.add_argument("--dataset-split", default="test", help="split to encode (default test)")
    enc.add_argument("--n", type=int, help="the first N examples (default: all)")
    enc.add_argument("--batch-size", type=int, default=256)
    enc.add_argument("--out", help="output .npz (default: <checkpoint folder>/latents-<split>.npz)")
    enc.add_argument("--device", default="cpu")
    enc.add_argument("--dataset", help="dataset name (default: the run's config.yaml)")
    enc.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE", help="a data override")
    enc.set_defaults(func=cmd_encode)

    info = commands.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint", metavar="CHECKPOINT")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    commands.add_parser("models", help="list the objectives and their settings").set_defaults(func=cmd_models)

    export = commands.add_parser("export", help="write a model as model.safetensors + config.yaml (loads without pickle)")
    export.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR", help="a model or checkpoint file, or a run directory (its model.pt, else checkpoint.pt)")
    export.add_argument("--out", help="output folder (default: <checkpoint folder>/export)")
    export.set_defaults(func=cmd_export)

    ev = commands.add_parser("evaluate", help="coherence, FID, latent probes... of a trained model; writes JSON")
    ev.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR")
    ev.add_argument("--metrics", metavar="M1,M2",
                    help="coherence,text,attributes,fid,probes,similarity,likelihood (default: all that apply but likelihood)")
    ev.add_argument("--fid-samples", type=int, help="images per FID set (default 1000; few samples bias FID upward)")
    ev.add_argument("--n-test", type=int, help="test examples to evaluate on (default 1000)")
    ev.add_argument("--likelihood-samples", type=int, metavar="K",
                    help="importance samples per example for --metrics likelihood (default 100)")
    ev.add_argument("--out", help="JSON file (default: <run dir>/evaluation.json)")
    ev.add_argument("--device", help="e.g. cpu or cuda")
    ev.add_argument("--data-dir", help="data.data_dir of the run's dataset")
    ev.add_argument("--classifiers", metavar="FILE",
                    help="score coherence with these classifiers (from `crmvae data classifiers`) instead of the dataset's own")
    ev.add_argument("--sampler", metavar="NAME",
                    help="latents of joint coherence and unconditional FID: prior (default), gmm or maf, fitted to the "
                         "aggregate posterior on the training split (settings: --set sampler.n_components=20)")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an evaluation setting, e.g. fid_modalities=[m0,m1] or classifier.epochs=5")
    ev.set_defaults(func=cmd_evaluate)

    cmp = commands.add_parser("compare", help="train/reuse and evaluate models x seeds, write a report")
    cmp.add_argument("--dataset", default=DEFAULTS["dataset"], help=f"dataset (default {DEFAULTS['dataset']})")
    cmp.add_argument("--models", required=True, metavar="M1,M2,...", help="objectives to compare, or variants with their own objective parameters "
                     "(crmvae@recon_coef=half), or all; the first is the main one")
    cmp.add_argument("--seeds", default="0", metavar="S1,S2,...", help="training seeds (train.seed; every seed trains on the same data; default 0)")
    cmp.add_argument("--preset", default="cpu-short", help="preset of every run (default cpu-short)")
    cmp.add_argument("--budget", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="a training override applied to every run, e.g. train.epochs=1 (repeatable)")
    cmp.add_argument("--out", help="report folder (default docs/results/<dataset>-compare)")
    cmp.add_argument("--runs-dir", default="runs", help="runs go to <runs-dir>/<dataset>/<model>/seed<seed> (default runs)")
    cmp.add_argument("--fid-samples", type=int, help="FID sample count (evaluation fid_samples)")
    cmp.add_argument("--n-test", type=int, help="test examples to evaluate on (evaluation n_test)")
    cmp.add_argument("--eval-set", action="append", default=[], metavar="KEY=VALUE", help="an evaluation setting")
    cmp.add_argument("--snapshots", metavar="E1,E2,...",
                     help="epochs at which every run is evaluated and recorded, e.g. 1,3,10 (default: the budget's train.epochs)")
    cmp.add_argument("--plan", action="store_true",
                     help="check the study's settings and records, and list what is recorded and what remains; "
                          "train, evaluate and write nothing")
    cmp.add_argument("--report-only", action="store_true",
                     help="write the report from the records in --out; train and evaluate nothing")
    cmp.add_argument("--snapshot-metrics", metavar="M1,M2,...",
                     help="metrics at every snapshot but the last (default: the same as the last), e.g. coherence,similarity")
    cmp.set_defaults(func=cmd_compare)

    summ = commands.add_parser("summarize", help="several compare reports side by side: settings, claims, numbers")
    summ.add_argument("folders", nargs="*", metavar="REPORT_DIR", help="compare report folders, printed as Markdown")
    summ.add_argument("--style", default="full",
                      help="full (verdicts with their weakest comparison, and every model's numbers; default) or claims")
    summ.add_argument("--update", action="append", default=[], metavar="FILE",
                      help="rewrite the '<!-- summarize STYLE: DIR ... -->' ... '<!-- end summarize -->' blocks of "
                           "this Markdown file from the folders they name (repeatable)")
    summ.add_argument("--check", action="store_true", help="with --update: write nothing; exit 1 if a block is out of date")
    summ.set_defaults(func=cmd_summarize)
    return parser


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation: ``MemoryError``, CUDA's ``OutOfMemoryError``, or the
    ``RuntimeError`` of torch's CPU allocator."""
    return isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    show_messages()
    try:
        return args.func(args)
    except CrmvaeError as exc:
        write_line(f"{PROG}: error: {' '.join(str(exc).split())}")  # one line, whatever the message holds
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        size = re.search(r"[Tt]ried to allocate ([\d.]+ ?\w+)", str(exc))
        write_line(f"{PROG}: error: out of memory{f' (tried to allocate {size[1]})' if size else ''}: use a smaller "
                   f"model (model.latent_dim), train.batch_size or dataset, or a device with more memory")
        return 2
    except OSError as exc:  # a place the code does not write through fileio: unreadable, a folder...
        write_line(f"{PROG}: error: {write_error(exc.filename or 'a file', exc, 'use')}")
        return 2
    except KeyboardInterrupt:
        write_line(f"{PROG}: interrupted")
        return 130
