"""Data-parallel training: sharding arithmetic, the divisibility check, 2 gloo processes on the CPU
against one process with the same global batch (stopped and resumed; with a validation split, the
plateau schedule, AdamW and kept epochs), and the collective NaN guard.

The objectives draw their reparameterisation noise with ``torch.randn`` for the shape of the batch
they see, so a rank's noise cannot equal the single-process noise of the same examples. The
comparisons therefore replace CRMVAE's ``reparameterize`` by a deterministic stand-in whose
"noise" of example i depends on example i alone (``eps = sin(mu)``): everything else (sharding,
loss weights, DDP's gradient average, the global means that are logged, checkpoints, resume) is
the real code path.
"""

from __future__ import annotations

import itertools
import json
import socket
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

import crmvae.objectives.crmvae as crmvae_objective
from crmvae.checkpoint import read_checkpoint
from crmvae.config import ModalityConfig, ModelConfig, RunConfig
from crmvae.data import Batch
from crmvae.errors import ConfigError, NonFiniteLossError
from crmvae.model import MultimodalVAE
from crmvae.objectives import ObjectiveOutput
from crmvae.presets import build_run_config
from crmvae.training import read_metrics, train
from crmvae.training.distributed import DistContext, loss_weight, shard_bounds


def example_wise_noise(mu: Tensor, logvar: Tensor) -> Tensor:
    """``z = mu + sin(mu) * std``: reparameterised, deterministic, and per example."""
    return mu + torch.sin(mu.detach()) * torch.exp(0.5 * logvar)


def tiny_config(data_dir: Path, *overrides: str) -> RunConfig:
    """41 training examples in batches of 16: the last batch (9) splits 4 + 5 over 2 ranks."""
    return build_run_config("polymnist", "crmvae", "cpu-short", [
        "data.params.source=digits", "data.train_size=41", "data.test_size=16", f"data.data_dir={data_dir}",
        "model.latent_dim=8", "train.batch_size=16", "train.epochs=2", "train.log_every=1",
        "train.checkpoint_every=2", "train.grid_examples=0", "train.progress=false", "train.threads=1",
        *overrides,
    ])


# --------------------------------------------------------------------------------------------
# arithmetic, no processes


