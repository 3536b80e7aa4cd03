"""A private, seeded random stream that leaves the global RNG as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def private_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with the global RNG (CPU, and ``device`` if CUDA) seeded with ``seed``,
    restoring the previous state afterwards, so training's random stream is untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
