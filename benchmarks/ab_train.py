"""Training throughput of two versions of crmvae, through the whole trainer (``crmvae train``), A/B.

Each side trains the same short PolyMNIST ``cpu-short`` run from its own source tree
(``PYTHONPATH=TREE/src``); the sides alternate (A B B A ...) so machine noise hits both. A run's
rate is the median of its logged examples/s after the first interval; the ratio is the median of
the per-pair ratios.

    git worktree add /tmp/old REV
    python benchmarks/ab_train.py --old /tmp/old --new . --rounds 3 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_rate(tree: Path, steps: int, log_every: int, overrides: list[str]) -> float:
    """Median examples/s of one training run from ``tree``'s sources, after the first log interval."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [
            sys.executable, "-m", "crmvae", "train", "--dataset", "polymnist", "--model", "crmvae", "--preset",
            "cpu-short", "--set", f"train.max_steps={steps}", "--set", f"train.log_every={log_every}",
            "--set", "train.progress=false", "--set", "train.grid_examples=0", "--out", str(out),
            *(a for o in overrides for a in ("--set", o)),
        ]
        env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rates = [r["examples_per_s"] for r in records if r.get("kind") == "step"]
        return statistics.median(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="source tree A (e.g. a git worktree)")
    parser.add_argument("--new", type=Path, default=Path("."), help="source tree B (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="a training override for both")
    args = parser.parse_args()
    pairs = []
    for i in range(args.rounds):
        order = [("old", args.old), ("new", args.new)][:: 1 if i % 2 == 0 else -1]
        rates = {name: run_rate(tree, args.steps, args.log_every, args.overrides) for name, tree in order}
        pairs.append(rates)
        print(f"round {i + 1}: old {rates['old']:.1f} ex/s, new {rates['new']:.1f} ex/s, "
              f"new/old {rates['new'] / rates['old']:.3f}", flush=True)
    ratios = [p["new"] / p["old"] for p in pairs]
    print(f"new/old median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
          f"old {statistics.median(p['old'] for p in pairs):.1f} ex/s, new {statistics.median(p['new'] for p in pairs):.1f} ex/s")


if __name__ == "__main__":
    main()
