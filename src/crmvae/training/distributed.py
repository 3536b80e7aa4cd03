"""Data-parallel training over several processes (PyTorch DDP, launched by ``torchrun``).

``torchrun --nproc_per_node N -m crmvae train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`process_group` joins them (NCCL with each process
on ``cuda:LOCAL_RANK``, gloo on CPU). ``train.batch_size`` stays the global batch: every rank
draws the same seeded permutation and batches as a single process, and rank r of W keeps the
contiguous rows ``[n r // W, n (r + 1) // W)`` of a batch of n. Its loss is scaled by
``W n_r / n``, so DDP's gradient average

    (1/W) sum_r (W n_r / n) grad mean_r = grad (1/n) sum_b loss_b

is the single-process gradient, also for a last batch that does not split evenly.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..data import Batch
from ..errors import ConfigError, CrmvaeError
from ..model import MultimodalVAE

T = TypeVar("T")


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows ``[n rank // W, n (rank + 1) // W)`` of a batch of ``n``: sizes differ by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


def loss_weight(count: int, total: int, world_size: int) -> float:
    """``W n_r / n``: the factor that turns DDP's mean of shard-mean gradients into the global mean."""
    return world_size * count / total


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s noise stream (a child of ``seed``, distinct from the epoch seeds)."""
    return int(np.random.SeedSequence(seed, spawn_key=(rank, step)).generate_state(1)[0])


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its rank on its node.

    The tensors it hands to collectives stay referenced here until :meth:`settle` sees that the
    backend has let go of them: a gloo worker thread that drops the last reference to a tensor
    created in Python must take the GIL, and doing so while the interpreter exits aborts the
    process (``terminate called without an active exception``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    _pending: list[Tensor] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Batch) -> tuple[Batch, int]:
        """This rank's rows of a global batch and their count.

        An empty share (a last batch smaller than W) is stood in for by the batch's first row, to be
        weighted 0: every rank must run forward and backward for DDP's gradient exchange.
        """
        start, stop = shard_bounds(len(batch), self.world_size, self.rank)
        rows = slice(start, stop) if stop > start else slice(0, 1)
        labels = None if batch.labels is None else batch.labels[rows]
        return Batch({k: v[rows] for k, v in batch.data.items()}, batch.mask[rows], labels), stop - start

    def mean(self, values: Tensor, count: int, total: int) -> Tensor:
        """``sum_r count_r values_r / total`` over the ranks: global batch means from shard means."""
        if not self.enabled:
            return values
        summed = self._track(values * count if count else torch.zeros_like(values))
        dist.all_reduce(summed)
        return summed / total

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        device = _wire_device()
        payload = _to_bytes(obj)
        sizes = [self._track(torch.zeros(1, dtype=torch.int64, device=device)) for _ in range(self.world_size)]
        dist.all_gather(sizes, self._track(torch.tensor([len(payload)], device=device)))
        longest = max(int(size) for size in sizes)
        padded = self._track(torch.zeros(longest, dtype=torch.uint8, device=device))
        padded[: len(payload)] = payload
        received = [self._track(torch.empty(longest, dtype=torch.uint8, device=device)) for _ in range(self.world_size)]
        dist.all_gather(received, padded)
        return [_from_bytes(data[: int(size)]) for data, size in zip(received, sizes)]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 alone; its result, or the :class:`CrmvaeError` it raised, reaches every rank."""
        if not self.enabled:
            return fn()
        device = _wire_device()
        payload = torch.empty(0, dtype=torch.uint8)
        if self.is_main:
            try:
                payload = _to_bytes((fn(), None))
            except CrmvaeError as exc:
                payload = _to_bytes((None, exc))
        size = self._track(torch.tensor([len(payload)], device=device))
        dist.broadcast(size, src=0)
        data = self._track(payload.to(device) if self.is_main else torch.empty(int(size), dtype=torch.uint8, device=device))
        dist.broadcast(data, src=0)
        result, error = _from_bytes(data)
        if error is not None:
            raise error
        return result

    def local_main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank, first on each node's local rank 0 (which builds a data cache once)."""
        if not self.enabled:
            return fn()
        if self.local_rank != 0:
            self.barrier()
        try:
            return fn()
        finally:
            if self.local_rank == 0:
                self.barrier()

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) until the backend holds none of the tensors handed to it, then
        drop them. Call it after the last collective, before the process may exit."""
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            self._drop_released()
            if self._pending:
                time.sleep(0.001)
        self._pending.clear()

    def _track(self, tensor: Tensor) -> Tensor:
        """``tensor``, kept referenced until the backend has let go of it (see the class docstring)."""
        self._drop_released()
        self._pending.append(tensor)
        return tensor

    def _drop_released(self) -> None:
        self._pending[:] = [t for t in self._pending if t._use_count() > 1]


def _wire_device() -> torch.device:
    """Where the process group's backend takes its tensors: this process's GPU for NCCL, else the CPU."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _to_bytes(obj: Any) -> Tensor:
    """``obj`` pickled, as a CPU ``uint8`` tensor."""
    return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)


def _from_bytes(data: Tensor) -> Any:
    """The object :func:`_to_bytes` pickled into ``data``."""
    return pickle.loads(data.cpu().numpy().tobytes())


def detect_context() -> DistContext:
    """The context from a joined process group, else from torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistContext(rank, dist.get_world_size(), _env_int("LOCAL_RANK", rank))
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(
            f"distributed environment: RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world_size}; "
            f"expected 0 <= RANK < WORLD_SIZE (launch with torchrun)"
        )
    if world_size > 1 and not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world_size}, but this torch build has no torch.distributed")
    return DistContext(rank, world_size, local_rank)


@contextmanager
def process_group(ctx: DistContext, device: torch.device) -> Iterator[torch.device]:
    """Join the process group for the block (unless one is joined already) and yield this process's
    device: ``cuda:LOCAL_RANK`` for a CUDA run, the CPU otherwise."""
    if not ctx.enabled:
        yield device
        return
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={ctx.local_rank}, but this node has {torch.cuda.device_count()} CUDA device(s); "
                f"start at most that many processes per node (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"distributed training runs on cpu or cuda, not train.device={device.type!r}")
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        if own:
            dist.destroy_process_group()


class LossModule(nn.Module):
    """``model.loss`` as a module whose forward returns tensors only, ``(loss, terms)``, as DDP expects."""

    def __init__(self, model: MultimodalVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, data: dict[str, Tensor], mask: Tensor, beta_scale: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.model.loss(data, mask, beta_scale)
        return output.loss, output.terms


def wrap(model: MultimodalVAE, ctx: DistContext, device: torch.device) -> nn.Module:
    """The module a training step calls: :class:`LossModule`, inside DDP when there are several ranks
    (DDP broadcasts rank 0's weights at construction and averages gradients in ``backward``)."""
    module = LossModule(model)
    if not ctx.enabled:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None
