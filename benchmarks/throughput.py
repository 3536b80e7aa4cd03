"""Training throughput (examples/s) of every objective on the PolyMNIST workload, optionally side by
side with MultiVae, with peak memory and a per-op profile.

Workload: 5 modalities of 3x28x28 (synthetic uint8 images, so no dataset build is needed), latent
512, batch 256, Adam (lr 5e-4); examples/s per steady-state epoch (after warm-up epochs), median
and spread over the timed epochs. This is a benchmark, not a test.

    python benchmarks/throughput.py                       # all objectives, fp32
    python benchmarks/throughput.py --models crmvae,mvtcae --precision bf16 --channels-last
    python benchmarks/throughput.py --models crmvae --compile
    /tmp/peer-venv/bin/python benchmarks/throughput.py --peer multivae --json peer.json
    /tmp/peer-venv/bin/python benchmarks/throughput.py --peer multivae --memory --profile
    /tmp/peer-venv/bin/python benchmarks/throughput.py --peer multivae --models crmvae --flops

``--peer multivae`` (the interpreter must have MultiVae: ``bash benchmarks/setup_peer.sh``) builds
MultiVae's model for each objective in the same process and alternates timed epochs between the
two sides (A B B A ...), so machine noise hits both; the ratio is the median of the per-pair
ratios. With the peer, crmvae uses MultiVae's networks (``--nets multivae``, parameter counts
checked equal) and the objective settings of MultiVae's models (``MATCHED``). ``--precision``,
``--channels-last`` and ``--compile`` apply to the crmvae side only: the peer runs as it ships
(fp32, no AMP, no compile).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import Tensor, nn

from crmvae.config import ModalityConfig, ModelConfig
from crmvae.data.base import ModalitySpec, MultimodalDataset
from crmvae.model import MultimodalVAE
from crmvae.nets import NETWORKS, register_network
from crmvae.objectives import OBJECTIVES

LATENT_DIM = 512
LR = 5e-4

#: Named variants; ``mmvae-dreg`` (K=30) is ~30x slower, so it is not in the default list.
VARIANTS = {
    "mopoe-stratified": ("mopoe", {"estimator": "stratified"}),
    "mmvae-dreg": ("mmvae", {"estimator": "dreg", "num_importance_samples": 30}),
}

#: crmvae settings equal to MultiVae's models (``peer_multivae.PEER_MODELS``), used with ``--peer``.
#: CRMVAE: MultiVae omits the prior expert, takes the KL to the raw experts and scales the
#: reconstruction by 1/(2(M+1)); our ``recon_coef="pi"`` with beta 0.2 is its beta 0.1 loss times 2
#: (and it sums the loss over the batch). MVTCAE: the reference form with alpha 5/6. MoPoE: MultiVae
#: adds the prior expert to the full set only, ours to every subset (same cost). MVAE: k = 0.
MATCHED: dict[str, dict[str, Any]] = {
    "crmvae": {"prior_expert": False, "kl_target": "expert", "beta": 0.2},
    "mvtcae": {"variant": "original", "alpha": 5 / 6, "beta": 1.0},
    "mopoe": {"beta": 1.0},
    "mvae": {"num_random_subsets": 0, "beta": 1.0},
}


@register_network("polymnist_multivae_conv2d")
def multivae_conv2d(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """MultiVae's PolyMNIST nets with the encoder heads as plain ``nn.Conv2d`` (as MultiVae runs
    them) instead of the library's :class:`WholeInputConv2d`: the same function, slower on CPU."""
    encoder, decoder = NETWORKS["polymnist_multivae"](modality, latent_dim)
    encoder.mu, encoder.logvar = (nn.Conv2d(128, latent_dim, 4, 2, 0) for _ in range(2))
    return encoder, decoder


#: ``--nets``: crmvae's PolyMNIST nets, MultiVae's (the default with ``--peer``), and MultiVae's
#: with its encoder heads run as convolutions, as MultiVae runs them.
NETS = {"ours": "polymnist_conv", "multivae": "polymnist_multivae", "multivae-conv2d": "polymnist_multivae_conv2d"}


