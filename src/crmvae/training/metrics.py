"""Loss bookkeeping without per-step host syncs, and the ``metrics.jsonl`` log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import append_text, atomic_write
from ..objectives import ObjectiveOutput

#: Name of the total loss in a stacked value vector (entry 0).
LOSS = "loss"


def stack_values(output: ObjectiveOutput) -> Tensor:
    """``[loss, *terms]`` of one batch as one detached 1-D tensor (no host sync)."""
    return torch.stack([output.loss.detach(), *output.terms.values()])


class TermSums:
    """Example-weighted running sums of ``[loss, *terms]``, kept on the device.

    ``add`` is one tensor op; values reach the host only in :meth:`means`.
    """

    def __init__(self, sums: Tensor | None = None, examples: int = 0) -> None:
        self.sums = sums
        self.examples = examples

    def add(self, values: Tensor, n: int) -> None:
        """Add the batch means ``values`` of ``n`` examples."""
        if self.sums is None:
            dtype = torch.float32 if values.device.type == "mps" else torch.float64
            self.sums = torch.zeros(values.shape, dtype=dtype, device=values.device)
        self.sums.add_(values, alpha=n)
        self.examples += n

    def means(self, names: list[str], minus: TermSums | None = None) -> dict[str, float]:
        """``{name: per-example mean}`` of the sums (since ``minus`` was copied, if given)."""
        examples = self.examples - (minus.examples if minus else 0)
        if self.sums is None or examples <= 0:
            return {}
        sums = self.sums if minus is None or minus.sums is None else self.sums - minus.sums
        return dict(zip(names, (sums / examples).tolist()))

    def copy(self) -> TermSums:
        return TermSums(None if self.sums is None else self.sums.clone(), self.examples)

    def state(self) -> dict[str, Any]:
        """Plain values for a ``weights_only`` checkpoint."""
        return {"sums": None if self.sums is None else self.sums.cpu(), "examples": self.examples}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> TermSums:
        sums = state["sums"]
        return cls(None if sums is None else sums.to(device), state["examples"])


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``, flushed after each record."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def truncate_after(self, global_step: int) -> None:
        """Drop records with ``global_step`` beyond a resumed checkpoint's (and torn lines)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line torn by a kill mid-write
                continue
            if record.get("global_step", 0) <= global_step:
                kept.append(line + "\n")
        atomic_write(self.path, "".join(kept))

    def write(self, record: dict[str, Any]) -> None:
        append_text(self.path, json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
