"""Datasets: a registry of providers, loaded by name from a :class:`~crmvae.config.DataConfig`.

A provider is any object with a ``name``, a one-line ``summary``, the allowed
``DataConfig.params`` keys with their defaults (``params``), ``load(cfg, split)`` returning the
full split as a :class:`MultimodalDataset`, and ``info(cfg)`` describing it without building
anything. A provider whose ``params`` hold ``lazy`` also has ``stream(cfg, split)``, returning a
:class:`StreamedDataset` that reads examples on access (:func:`load_source`, for training). To add
a dataset, write its module and register one provider below.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol, TypeVar

from ..config import DataConfig
from ..errors import ConfigError
from ..registry import Registry
from .base import Batch, BatchSource, ModalitySpec, MultimodalDataset
from .celeba import CelebA
from .cub import CUB
from .mnist_svhn_text import MNISTSVHNText
from .polymnist import PolyMNIST
from .scenes import Scenes
from .sources import check_split
from .streamed import StreamedDataset
from .user import UserData

__all__ = [
    "DATASETS",
    "Batch",
    "BatchSource",
    "DatasetProvider",
    "ModalitySpec",
    "MultimodalDataset",
    "StreamedDataset",
    "available_datasets",
    "dataset_info",
    "get_dataset",
    "load_dataset",
    "load_source",
    "register_dataset",
]


class DatasetProvider(Protocol):
    """What the registry needs from a dataset module."""

    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str: ...

    @property
    def params(self) -> dict[str, Any]: ...

    def load(self, cfg: DataConfig, split: str) -> MultimodalDataset: ...

    def info(self, cfg: DataConfig) -> dict[str, Any]: ...


D = TypeVar("D", MultimodalDataset, StreamedDataset)

DATASETS: Registry[DatasetProvider] = Registry("dataset")


def register_dataset(provider: DatasetProvider) -> DatasetProvider:
    """Add ``provider`` under ``provider.name`` (a name can be registered once)."""
    return DATASETS.add(provider.name, provider)


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetProvider:
    """The provider registered as ``name``; :class:`ConfigError` listing the names otherwise."""
    return DATASETS.lookup(name)


def _resolve(cfg: DataConfig) -> tuple[DatasetProvider, DataConfig]:
    """The provider and ``cfg`` with its params checked and completed with the defaults."""
    provider = get_dataset(cfg.dataset)
    unknown = sorted(set(cfg.params) - set(provider.params))
    if unknown:
        raise ConfigError(
            f"data.params: unknown key(s) {unknown} for dataset {cfg.dataset!r}; "
            f"allowed keys are {sorted(provider.params)}"
        )
    return provider, replace(cfg, params={**provider.params, **cfg.params})


def _requested_size(cfg: DataConfig, split: str) -> int | None:
    return cfg.train_size if split == "train" else cfg.test_size


def load_dataset(cfg: DataConfig, split: str) -> MultimodalDataset:
    """The ``split`` (``"train"`` or ``"test"``) of ``cfg.dataset``, cut to the first
    ``cfg.train_size``/``cfg.test_size`` examples when those are set."""
    check_split(split)
    provider, resolved = _resolve(cfg)
    return _cut(provider.load(resolved, split), cfg, split)


def load_source(cfg: DataConfig, split: str) -> BatchSource:
    """What training reads: :func:`load_dataset`'s data in memory, or with ``data.params.lazy``
    a :class:`StreamedDataset` reading examples on access (cut like :func:`load_dataset`)."""
    check_split(split)
    provider, resolved = _resolve(cfg)
    if not resolved.params.get("lazy"):
        return load_dataset(cfg, split)
    return _cut(provider.stream(resolved, split), cfg, split)  # type: ignore[attr-defined]


def _cut(dataset: D, cfg: DataConfig, split: str) -> D:
    """The first ``cfg.train_size``/``cfg.test_size`` examples of ``dataset`` when those are set."""
    size = _requested_size(cfg, split)
    if size is None:
        return dataset
    if size > len(dataset):
        raise ConfigError(
            f"data.{split}_size={size}, but {dataset.name} has only {len(dataset)} examples"
        )
    return dataset.subset(slice(0, size))  # type: ignore[return-value]


def dataset_info(cfg: DataConfig) -> dict[str, Any]:
    """A JSON-friendly description of ``cfg``'s dataset: name, summary, params, source,
    modality specs, and per split the size, cache file and manifest. Generates nothing."""
    provider, cfg = _resolve(cfg)
    info = {
        "name": provider.name,
        "summary": provider.summary,
        "params": cfg.params,
        **provider.info(cfg),
    }
    for split, entry in info.get("splits", {}).items():
        entry["requested"] = _requested_size(cfg, split)
    return info


register_dataset(PolyMNIST(translate=False))
register_dataset(PolyMNIST(translate=True))
register_dataset(MNISTSVHNText())
register_dataset(Scenes())
register_dataset(CUB())
register_dataset(CelebA())
register_dataset(UserData())
