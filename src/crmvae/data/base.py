"""In-memory paired multimodal data and a cheap batch iterator.

All examples are held as tensors (images as ``uint8``, token sequences as ``int64``, vectors as
``float32``); a batch is built by one indexing op per modality, never by per-example
``__getitem__`` calls. Missing modalities are described by a boolean mask ``[N, M]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from ..errors import DataError

ModalityKind = Literal["image", "tokens", "vector"]


@dataclass(frozen=True)
class ModalitySpec:
    """What one modality's stored tensor holds.

    ``image``: ``uint8`` ``[N, C, H, W]`` (model input ``float`` in [0, 1]);
    ``tokens``: ``int64`` ``[N, L]`` with ids in ``[0, vocab_size)``;
    ``vector``: ``float32`` ``[N, *shape]``.
    """

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]
    vocab_size: int | None = None


@dataclass
class Batch:
    """A batch: model inputs per modality, presence mask ``[B, M]``, optional labels ``[B]``
    and attributes ``[B, A]``."""

    data: dict[str, Tensor]
    mask: Tensor
    labels: Tensor | None = None
    attributes: Tensor | None = None

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> Batch:
        """This batch on ``device``; 4-d tensors (images) in ``memory_format``."""
        return Batch(
            {k: v.to(device, non_blocking=True, memory_format=memory_format if v.ndim == 4 else torch.preserve_format)
             for k, v in self.data.items()},
            self.mask.to(device, non_blocking=True),
            None if self.labels is None else self.labels.to(device, non_blocking=True),
            None if self.attributes is None else self.attributes.to(device, non_blocking=True),
        )

    def __len__(self) -> int:
        return self.mask.shape[0]


class MultimodalDataset:
    """Paired examples of several modalities, with labels and a missing-modality mask.

    Args:
        tensors: stored tensor per modality, all with the same first dimension N.
        specs: one :class:`ModalitySpec` per modality (same keys, in modality order).
        labels: optional ``int64`` ``[N]`` class labels.
        mask: optional ``bool`` ``[N, M]``; ``True`` where the modality is present (default all).
        name: a human-readable name used in error messages.
        attributes: optional ``[N, A]`` integer or bool attribute labels (for attribute
            classification), named by ``attribute_names`` (A names).
        text_decoders: per token modality that has one, a function from token ids ``[N, L]``
            to N strings (drawn under generation grids).
        attribute_parsers: per text modality whose text states the attributes, a function from
            N decoded strings to ``int64 [N, A]`` attribute values (-1 where a text does not
            state one): attribute coherence reads generated texts with it.
    """

    def __init__(
        self,
        tensors: dict[str, Tensor],
        specs: Sequence[ModalitySpec],
        labels: Tensor | None = None,
        mask: Tensor | None = None,
        name: str = "dataset",
        attributes: Tensor | None = None,
        attribute_names: Sequence[str] | None = None,
        text_decoders: Mapping[str, Callable[[Tensor], list[str]]] | None = None,
        attribute_parsers: Mapping[str, Callable[[list[str]], Tensor]] | None = None,
    ) -> None:
        self.name = name
        self.specs = {s.name: s for s in specs}
        self.modality_names = [s.name for s in specs]
        if set(tensors) != set(self.modality_names):
            raise DataError(
                f"{name}: tensors for {sorted(tensors)} but specs for {sorted(self.modality_names)}"
            )
        counts = {m: t.shape[0] for m, t in tensors.items()}
        n = next(iter(counts.values()))
        if any(c != n for c in counts.values()):
            raise DataError(f"{name}: modalities have different example counts {counts}")
        for spec in specs:
            check_stored(name, spec, tensors[spec.name])
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != n):
            raise DataError(f"{name}: labels have shape {tuple(labels.shape)}, expected ({n},)")
        if mask is None:
            mask = torch.ones(n, len(specs), dtype=torch.bool)
        if mask.shape != (n, len(specs)) or mask.dtype != torch.bool:
            raise DataError(
                f"{name}: mask has shape {tuple(mask.shape)} and dtype {mask.dtype}, "
                f"expected bool ({n}, {len(specs)})"
            )
        if n and not bool(mask.any(dim=1).all()):
            bad = int((~mask.any(dim=1)).nonzero()[0])
            raise DataError(f"{name}: example {bad} has no modality present")
        _check_attributes(name, n, attributes, attribute_names)
        not_tokens = sorted(m for m in text_decoders or {} if m not in self.specs or self.specs[m].kind != "tokens")
        if not_tokens:
            raise DataError(f"{name}: text decoders for {not_tokens}, which are not token modalities")
        unreadable = sorted(set(attribute_parsers or {}) - set(text_decoders or {}))
        if unreadable or (attribute_parsers and attributes is None):
            raise DataError(f"{name}: attribute parsers need attributes and a text decoder per modality "
                            f"(parsers for {sorted(attribute_parsers or {})}, no decoder for {unreadable})")
        self.tensors = {m: tensors[m] for m in self.modality_names}
        self.labels = labels
        self.mask = mask
        self.attributes = attributes
        self.attribute_names = None if attribute_names is None else list(attribute_names)
        self.text_decoders = dict(text_decoders or {})
        self.attribute_parsers = dict(attribute_parsers or {})

    def __len__(self) -> int:
        return self.mask.shape[0]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{m}={tuple(t.shape[1:])}" for m, t in self.tensors.items())
        return f"MultimodalDataset({self.name!r}, n={len(self)}, {shapes})"

    def batch(self, index: Tensor) -> Batch:
        """Gather the examples at ``index`` and convert them to model inputs."""
        data = {m: to_model_input(self.specs[m], t[index]) for m, t in self.tensors.items()}
        labels = None if self.labels is None else self.labels[index]
        attributes = None if self.attributes is None else self.attributes[index]
        return Batch(data, self.mask[index], labels, attributes)

    def subset(self, index: Tensor | slice, name: str | None = None) -> MultimodalDataset:
        """A new dataset holding the examples at ``index`` (views where possible)."""
        return MultimodalDataset(
            {m: t[index] for m, t in self.tensors.items()},
            list(self.specs.values()),
            None if self.labels is None else self.labels[index],
            self.mask[index],
            name or self.name,
            None if self.attributes is None else self.attributes[index],
            self.attribute_names,
            self.text_decoders,
            self.attribute_parsers,
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        start: int = 0,
    ) -> Iterator[Batch]:
        """Iterate over batches; ``start`` skips the first ``start`` batches (for resuming)."""
        for index in batch_indices(len(self), batch_size, shuffle, generator, drop_last, start):
            yield self.batch(index)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return count_batches(len(self), batch_size, drop_last)


class BatchSource(Protocol):
    """What training and :func:`~crmvae.training.evaluate` read: a :class:`MultimodalDataset`
    (tensors in memory) or a :class:`~crmvae.data.streamed.StreamedDataset` (items read on access)."""

    name: str
    specs: dict[str, ModalitySpec]
    modality_names: list[str]
    text_decoders: dict[str, Callable[[Tensor], list[str]]]

    def __len__(self) -> int: ...

    def batch(self, index: Tensor) -> Batch: ...

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
        drop_last: bool = False, start: int = 0,
    ) -> Iterator[Batch]: ...

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int: ...

    def subset(self, index: Tensor | slice, name: str | None = None) -> BatchSource: ...


def batch_indices(
    n: int, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
    drop_last: bool = False, start: int = 0,
) -> Iterator[Tensor]:
    """The example indices of each batch of ``n`` examples, in order (a permutation drawn from
    ``generator`` when ``shuffle``); the first ``start`` batches are skipped (for resuming). Every
    batch source draws its order here, so a seed gives the same batches whatever holds the data."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(start * batch_size, stop, batch_size):
        yield order[i : i + batch_size]