def synthetic_polymnist(n: int, seed: int) -> MultimodalDataset:
    gen = torch.Generator().manual_seed(seed)
    names = [f"m{i}" for i in range(5)]
    tensors = {m: torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8, generator=gen) for m in names}
    specs = [ModalitySpec(m, "image", (3, 28, 28)) for m in names]
    return MultimodalDataset(tensors, specs, torch.randint(0, 10, (n,), generator=gen), name="synthetic")


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class OursRunner:
    """Trains a crmvae model epoch by epoch with the precision / memory-format / compile options."""

    def __init__(self, key: str, data: MultimodalDataset, args: argparse.Namespace) -> None:
        name, params = VARIANTS.get(key, (key, {}))
        if args.peer:
            params = {**MATCHED.get(key, {}), **params}
        self.params = params
        torch.manual_seed(0)
        modalities = [ModalityConfig(m, [3, 28, 28], network=NETS[args.nets]) for m in data.modality_names]
        self.model = MultimodalVAE(ModelConfig(modalities, latent_dim=LATENT_DIM, objective=name, objective_params=params))
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        if args.compile:
            for module in [*self.model.encoders.values(), *self.model.decoders.values()]:
                module.compile()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR, fused=True)  # as crmvae's trainer
        self.data, self.batch_size, self.precision = data, args.batch_size, args.precision
        self.examples = data.num_batches(args.batch_size, drop_last=True) * args.batch_size
        self.first_step_s: float | None = None
        self.last_loss = float("nan")

    def autocast(self) -> AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def inputs(self, data: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: x.contiguous(memory_format=self.memory_format) for m, x in data.items()}

    def step(self, data: dict[str, Tensor]) -> None:
        with self.autocast():
            out = self.model.loss(self.inputs(data))
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.last_loss = float(out.loss.detach())

    def epoch(self) -> float:
        """Seconds for one training epoch; the very first step's time is kept (compile time)."""
        self.model.train()
        start = time.perf_counter()
        for batch in self.data.batches(self.batch_size, shuffle=True, drop_last=True):
            step_start = time.perf_counter()
            self.step(batch.data)
            if self.first_step_s is None:
                self.first_step_s = time.perf_counter() - step_start
        return time.perf_counter() - start


def summary(rates: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "rates": rates}


def alternate(runners: dict[str, Any], warmup: int, epochs: int) -> dict[str, list[float]]:
    """Examples/s per timed epoch for each runner, epochs interleaved A B, B A, A B, ..."""
    for _ in range(warmup):
        for runner in runners.values():
            runner.epoch()
    rates: dict[str, list[float]] = {side: [] for side in runners}
    for i in range(epochs):
        for side in list(runners) if i % 2 == 0 else reversed(list(runners)):
            rates[side].append(runners[side].examples / runners[side].epoch())
    return rates


def peer_runner(peer: Any, key: str, data: MultimodalDataset, args: argparse.Namespace) -> Any:
    """MultiVae's model for ``key`` on the same examples (float copies), or None if it has none."""
    import peer_multivae

    if key not in peer_multivae.PEER_MODELS:
        return None
    torch.manual_seed(0)
    model = peer_multivae.build_peer_model(peer, key, data.modality_names, LATENT_DIM)
    floats = data.batch(torch.arange(len(data))).data
    return peer_multivae.PeerRunner(peer, model, floats, args.batch_size, LR, args.peer_step)


def measure(key: str, data: MultimodalDataset, peer: Any, args: argparse.Namespace) -> dict[str, Any]:
    ours = OursRunner(key, data, args)
    runners: dict[str, Any] = {"crmvae": ours}
    other = peer_runner(peer, key, data, args) if peer is not None else None
    if other is not None:
        runners["multivae"] = other
    rates = alternate(runners, args.warmup, args.epochs)
    result: dict[str, Any] = {
        "objective_params": ours.params, "parameters": num_parameters(ours.model),
        "crmvae": {**summary(rates["crmvae"]), "first_step_s": ours.first_step_s, "final_loss": ours.last_loss},
    }
    if other is not None:
        result["multivae"] = {**summary(rates["multivae"]), "parameters": num_parameters(other.model)}
        if result["parameters"] != result["multivae"]["parameters"]:
            print(f"# WARNING {key}: parameter counts differ: crmvae {result['parameters']:,}, "
                  f"multivae {result['multivae']['parameters']:,}")
        pairs = [a / b for a, b in zip(rates["crmvae"], rates["multivae"])]
        result["ratio"] = {**summary(pairs), "of_medians": result["crmvae"]["median"] / result["multivae"]["median"]}
    return result


