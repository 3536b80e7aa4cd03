"""One GPU command: the CUDA tests, then a PolyMNIST CRMVAE study stage at the paper's settings in
bf16, evaluated and recorded, its report folder packed into one archive.

    python benchmarks/gpu_study.py --out-archive $OUT/study.tar.gz            # on a GPU machine
    tar -xzf study.tar.gz                                                    # here: the records join docs/results/

The study folder (default ``docs/results/polymnist-gpu``) takes records like any
``crmvae compare`` folder: a later call with more seeds or snapshots reuses them. ``--snapshots``
sets the budget; the defaults fit in about 8 minutes on one H200-class GPU including the
dataset build and the coherence classifiers. Every option can be shrunk for a CPU smoke test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import time

from crmvae.evaluation.compare import CompareConfig, run_comparison
from crmvae.evaluation.evaluate import EvalConfig
from crmvae.evaluation.report import write_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16", help="train.precision (default bf16)")
    parser.add_argument("--dataset", default="polymnist")
    parser.add_argument("--models", default="crmvae")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--snapshots", default="1,3,10,30", help="epochs at which the run is recorded")
    parser.add_argument("--budget", action="append", default=[], help="an extra training override")
    parser.add_argument("--metrics", default="coherence,fid,probes,similarity")
    parser.add_argument("--snapshot-metrics", default="coherence,probes,similarity")
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--fid-samples", type=int, default=1000)
    parser.add_argument("--out", default="docs/results/polymnist-gpu", help="the study folder")
    parser.add_argument("--runs-dir", default="runs/gpu-study")
    parser.add_argument("--out-archive", help="pack the study folder into this .tar.gz")
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA-marked tests")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if not args.no_tests:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"], check=False)
        print(f"cuda tests: exit {tests.returncode} ({time.perf_counter() - start:.0f} s)", flush=True)
    config = CompareConfig(
        dataset=args.dataset, models=args.models.split(","), seeds=[int(s) for s in args.seeds.split(",")],
        preset="paper", budget=[f"train.device={args.device}", f"train.precision={args.precision}", *args.budget],
        eval=EvalConfig(metrics=args.metrics.split(","), n_test=args.n_test, fid_samples=args.fid_samples,
                        device=args.device, progress=False),
        snapshots=[int(e) for e in args.snapshots.split(",")], snapshot_metrics=args.snapshot_metrics.split(","),
        out_dir=args.out, runs_dir=args.runs_dir,
    )
    paths = write_report(run_comparison(config, command=" ".join(["python", *sys.argv])))
    print(f"report: {paths['markdown']} ({time.perf_counter() - start:.0f} s in all)", flush=True)
    if args.out_archive:
        with tarfile.open(args.out_archive, "w:gz") as archive:
            archive.add(args.out, arcname=args.out)
        print(f"archive: {args.out_archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
