"""FID feature-extraction speed: ms per Inception image for each pipeline variant, against the floor.

The floor is the Inception-v3 forward FLOPs per image (counted with FlopCounterMode) divided by
this CPU's rate on a large matmul in the same precision. Variants are measured interleaved in one
process (``--rounds`` rounds, median per variant), so their ratios are comparable.

    python benchmarks/fid_speed.py --images 100 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from crmvae.evaluation.fid import FeatureExtractor, load_inception
from crmvae.training import has_fast_bf16


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n^3`` matmul in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def inception_gflop(net: torch.nn.Module) -> float:
    """Forward GFLOP of one 299x299 image."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(2, 3, 299, 299))
    return counter.get_total_flops() / 2 / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()

    torch.manual_seed(0)
    images = torch.rand(args.images, 3, 28, 28)
    base = load_inception()
    variants = {
        precision: FeatureExtractor(load_inception(), batch_size=args.batch_size, precision=precision)
        for precision in (["fp32", "bf16"] if has_fast_bf16(torch.device("cpu")) else ["fp32"])
    }
    for extractor in variants.values():
        extractor(images[: args.batch_size])  # warm-up (and TorchScript profiling runs)
        extractor(images[: args.batch_size])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, extractor in variants.items():
            times[name].append(_seconds(lambda: extractor(images)) / args.images * 1e3)
    gflop = inception_gflop(base)
    rates = {"fp32": matmul_gflops(torch.float32)}
    if has_fast_bf16(torch.device("cpu")):
        rates["bf16"] = matmul_gflops(torch.bfloat16)
    print(f"threads {torch.get_num_threads()}, Inception forward {gflop:.2f} GFLOP/image")
    for precision, rate in rates.items():
        print(f"floor {precision}: matmul {rate:.0f} GFLOP/s -> {gflop / rate * 1e3:.1f} ms/image")
    for name, values in times.items():
        print(f"{name:>12}: {statistics.median(values):7.1f} ms/image (rounds: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
