"""Typed run configuration: dataclasses, YAML/JSON round-trip and ``a.b=value`` overrides.

A run is described by one :class:`RunConfig` (data, model, training). Every run directory gets a
``config.yaml`` from which the run can be rebuilt exactly. Objective-specific settings live in
``ModelConfig.objective_params`` and are validated against the objective's own dataclass (see
:mod:`crmvae.objectives`). Values are checked when a configuration object is built
(``__post_init__``), so the Python API meets the errors the CLI reports; :func:`from_dict` adds
the checks of keys and types.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import ConfigError
from .fileio import atomic_write

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Most CPU threads a run may ask for: more than any CPU has (torch crashes at 65,536).
MAX_THREADS = 1024


def check_minimums(where: str, cfg: Any, minimums: dict[str, float]) -> None:
    """A :class:`ConfigError` for the first field of ``cfg`` below its minimum (``None``, an
    unset optional value, passes; so does no number, which :func:`from_dict` reports)."""
    for key, low in minimums.items():
        value = getattr(cfg, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value >= low:  # NaN fails too
            optional = type(None) in typing.get_args(typing.get_type_hints(type(cfg))[key])
            raise ConfigError(f"{where}{key} must be >= {low}{' or null' if optional else ''}, got {value}")


def check_choice(where: str, cfg: Any, key: str) -> None:
    """A :class:`ConfigError` when the ``Literal`` field ``key`` of ``cfg`` holds another value."""
    choices = typing.get_args(typing.get_type_hints(type(cfg))[key])
    if getattr(cfg, key) not in choices:
        raise ConfigError(f"{where}{key}: {getattr(cfg, key)!r} is not one of {list(choices)}")


@dataclass
class ModalityConfig:
    """One modality as the model sees it.

    ``shape`` is the shape of one example (``[3, 28, 28]`` for a PolyMNIST image, ``[L]`` for a
    token sequence). ``network`` names an encoder/decoder pair in :mod:`crmvae.nets`;
    ``likelihood`` names a decoder distribution in :mod:`crmvae.likelihoods`.
    """

    name: str
    shape: list[int]
    network: str = "polymnist_conv"
    likelihood: str = "laplace"
    likelihood_scale: float = 0.75
    weight: float = 1.0
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        where = f"modality {self.name!r}: "
        if not self.shape or not all(isinstance(n, int) and n >= 1 for n in self.shape):
            raise ConfigError(f"{where}shape must be a non-empty list of positive sizes, got {self.shape}")
        if not self.likelihood_scale > 0:
            raise ConfigError(f"{where}likelihood_scale must be > 0, got {self.likelihood_scale}")
        check_minimums(where, self, {"weight": 0, "vocab_size": 1})


@dataclass
class ModelConfig:
    """The multimodal VAE: modalities, latent size, objective and its parameters."""

    modalities: list[ModalityConfig] = field(default_factory=list)
    latent_dim: int = 512
    objective: str = "crmvae"
    objective_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ConfigError(f"model.modalities: names must be unique, got {names}")
        check_minimums("model.", self, {"latent_dim": 1})
        from .objectives import build_objective_config  # imported here: the objectives import this module

        build_objective_config(self.objective, self.objective_params, len(self.modalities))


@dataclass
class DataConfig:
    """Which dataset to use and where it lives.

    ``root`` points to real files in an official release layout; when it is ``None`` the embedded
    default is generated offline into ``data_dir`` (default ``$CRMVAE_DATA_DIR`` or
    ``~/.cache/crmvae``). ``train_size``/``test_size`` take the first N examples (None: all).
    ``num_workers`` and ``pin_memory`` (None: on a GPU) set the ``DataLoader`` of data read on
    access (a lazy folder, a ``StreamedDataset`` given to ``train``); data in memory ignores them.
    """

    dataset: str = "polymnist"
    root: str | None = None
    data_dir: str | None = None
    seed: int = 0
    train_size: int | None = None
    test_size: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0
    pin_memory: bool | None = None

    def __post_init__(self) -> None:
        check_minimums("data.", self, {"seed": 0, "train_size": 1, "test_size": 1, "num_workers": 0})


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. Defaults follow the paper (Adam, lr 5e-4, batch 256)."""

    epochs: int = 500
    batch_size: int = 256
    #: Leave out each epoch's last batch when it is smaller than ``batch_size`` (its examples,
    #: shuffled anew each epoch, are seen in other epochs).
    drop_last: bool = False
    #: Batch of the test and validation losses (no gradients: it can be larger); null: ``batch_size``.
    eval_batch_size: int | None = None
    lr: float = 5e-4
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    #: Conv weights and image batches in the channels-last (NHWC) memory layout: the same
    #: arithmetic, and oneDNN's convolutions with few channels run faster in it (see the
    #: performance page of the documentation); False keeps PyTorch's default NCHW.
    channels_last: bool = True
    max_steps: int | None = None
    log_every: int = 20
    checkpoint_every: int = 200
    #: Every this many epochs, the model as it stands is kept as ``epochs/epoch<k>.pt`` in the run
    #: directory (loadable as ``model.pt`` is); null: only the final ``model.pt``.
    save_every_epochs: int | None = None
    grid_examples: int = 8
    #: Every this many epochs, generation grids of the model as it stands are also drawn, into
    #: ``grids/epoch<k>`` and to the loggers (images over training); null: only the final ones.
    grids_every_epochs: int | None = None
    progress: bool = True
    #: Optimizer by name (``adam``, ``adamw``, ``sgd``, ``rmsprop``; see ``crmvae.training.OPTIMIZERS``).
    optimizer: str = "adam"
    #: Weight decay: an L2 term added to the gradient (``adam``, ``sgd``, ``rmsprop``) or applied
    #: to the weights directly (``adamw``, decoupled).
    weight_decay: float = 0.0
    #: ``adam``'s and ``adamw``'s coefficients of the running averages of the gradient and its square.
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    #: ``sgd``'s and ``rmsprop``'s momentum.
    momentum: float = 0.0
    #: Further keyword arguments of the optimizer's ``torch.optim`` class, e.g. ``{eps: 1.0e-6,
    #: amsgrad: true}`` for ``adam`` or ``{nesterov: true}`` for ``sgd`` (pythae's and MultiVae's
    #: ``optimizer_params``); the settings above keep their own fields.
    optimizer_params: dict[str, Any] = field(default_factory=dict)
    #: Learning-rate schedule after the warm-up: ``constant``; ``cosine`` from ``lr`` to 0 over
    #: ``lr_horizon_steps``; ``step``, ``lr`` times ``lr_decay_factor`` every ``lr_decay_every`` steps;
    #: ``plateau``, ``lr`` times ``lr_decay_factor`` each time more than ``lr_plateau_patience``
    #: epochs in a row pass without a lower validation loss (needs ``validation_size``);
    #: ``multistep``, ``lr`` times ``lr_decay_factor`` at each of the global steps ``lr_milestones``.
    lr_schedule: Literal["constant", "cosine", "step", "plateau", "multistep"] = "constant"
    #: Steps over which the learning rate rises linearly to ``lr`` (0: none).
    lr_warmup_steps: int = 0
    #: Length of the cosine schedule in steps, warm-up included; null: the run's planned steps
    #: (``epochs`` times the steps of an epoch), so the trajectory then depends on ``epochs``.
    lr_horizon_steps: int | None = None
    lr_decay_every: int = 1000
    #: ``multistep``: the global steps (0-based, ascending) from which the learning rate is
    #: multiplied once more by ``lr_decay_factor`` (``MultiStepLR``'s milestones, in steps).
    lr_milestones: list[int] = field(default_factory=list)
    lr_decay_factor: float = 0.1
    lr_plateau_patience: int = 10
    #: ``plateau``: a validation loss counts as lower when below the best so far times
    #: ``1 - lr_plateau_threshold`` (PyTorch's default relative threshold; 0: any lower loss).
    lr_plateau_threshold: float = 1e-4
    #: Steps over which a multiplier on the objective's ``beta`` (every divergence term) rises
    #: linearly from 0 to 1 (KL warm-up; 0: none).
    kl_warmup_steps: int = 0
    #: With it, the KL warm-up restarts every this many steps (cyclical annealing, Fu et al. 2019:
    #: the multiplier rises from 0 to 1 over the first ``kl_warmup_steps`` of every cycle); null: once.
    kl_cycle_steps: int | None = None
    #: Largest global L2 norm of the gradient (``clip_grad_norm_``); null: no clipping.
    grad_clip_norm: float | None = None
    #: Training examples held out, by a split seeded with ``seed``, to pick the best epoch: with
    #: it, the validation loss is logged each epoch and ``model.pt`` holds the best epoch's weights.
    validation_size: int = 0
    #: Keep as ``model.pt`` the weights of the complete epoch with the lowest mean training loss
    #: (MultiVae's and pythae's ``keep_best_on_train``), for runs without a validation split.
    keep_best_on_train: bool = False
    #: The first epoch whose weights may be kept as the best ones (by ``validation_size`` or
    #: ``keep_best_on_train``): earlier epochs, such as those of a KL warm-up whose losses are not
    #: comparable with later ones, are logged but neither kept nor counted by early stopping
    #: (MultiVae's ``start_keep_best_epoch``).
    keep_best_from_epoch: int = 1
    #: Epochs without a lower validation loss after which training stops; null: never.
    early_stopping_patience: int | None = None
    #: Extra experiment loggers by name (``tensorboard``, ``wandb``, ``mlflow``); ``metrics.jsonl`` is always written.
    loggers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # epochs >= 1: a run of 0 epochs would write an untrained model.pt
        check_minimums("train.", self, {
            "epochs": 1, "batch_size": 1, "seed": 0, "log_every": 1, "checkpoint_every": 1, "grid_examples": 0,
            "threads": 1, "max_steps": 1, "lr_warmup_steps": 0, "lr_horizon_steps": 1, "lr_decay_every": 1,
            "kl_warmup_steps": 0, "validation_size": 0, "early_stopping_patience": 1, "lr_plateau_patience": 0,
            "save_every_epochs": 1, "grids_every_epochs": 1, "kl_cycle_steps": 1,
            "eval_batch_size": 1, "keep_best_from_epoch": 1,
        })
        if self.threads is not None and self.threads > MAX_THREADS:
            raise ConfigError(f"train.threads must be <= {MAX_THREADS} or null, got {self.threads}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"train.lr must be a positive number, got {self.lr}")
        if not 0 <= self.lr_plateau_threshold < 1:
            raise ConfigError(f"train.lr_plateau_threshold must be in [0, 1), got {self.lr_plateau_threshold}")
        if not 0 < self.lr_decay_factor <= 1:
            raise ConfigError(f"train.lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
        if self.grad_clip_norm is not None and not 0 < self.grad_clip_norm < math.inf:
            raise ConfigError(f"train.grad_clip_norm must be a positive number or null, got {self.grad_clip_norm}")
        if self.early_stopping_patience is not None and not self.validation_size:
            raise ConfigError("train.early_stopping_patience needs a validation split: set train.validation_size")
        if self.kl_cycle_steps is not None and not 0 < self.kl_warmup_steps <= self.kl_cycle_steps:
            raise ConfigError(f"train.kl_cycle_steps ({self.kl_cycle_steps}) repeats the KL warm-up: it needs "
                              f"0 < train.kl_warmup_steps <= kl_cycle_steps, got kl_warmup_steps={self.kl_warmup_steps}")
        if self.keep_best_on_train and self.validation_size:
            raise ConfigError("train.keep_best_on_train picks model.pt by the training loss, and train.validation_size "
                              "by the validation loss: set one of them")
        if self.keep_best_from_epoch > 1 and not (self.validation_size or self.keep_best_on_train):
            raise ConfigError("train.keep_best_from_epoch chooses among the epochs kept by train.validation_size "
                              "or train.keep_best_on_train: set one of them")
        if self.keep_best_from_epoch > self.epochs:
            raise ConfigError(f"train.keep_best_from_epoch ({self.keep_best_from_epoch}) is after the last epoch "
                              f"(train.epochs={self.epochs}): no epoch could be kept")
        if self.lr_schedule == "multistep" and not self.lr_milestones:
            raise ConfigError("train.lr_schedule=multistep needs train.lr_milestones, e.g. [10000, 20000]")
        if self.lr_milestones and (any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in self.lr_milestones)
                                   or sorted(set(self.lr_milestones)) != list(self.lr_milestones)):
            raise ConfigError(f"train.lr_milestones must be distinct ascending steps >= 1, got {self.lr_milestones}")
        own = sorted(set(self.optimizer_params) & {"lr", "betas", "weight_decay", "momentum", "params", "fused", "foreach"})
        if own:
            raise ConfigError(f"train.optimizer_params cannot set {own}: lr, betas, weight_decay and momentum have "
                              f"their own train.* settings, and crmvae passes params, fused and foreach")
        if self.lr_schedule == "plateau" and not self.validation_size:
            raise ConfigError("train.lr_schedule=plateau needs a validation split: set train.validation_size")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"train.weight_decay must be a number >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"train.momentum must be in [0, 1), got {self.momentum}")
        check_choice("train.", self, "precision")
        check_choice("train.", self, "lr_schedule")
        if self.lr_horizon_steps is not None and self.lr_horizon_steps <= self.lr_warmup_steps:
            raise ConfigError(f"train.lr_horizon_steps ({self.lr_horizon_steps}) must exceed train.lr_warmup_steps "
                              f"({self.lr_warmup_steps}): the cosine decays from the end of the warm-up to the horizon")


@dataclass
class RunConfig:
    """Everything needed to reproduce a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict (YAML/JSON-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


def flatten(value: Any, prefix: str = "", lists: bool = False) -> dict[str, Any]:
    """``{"a.b.c": leaf}`` for nested mappings; lists are leaves, or with ``lists`` their mappings
    are flattened too (``"a.b[0].c"``)."""
    if isinstance(value, Mapping):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif lists and isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    return {key: leaf for k, v in items for key, leaf in flatten(v, k, lists).items()}


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from nested ``data``, checking keys and value types.

    Raises :class:`ConfigError` naming the dotted path of the first bad entry.
    """
    return _convert(cls, data, where or cls.__name__)


def missing_keys(cls: type, data: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields of dataclass ``cls`` (nested dataclasses and lists of them
    included) that the mapping ``data`` leaves out, so that they take their defaults."""
    if not isinstance(data, Mapping):
        return []
    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if f.name not in data:
            missing.append(name)
            continue
        tp, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(tp):
            missing += missing_keys(tp, value, f"{name}.")
            continue
        item_type = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(item_type) and isinstance(value, list):
            for i, item in enumerate(value):
                missing += missing_keys(item_type, item, f"{name}[{i}].")
    return missing


def name_keys(keys: list[str], most: int = 8) -> str:
    """``"a, b, c and 4 more"``: the first ``most`` of ``keys`` and a count of the rest."""
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def warn_missing_keys(cls: type, data: Any, where: str, prefix: str = "", source: str = "their defaults") -> None:
    """Log a warning naming the keys of ``data`` (read from ``where``, a file crmvae wrote whole)
    that are missing and take their values from ``source``: a sign of a file cut short or edited."""
    missing = missing_keys(cls, data, prefix)
    if missing:
        log.warning("%s lacks %s (crmvae writes every key: was it cut short or edited?); they take %s",
                    where, name_keys(missing), source)


def merge_values(base: Any, values: Any) -> Any:
    """``values`` with what it leaves out taken from ``base``: mappings merged key by key and lists
    of mappings item by item (a list cut short keeps ``base``'s further items), recursively."""
    if isinstance(base, Mapping) and isinstance(values, Mapping):
        return {**base, **{k: merge_values(base.get(k), v) for k, v in values.items()}}
    if isinstance(base, list) and isinstance(values, list) and all(isinstance(v, Mapping) for v in base + values):
        return [merge_values(b, v) for b, v in zip(base, values)] + base[len(values):] + values[len(base):]
    return values


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}"
            )
        kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{where}: {exc}") from None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported configuration type {tp!r}")


# --------------------------------------------------------------------------------------------
# files and overrides


def save_config(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    path = Path(path)
    data = to_dict(cfg)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write(path, text)


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: ``1e-6`` (no dot) is a number, not a string."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML (JSON is a subset), safely, with ``1e-6`` read as a float."""
    return yaml.load(text, Loader=_YamlLoader)


def load_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML or JSON file (JSON is a subset of YAML); a missing, unreadable, empty
    or non-mapping file is a :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        data = parse_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON: {exc}") from None
    if data is None:
        raise ConfigError(f"{path} is empty: expected a mapping of settings")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__} {data!r}")
    return data


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML or JSON file into dataclass ``cls``."""
    return from_dict(cls, load_mapping(path), where=str(path))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested config dict (values parsed as YAML).

    ``model.objective_params.beta=0.5`` creates the key inside a free-form mapping; any other
    unknown key is reported when the dict is converted with :func:`from_dict`.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if not isinstance(nxt, dict):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section "
                    f"(sections here: {sorted(k for k, v in node.items() if isinstance(v, dict))})"
                )
            node = nxt
        node[parts[-1]] = value
    return data