def check_losses(key: str, data: MultimodalDataset, peer: Any, args: argparse.Namespace) -> dict[str, float] | None:
    """Both sides' loss on one batch with MultiVae's weights copied into ours and the sampling noise
    set to zero on both sides (``z`` = the posterior mean): the objective settings match when
    ``crmvae loss = LOSS_RATIO * multivae loss`` (up to float error and MultiVae's 1e-8 PoE epsilon)."""
    import peer_multivae

    if key not in peer_multivae.LOSS_RATIO:
        return None
    ours, other = OursRunner(key, data, args), peer_runner(peer, key, data, args)
    for side in ("encoders", "decoders"):
        for m in data.modality_names:
            src, dst = getattr(other.model, side)[m], getattr(ours.model, side)[m]
            dst.load_state_dict(dict(zip(dst.state_dict(), src.state_dict().values())))
    index = torch.arange(args.batch_size)
    with torch.no_grad(), mock.patch("crmvae.distributions.standard_normal_like", torch.zeros_like), \
            mock.patch.object(torch.distributions.Normal, "rsample", lambda self, *shape: self.mean):
        mine = float(ours.model.loss(data.batch(index).data).loss)
        theirs = float(other.model(other.batch(index), epoch=10_000).loss)
    expected = peer_multivae.LOSS_RATIO[key](args.batch_size) * theirs
    return {"crmvae": mine, "multivae": theirs, "expected_crmvae": expected, "rel_diff": abs(mine - expected) / abs(expected)}


# ------------------------------------------------------------------------------------------ memory

