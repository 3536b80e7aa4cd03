"""Examples read one at a time from a ``torch.utils.data.Dataset`` and batched by a ``DataLoader``,
for data that need not fit in memory.

The item protocol: item ``i`` is a dict holding, per modality, one example in its stored form
(:class:`~crmvae.data.base.ModalitySpec`: an image ``uint8 [C, H, W]`` or ``float32`` in [0, 1],
token ids ``int64 [L]`` in ``[0, vocab_size)``, a vector ``float32 [*shape]``) and under
``"mask"`` a ``bool [M]`` tensor, True where the modality is present (columns in modality order,
at least one True). An absent entry still needs a tensor of its shape (zeros); the model ignores
it. Every item is checked when it is read, and an error names the dataset, the item and the
modality.

Batches follow :func:`~crmvae.data.base.batch_indices`, the order of the in-memory path: for the
same seed both give the same batches, and resuming at step ``k`` of an epoch asks the loader for
batches ``k, k+1, ...`` of that epoch's permutation only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import DataConfig
from ..errors import ConfigError, CrmvaeError, DataError
from .base import Batch, BatchSource, ModalitySpec, MultimodalDataset, batch_indices, check_stored, count_batches, to_model_input

MASK_KEY = "mask"


def check_item(name: str, specs: Mapping[str, ModalitySpec], index: int, item: object) -> None:
    """Raise :class:`DataError` unless ``item`` follows the item protocol (see the module)."""
    where = f"{name}, item {index}"
    if not isinstance(item, Mapping):
        raise DataError(f"{where}: a {type(item).__name__}, expected a dict of modality tensors and {MASK_KEY!r}")
    expected = [*specs, MASK_KEY]
    if sorted(item) != sorted(expected):
        raise DataError(f"{where}: keys {sorted(item)}, expected {expected}")
    for key in expected:
        if not isinstance(item[key], Tensor):
            raise DataError(f"{where}, modality {key!r}: a {type(item[key]).__name__}, expected a tensor")
    for spec in specs.values():
        check_stored(where, spec, item[spec.name][None])
    mask = item[MASK_KEY]
    if mask.dtype != torch.bool or tuple(mask.shape) != (len(specs),):
        raise DataError(
            f"{where}: {MASK_KEY!r} is {mask.dtype} {list(mask.shape)}, expected bool [{len(specs)}] "
            f"(True = present; columns {list(specs)})"
        )
    if not bool(mask.any()):
        raise DataError(f"{where}: no modality present; every item needs at least one of {list(specs)}")


class _Checked(Dataset):
    """``items`` with every item checked on access; an error is returned rather than raised, so
    that it crosses from a loader worker intact (the loader would wrap it in a traceback)."""

    def __init__(self, items: Dataset, specs: Mapping[str, ModalitySpec], name: str) -> None:
        self.items, self.specs, self.name = items, specs, name

    def __getitem__(self, index: int) -> dict[str, Tensor] | CrmvaeError:
        try:
            item = self.items[index]
            check_item(self.name, self.specs, index, item)
        except CrmvaeError as exc:
            return exc
        return item


def _collate(specs: Mapping[str, ModalitySpec], items: list[dict[str, Tensor] | CrmvaeError]) -> tuple | CrmvaeError:
    """``(model inputs per modality, mask [B, M])`` of checked items, or the first item's error."""
    for item in items:
        if isinstance(item, CrmvaeError):
            return item
    data = {m: to_model_input(spec, torch.stack([item[m] for item in items])) for m, spec in specs.items()}
    return data, torch.stack([item[MASK_KEY] for item in items])


def _batch(out: tuple | CrmvaeError) -> Batch:
    if isinstance(out, CrmvaeError):
        raise out from None
    return Batch(*out)


@dataclass(frozen=True)
class StreamedDataset:
    """A :class:`~crmvae.data.base.BatchSource` over ``items``, a map-style
    ``torch.utils.data.Dataset`` following the item protocol (see the module).

    Args:
        items: the dataset; only ``len(items)`` and ``items[i]`` are used.
        modality_specs: one :class:`ModalitySpec` per modality, in modality order.
        name: a human-readable name used in error messages.
        num_workers: loader worker processes (0: items are read in this process).
        pin_memory: whether batches are put in page-locked memory (faster copies to a GPU).
    """

    items: Dataset
    modality_specs: Sequence[ModalitySpec]
    name: str = "dataset"
    num_workers: int = 0
    pin_memory: bool = False

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        return {s.name: s for s in self.modality_specs}

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modality_specs]

    @property
    def text_decoders(self) -> dict:
        return {}

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"StreamedDataset({self.name!r}, n={len(self)}, {', '.join(self.modality_names)})"

    def batch(self, index: Tensor) -> Batch:
        """The examples at ``index``, read and checked now."""
        checked = _Checked(self.items, self.specs, self.name)
        return _batch(_collate(self.specs, [checked[i] for i in index.tolist()]))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        start: int = 0,
    ) -> Iterator[Batch]:
        """The batches of :func:`batch_indices`, read by a ``DataLoader``; ``start`` skips the
        first ``start`` batches without reading them (for resuming)."""
        order = [index.tolist() for index in batch_indices(len(self), batch_size, shuffle, generator, drop_last, start)]
        # the loader seeds its workers from its own generator; without one it would draw from the
        # global RNG, which the model's noise uses
        seed = int(torch.randint(2**62, (), generator=generator)) if generator is not None else 0
        loader = DataLoader(
            _Checked(self.items, self.specs, self.name), batch_sampler=order, collate_fn=partial(_collate, self.specs),
            num_workers=self.num_workers, pin_memory=self.pin_memory, generator=torch.Generator().manual_seed(seed),
        )
        for out in loader:
            yield _batch(out)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return count_batches(len(self), batch_size, drop_last)

    def subset(self, index: Tensor | slice, name: str | None = None) -> StreamedDataset:
        """The examples at ``index`` (read through ``items`` on access)."""
        rows = range(len(self))[index] if isinstance(index, slice) else index.tolist()
        return replace(self, items=Subset(self.items, rows), name=name or self.name)


def with_loading(source: BatchSource, cfg: DataConfig, device: torch.device) -> BatchSource:
    """``source`` read with ``cfg.num_workers`` and ``cfg.pin_memory`` (``None``: pinned when
    ``device`` is a GPU); an in-memory dataset is returned unchanged."""
    if isinstance(source, MultimodalDataset):
        return source
    if not isinstance(source, StreamedDataset):
        raise ConfigError(
            f"a {type(source).__name__} is no dataset to train on: pass a MultimodalDataset, or wrap a "
            f"torch Dataset as StreamedDataset(dataset, modality_specs)"
        )
    pin = device.type == "cuda" if cfg.pin_memory is None else cfg.pin_memory
    return replace(source, num_workers=cfg.num_workers, pin_memory=pin)