@pytest.mark.parametrize("n, world_size", [(32, 2), (17, 2), (17, 4), (3, 5), (1, 2)])
def test_shards_partition_the_batch_and_weights_average_to_one(n: int, world_size: int) -> None:
    bounds = [shard_bounds(n, world_size, r) for r in range(world_size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert sum(loss_weight(s, n, world_size) for s in sizes) / world_size == pytest.approx(1.0)
    assert shard_bounds(17, 2, 0) == (0, 8) and shard_bounds(17, 2, 1) == (8, 17)


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_averaged_shard_gradients_equal_the_batch_gradient(world_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP's average of the ranks' weighted gradients, emulated: 5 examples over 2, 3 and 7 ranks
    (7: two ranks hold no example and run on a stand-in row with weight 0)."""
    torch.set_num_threads(1)  # conftest restores it; 2 threads crawl on a busy 2-core machine
    monkeypatch.setattr(crmvae_objective, "reparameterize", example_wise_noise)
    torch.manual_seed(0)
    config = ModelConfig([ModalityConfig(f"m{i}", [3, 28, 28]) for i in range(2)], latent_dim=4)
    model = MultimodalVAE(config)
    data = {f"m{i}": torch.rand(5, 3, 28, 28) for i in range(2)}
    batch = Batch(data, torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, True]]))

    def gradient(loss: Tensor) -> Tensor:
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    full = gradient(model.loss(batch.data, batch.mask).loss)
    averaged = torch.zeros_like(full)
    for rank in range(world_size):
        shard, count = DistContext(rank, world_size).shard(batch)
        averaged += gradient(model.loss(shard.data, shard.mask).loss * loss_weight(count, len(batch), world_size))
    torch.testing.assert_close(averaged / world_size, full, rtol=1e-4, atol=1e-6)


def test_batch_size_must_split_evenly(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"batch_size=33 is the global batch .* \(WORLD_SIZE=2\).*train.batch_size=32"):
        train(tiny_config(data_dir, "train.batch_size=33"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK=2, LOCAL_RANK=2, WORLD_SIZE=2"):
        train(tiny_config(data_dir), tmp_path / "out")


# --------------------------------------------------------------------------------------------
# two gloo processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, config: RunConfig, out: Path, nan_out: Path) -> None:
    """One rank, in one process group: a run stopped after 4 of its 6 steps, then resumed to its end;
    then a run whose loss becomes NaN at step 2 on rank 1 only, which must stop both ranks."""
    crmvae_objective.reparameterize = example_wise_noise
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))  # a missed collective fails instead of hanging
    try:
        stopped = RunConfig(config.data, config.model, replace(config.train, max_steps=4))
        assert train(stopped, out).global_step == 4
        assert train(config, out, resume=True).global_step == 6
        original, calls = MultimodalVAE.loss, [0]

        def nan_on_rank_1(
            self: MultimodalVAE, data: dict[str, Tensor], mask: Tensor | None = None, beta_scale: float = 1.0
        ) -> ObjectiveOutput:
            output = original(self, data, mask, beta_scale)
            calls[0] += 1
            if rank == 1 and calls[0] == 2:
                output.terms["kl/joint||m2"] = torch.tensor(float("nan"))
            return output

        MultimodalVAE.loss = nan_on_rank_1
        with pytest.raises(NonFiniteLossError, match=r"step 2 .*: kl/joint\|\|m2 became NaN"):
            train(config, nan_out)
    finally:
        dist.destroy_process_group()


#: Controls whose state every rank must agree on: the validation loss (rank 0's, shared) drives the
#: plateau schedule and the best weights; AdamW's state; the models kept each epoch (rank 0).
CONTROLS = ("data.train_size=49", "train.validation_size=8", "train.lr_schedule=plateau", "train.lr_plateau_patience=0",
            "train.optimizer=adamw", "train.weight_decay=0.01", "train.save_every_epochs=1")


@pytest.fixture(scope="module")
def runs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same configuration trained in one process and, stopped and resumed, in two."""
    config = tiny_config(data_dir, *CONTROLS)
    single, ddp = tmp_path_factory.mktemp("single") / "out", tmp_path_factory.mktemp("ddp") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crmvae_objective, "reparameterize", example_wise_noise)
        train(config, single)
    mp.spawn(_worker, args=(_free_port(), config, ddp, ddp.parent / "nan"), nprocs=2)
    return single, ddp


def _flat(state: dict[str, Tensor]) -> Tensor:
    return torch.cat([v.flatten().float() for v in state.values()])


def test_two_processes_match_one(runs: tuple[Path, Path]) -> None:
    """Logged global means agree to 1e-5 at every step; the final weights agree to 5e-4 of the distance
    they travelled. (Elementwise, Adam turns float noise in the few near-zero gradients, from summing
    over 8 instead of 16 examples, into updates of up to a few lr; at most 1 entry in 10^4 may differ.
    Measured: below 1e-4 on an AMX CPU, 1.07e-4 on an AVX-512 CPU without it. A wrong weighting of
    the uneven 4 + 5 split would change every gradient, not only the near-zero ones.)"""
    one, two = (read_checkpoint(run / "model.pt")["model"] for run in runs)
    assert one.keys() == two.keys()
    torch.manual_seed(0)
    start = _flat(MultimodalVAE(tiny_config(Path("."), *CONTROLS).model).state_dict())
    travelled, apart = (_flat(one) - start).norm(), (_flat(two) - _flat(one)).norm()
    assert travelled > 1.0 and apart < 5e-4 * travelled, (float(travelled), float(apart))
    close = torch.isclose(_flat(two), _flat(one), rtol=1e-4, atol=1e-5).float().mean()
    assert close > 0.9999, float(close)
    steps = [{r["global_step"]: r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "step"} for run in runs]
    assert sorted(steps[0]) == sorted(steps[1]) == list(range(1, 7))
    for step, record in steps[0].items():  # global means of every term, the 4 + 5 split of steps 3 and 6 included
        for key in ("loss", "kl/joint||prior", "rec/self/m3", "rec/joint/m1"):
            assert steps[1][step][key] == pytest.approx(record[key], rel=1e-5), (step, key)
    epochs = [[r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "epoch" and r["complete"]] for run in runs]
    assert [r["epoch"] for r in epochs[1]] == [1, 2]
    for a, b in zip(*epochs):
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    states = [read_checkpoint(run / "checkpoint.pt") for run in runs]
    assert [(c["best_epoch"], c["plateau_bad_epochs"], c["plateau_reductions"]) for c in states] == [
        (states[0]["best_epoch"], states[0]["plateau_bad_epochs"], states[0]["plateau_reductions"])] * 2
    assert sorted(p.name for p in (runs[1] / "epochs").iterdir()) == ["epoch1.pt", "epoch2.pt"]


def test_rank_zero_writes_the_run_and_every_rank_state(runs: tuple[Path, Path]) -> None:
    single, ddp = runs
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    checkpoint = read_checkpoint(ddp / "checkpoint.pt")
    states = checkpoint["rank_rng_states"]
    assert len(states) == 2 and not torch.equal(states[0]["cpu"], states[1]["cpu"])
    assert torch.equal(checkpoint["rng_state"]["cpu"], states[0]["cpu"])
    assert "rank_rng_states" not in read_checkpoint(single / "checkpoint.pt")
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (6, 2)


def test_a_non_finite_loss_on_one_rank_stops_all(runs: tuple[Path, Path]) -> None:
    """Both ranks raised (asserted in the workers); the checkpoint holds the state before step 2."""
    checkpoint = read_checkpoint(runs[1].parent / "nan" / "checkpoint.pt")
    assert (checkpoint["global_step"], len(checkpoint["rank_rng_states"])) == (1, 2)


def _train_worker(rank: int, port: int, config: RunConfig, out: Path) -> None:
    crmvae_objective.reparameterize = example_wise_noise
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        train(config, out)
    finally:
        dist.destroy_process_group()


def test_keep_best_on_train_picks_the_same_epoch_in_two_processes(data_dir: Path, tmp_path: Path) -> None:
    """The kept epoch is chosen by the global mean training loss (the 4 + 5 split of the last batch
    makes a rank's own mean differ from it), so two ranks keep the epoch and the loss one process keeps."""
    config = tiny_config(data_dir, "train.epochs=3", "train.keep_best_on_train=true", "train.save_every_epochs=1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crmvae_objective, "reparameterize", example_wise_noise)
        train(config, tmp_path / "single")
    mp.spawn(_train_worker, args=(_free_port(), config, tmp_path / "ddp"), nprocs=2)
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("single", "ddp")]
    losses = [[r["train_loss"] for r in read_metrics(tmp_path / run / "metrics.jsonl") if r["kind"] == "epoch"]
              for run in ("single", "ddp")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5), losses
    best = losses[0].index(min(losses[0])) + 1
    assert summaries[0]["best_epoch"] == summaries[1]["best_epoch"] == best
    assert summaries[1]["best_train_loss"] == pytest.approx(min(losses[0]), rel=1e-5)
    kept, epoch = (read_checkpoint(tmp_path / "ddp" / name)["model"] for name in ("model.pt", f"epochs/epoch{best}.pt"))
    assert all(torch.equal(kept[k], epoch[k]) for k in kept)


def _collectives_worker(rank: int, port: int) -> None:
    """One rank: every collective of :class:`DistContext`; after ``settle`` the backend holds none of
    the tensors handed to it (a gloo thread dropping the last one at interpreter exit aborts it)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    ctx, handed = DistContext(rank, 2, rank), []
    track = ctx._track

    def track_and_record(tensor: Tensor) -> Tensor:
        handed.append(tensor)
        return track(tensor)

    def fails() -> None:
        raise ConfigError("raised on rank 0")

    object.__setattr__(ctx, "_track", track_and_record)
    try:
        mean = ctx.mean(torch.tensor([1.0, 2.0]) * (rank + 1), count=rank + 1, total=3)
        torch.testing.assert_close(mean, torch.tensor([5.0, 10.0]) / 3)  # (1 * 1 + 2 * 2) / 3
        assert ctx.gather({"rank": rank, "long": "x" * 1000 * rank}) == [{"rank": 0, "long": ""},
                                                                         {"rank": 1, "long": "x" * 1000}]
        assert ctx.from_main(lambda: ("made on", rank)) == ("made on", 0)
        with pytest.raises(ConfigError, match="raised on rank 0"):
            ctx.from_main(fails)
        ctx.settle()
        assert not ctx._pending and handed
        assert [t._use_count() for t in handed] == [1] * len(handed)
    finally:
        dist.destroy_process_group()


def test_collectives_agree_and_settle_returns_every_tensor() -> None:
    mp.spawn(_collectives_worker, args=(_free_port(),), nprocs=2)
