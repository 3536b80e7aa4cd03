"""Training throughput (examples/s) of every objective on the PolyMNIST workload.

Workload: 5 modalities of 3x28x28 (synthetic uint8 images, so no dataset build is needed), the
paper's PolyMNIST networks, latent 512, batch 256, Adam; examples/s over steady-state epochs
(after one warm-up epoch), median and spread over repeats. This is a benchmark, not a test.

    python benchmarks/throughput.py                       # all objectives, fp32
    python benchmarks/throughput.py --models crmvae,mvtcae --precision bf16 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from crmvae.config import ModalityConfig, ModelConfig
from crmvae.data.base import ModalitySpec, MultimodalDataset
from crmvae.model import MultimodalVAE
from crmvae.objectives import OBJECTIVES

#: Named variants; ``mmvae-dreg`` (K=30) is ~30x slower, so it is not in the default list.
VARIANTS = {
    "mopoe-stratified": ("mopoe", {"estimator": "stratified"}),
    "mmvae-dreg": ("mmvae", {"estimator": "dreg", "num_importance_samples": 30}),
}


def synthetic_polymnist(n: int, seed: int) -> MultimodalDataset:
    gen = torch.Generator().manual_seed(seed)
    names = [f"m{i}" for i in range(5)]
    tensors = {m: torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8, generator=gen) for m in names}
    specs = [ModalitySpec(m, "image", (3, 28, 28)) for m in names]
    return MultimodalDataset(tensors, specs, torch.randint(0, 10, (n,), generator=gen), name="synthetic")


def measure(name: str, params: dict, data: MultimodalDataset, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    modalities = [ModalityConfig(m, [3, 28, 28]) for m in data.modality_names]
    model = MultimodalVAE(ModelConfig(modalities, latent_dim=512, objective=name, objective_params=params))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    rates = []
    for epoch in range(args.epochs + 1):
        start = time.perf_counter()
        for batch in data.batches(args.batch_size, shuffle=True, drop_last=True):
            with autocast:
                out = model.loss(batch.data, batch.mask)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        if epoch > 0:  # epoch 0 is warm-up
            rates.append(data.num_batches(args.batch_size, drop_last=True) * args.batch_size / seconds)
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "final_loss": float(out.loss.detach()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join([*OBJECTIVES, "mopoe-stratified"]))
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = synthetic_polymnist(args.examples, seed=0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{args.precision}, batch {args.batch_size}, {args.examples} examples, {args.epochs} timed epochs")
    print(f"{'model':<18} {'examples/s (median)':>20} {'min':>8} {'max':>8}")
    results = {}
    for key in args.models.split(","):
        name, params = VARIANTS.get(key, (key, {}))
        res = measure(name, params, data, args)
        results[key] = res
        print(f"{key:<18} {res['median']:>20.0f} {res['min']:>8.0f} {res['max']:>8.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
