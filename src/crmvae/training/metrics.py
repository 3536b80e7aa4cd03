"""Loss bookkeeping without per-step host syncs, and the ``metrics.jsonl`` log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
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
        """Drop records with ``global_step`` beyond a resumed checkpoint's (and a line torn by a
        kill mid-write); any other damage is a :class:`CheckpointError`."""
        if not self.path.exists():
            return
        kept = [json.dumps(r) + "\n" for r in read_metrics(self.path) if r.get("global_step", 0) <= global_step]
        atomic_write(self.path, "".join(kept))

    def write(self, record: dict[str, Any]) -> None:
        append_text(self.path, json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, without a last line torn by a kill mid-write (one
    that does not end the file with a newline: every record is written as one line and its newline).

    Raises :class:`CheckpointError` naming the file and line of any other damage: bytes that are
    not UTF-8, a line that is not a JSON object, or a ``global_step`` that is not an integer.
    """
    path = Path(path)
    advice = "move it aside to go on without the run's earlier log"
    try:
        text = path.read_bytes().decode()
        lines = text.splitlines()
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); {advice}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines) and not text.endswith("\n"):  # torn by a kill mid-write
                break
            raise CheckpointError(f"{path} line {number}: not JSON ({line[:40]!r}); {advice}") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{path} line {number}: {line[:40]!r} is not a JSON object; {advice}")
        step = record.get("global_step", 0)
        if not isinstance(step, int) or isinstance(step, bool):
            raise CheckpointError(f"{path} line {number}: global_step {step!r} is not an integer; {advice}")
        records.append(record)
    return records