def count_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batch_indices` yields for ``n`` examples (from the start)."""
    return n // batch_size if drop_last else -(-n // batch_size)


def to_model_input(spec: ModalitySpec, stored: Tensor) -> Tensor:
    """Stored tensor -> model input: ``uint8`` images to float in [0, 1]; others unchanged."""
    if spec.kind == "image" and stored.dtype == torch.uint8:
        return stored.float().div_(255.0)
    return stored


def _check_attributes(
    name: str, n: int, attributes: Tensor | None, names: Sequence[str] | None
) -> None:
    if attributes is None:
        if names is not None:
            raise DataError(f"{name}: attribute_names given without attributes")
        return
    if attributes.ndim != 2 or attributes.shape[0] != n:
        raise DataError(f"{name}: attributes have shape {tuple(attributes.shape)}, expected ({n}, A)")
    if attributes.is_floating_point() or attributes.is_complex():
        raise DataError(f"{name}: attributes must be integer or bool, got {attributes.dtype}")
    if names is None or len(names) != attributes.shape[1]:
        raise DataError(
            f"{name}: {attributes.shape[1]} attribute columns need as many attribute_names, "
            f"got {None if names is None else len(names)}"
        )


def check_stored(name: str, spec: ModalitySpec, t: Tensor) -> None:
    """Raise :class:`DataError` unless ``t`` (``[N, *shape]``) holds what ``spec`` describes:
    shape, dtype, token ids within the vocabulary, float images in [0, 1]."""
    where = f"{name}, modality {spec.name!r}"
    if tuple(t.shape[1:]) != tuple(spec.shape):
        raise DataError(f"{where}: examples have shape {tuple(t.shape[1:])}, expected {spec.shape}")
    if spec.kind == "image" and t.dtype not in (torch.uint8, torch.float32):
        raise DataError(f"{where}: images must be uint8 or float32, got {t.dtype}")
    if spec.kind == "tokens":
        if t.dtype != torch.int64:
            raise DataError(f"{where}: tokens must be int64, got {t.dtype}")
        if spec.vocab_size is None:
            raise DataError(f"{where}: a token modality needs vocab_size")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= spec.vocab_size):
            raise DataError(
                f"{where}: token ids span [{int(t.min())}, {int(t.max())}], "
                f"expected [0, {spec.vocab_size})"
            )
    if spec.kind == "vector" and not t.is_floating_point():
        raise DataError(f"{where}: vectors must be floating point, got {t.dtype}")
    if spec.kind == "image" and t.is_floating_point() and t.numel():
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0 or not torch.isfinite(t).all():
            raise DataError(f"{where}: float images must lie in [0, 1], got [{lo}, {hi}]")