def proc_status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` (peak RSS of this process image) from ``/proc/self/status``, in MiB.

    Not ``getrusage().ru_maxrss``: Linux carries it across ``exec``, so a fresh child would start
    with its parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(spec: str, args: argparse.Namespace) -> None:
    """Run in a fresh process: RSS after building data, model and optimizer, and the peak RSS over
    ``args.memory_steps`` training steps (activations, gradients, Adam state, allocator caches)."""
    side, key = spec.split(":")
    data = synthetic_polymnist(args.batch_size, seed=0)
    batch = data.batch(torch.arange(args.batch_size)).data
    step: Callable[[], Any]
    if side == "crmvae":
        runner = OursRunner(key, data, args)
        step = partial(runner.step, batch)
    else:
        import peer_multivae

        peer, _ = peer_multivae.import_multivae()
        other = peer_runner(peer, key, data, args)
        inputs = other.batch(torch.arange(args.batch_size))
        step = partial(other.step, inputs)
    before = proc_status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    for _ in range(args.memory_steps):
        step()
    print(json.dumps({"before_mib": before, "peak_mib": proc_status_mib("VmHWM")}))


def measure_memory(side: str, key: str, argv: list[str]) -> dict[str, float]:
    """Peak training memory of one objective: peak RSS growth over a few steps, in a fresh process."""
    cmd = [sys.executable, __file__, *argv, "--memory-child", f"{side}:{key}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"memory measurement of {side}:{key} failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**res, "step_mib": res["peak_mib"] - res["before_mib"]}


# ----------------------------------------------------------------------------------------- profile

def profile_step(step: Callable[[], Any], rows: int) -> str:
    """Top ops by self CPU time of one training step (after two unprofiled warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def gemm_rate(size: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a fp32 ``size``-cubed matmul: about the best this CPU's BLAS does."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def step_flops(key: str, data: MultimodalDataset, args: argparse.Namespace) -> dict[str, float]:
    """FLOPs of one crmvae training step (forward + backward, counted by torch's
    ``FlopCounterMode``: matmuls and convolutions), per example, and the throughput ceiling
    ``gemm_rate / flops_per_example``: what the step would reach if every counted FLOP ran at the
    speed of a large square matmul and everything else were free."""
    from torch.utils.flop_counter import FlopCounterMode

    ours = OursRunner(key, data, args)
    batch = data.batch(torch.arange(args.batch_size)).data
    ours.step(batch)
    with FlopCounterMode(display=False) as counter:
        ours.step(batch)
    per_example = counter.get_total_flops() / args.batch_size
    rate = gemm_rate()
    return {"gflop_per_example": per_example / 1e9, "gemm_gflop_s": rate, "ceiling_examples_s": rate * 1e9 / per_example}


def profile_model(key: str, data: MultimodalDataset, peer: Any, args: argparse.Namespace) -> dict[str, str]:
    batch = data.batch(torch.arange(args.batch_size)).data
    ours = OursRunner(key, data, args)
    tables = {"crmvae": profile_step(lambda: ours.step(batch), args.profile_rows)}
    other = peer_runner(peer, key, data, args) if peer is not None else None
    if other is not None:
        inputs = other.batch(torch.arange(args.batch_size))
        tables["multivae"] = profile_step(lambda: other.step(inputs), args.profile_rows)
    return tables


# -------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help="comma-separated objectives/variants (default: all; with --peer: crmvae,mvtcae,mopoe,mvae)")
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per side first")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels_last model and inputs, as crmvae's trainer by default (crmvae side)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each encoder/decoder (crmvae side)")
    parser.add_argument("--nets", choices=sorted(NETS), default=None,
                        help="crmvae side's networks (default: ours; with --peer: multivae)")
    parser.add_argument("--peer", choices=["multivae"], default=None, help="also run MultiVae side by side")
    parser.add_argument("--peer-step", choices=["trainer", "loop"], default="trainer",
                        help="MultiVae's BaseTrainer.train_step, or the equivalent loop on pre-sliced batches")
    parser.add_argument("--check-losses", action="store_true",
                        help="with --peer: compare both sides' loss on one batch with shared weights")
    parser.add_argument("--memory", action="store_true", help="peak memory per objective (fresh process each)")
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--flops", action="store_true",
                        help="FLOPs per example, achieved GFLOP/s and the ceiling at the large-matmul rate")
    parser.add_argument("--profile", action="store_true", help="top ops by self CPU time of one step")
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.nets = args.nets or ("multivae" if args.peer else "ours")
    if args.models is None:
        args.models = "crmvae,mvtcae,mopoe,mvae" if args.peer else ",".join([*OBJECTIVES, "mopoe-stratified"])
    return args


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    peer, peer_note = None, None
    if args.peer:
        import peer_multivae

        peer, peer_note = peer_multivae.import_multivae()
        print(f"# peer: {peer_note}" if peer else f"# peer: NOT RUN: {peer_note}; measuring crmvae only", flush=True)
    data = synthetic_polymnist(args.examples, seed=0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"crmvae side: {args.precision}, {'channels_last' if args.channels_last else 'NCHW'}"
          f"{', compiled' if args.compile else ''}, {args.nets} nets; batch {args.batch_size}, {args.examples} examples, "
          f"{args.warmup} warm-up + {args.epochs} timed epochs per side"
          + (f"; multivae side: fp32, {args.peer_step}" if peer else ""))
    print(f"{'model':<18} {'crmvae ex/s':>12} {'(min-max)':>11} {'multivae ex/s':>14} {'(min-max)':>11} "
          f"{'ratio':>6} {'(min-max)':>11} {'1st step s':>10}")
    results = {}
    for key in args.models.split(","):
        res = measure(key, data, peer, args)
        ours, other, ratio = res["crmvae"], res.get("multivae"), res.get("ratio")
        print(f"{key:<18} {ours['median']:>12.0f} {ours['min']:>5.0f}-{ours['max']:<5.0f} "
              f"{fmt(other and other['median']):>14} {fmt(other and other['min']):>5}-{fmt(other and other['max']):<5} "
              f"{fmt(ratio and ratio['median'], '.2f'):>6} {fmt(ratio and ratio['min'], '.2f'):>5}-"
              f"{fmt(ratio and ratio['max'], '.2f'):<5} {ours['first_step_s']:>10.2f}", flush=True)
        if args.check_losses and peer is not None:
            res["loss_check"] = check_losses(key, data, peer, args)
            check = res["loss_check"]
            print("    loss check (shared weights, zero noise): " + ("no peer equivalent (see LOSS_RATIO)" if check is None else
                  f"crmvae {check['crmvae']:.2f} vs expected {check['expected_crmvae']:.2f}, rel diff {check['rel_diff']:.1e} "
                  + ("ok" if check["rel_diff"] < 1e-5 else "MISMATCH")), flush=True)
        if args.memory:
            res["memory"] = {side: measure_memory(side, key, argv) for side in ["crmvae", *(["multivae"] if other else [])]}
            print("    peak memory (peak RSS growth over "
                  f"{args.memory_steps} steps): "
                  + ", ".join(f"{side} {m['step_mib']:.0f} MiB" for side, m in res["memory"].items()), flush=True)
        if args.flops:
            res["flops"] = flops = step_flops(key, data, args)
            print(f"    {flops['gflop_per_example']:.3f} GFLOP per example (forward + backward): "
                  f"{flops['gflop_per_example'] * ours['median']:.0f} GFLOP/s achieved; a 2048^3 fp32 matmul runs at "
                  f"{flops['gemm_gflop_s']:.0f} GFLOP/s, so at most {flops['ceiling_examples_s']:.0f} examples/s"
                  + (f" = {flops['ceiling_examples_s'] / other['median']:.2f}x MultiVae" if other else ""), flush=True)
        if args.profile:
            res["profile"] = profile_model(key, data, peer, args)
            for side, table in res["profile"].items():
                print(f"\n## {key} / {side}: top ops by self CPU time, one training step\n{table}", flush=True)
        results[key] = res
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "python": sys.executable, "peer": peer_note, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
