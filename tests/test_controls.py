"""Training controls: schedules, KL warm-up, clipping, early stopping, their exact resumption and
the resume checks; callbacks and their order; the TensorBoard logger."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from crmvae.config import ModalityConfig, ModelConfig, TrainConfig
from crmvae.errors import ConfigError
from crmvae.model import MultimodalVAE
from crmvae.objectives import OBJECTIVES
from crmvae.training import (
    OPTIMIZERS,
    Callback,
    beta_scale,
    learning_rate,
    plateau_update,
    read_metrics,
    schedule_depends_on_epochs,
    train,
)
from crmvae.training import trainer as trainer_module
from crmvae.training.distributed import DistContext
from crmvae.training.loggers import TensorBoardLogger
from crmvae.training.progress import Progress
from test_training import tiny_config


def weights(path: Path, key: str = "model") -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)[key]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# schedules by hand


def test_constant_learning_rate_is_the_default() -> None:
    tc = TrainConfig(lr=0.003)
    assert [learning_rate(tc, step, 100) for step in (0, 50, 99, 500)] == [0.003] * 4
    assert beta_scale(tc, 0) == 1.0


def test_warmup_then_cosine_by_hand() -> None:
    tc = TrainConfig(lr=1.0, lr_schedule="cosine", lr_warmup_steps=4, lr_horizon_steps=12)
    got = [learning_rate(tc, step, planned_steps=1000) for step in (0, 1, 3, 4, 8, 11, 12, 40)]
    assert got == pytest.approx([0.25, 0.5, 1.0, 1.0, 0.5, 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()), 0.0, 0.0])
    # without a horizon, the cosine spans the planned steps (which depend on train.epochs)
    free = TrainConfig(lr=1.0, lr_schedule="cosine")
    assert learning_rate(free, 10, planned_steps=20) == pytest.approx(0.5)
    assert learning_rate(free, 10, planned_steps=40) == pytest.approx(0.5 * (1 + 2**-0.5))


def test_step_schedule_by_hand() -> None:
    tc = TrainConfig(lr=1.0, lr_schedule="step", lr_warmup_steps=2, lr_decay_every=3, lr_decay_factor=0.1)
    got = [learning_rate(tc, step, 1000) for step in (0, 1, 2, 4, 5, 7, 8)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01])


def test_multistep_follows_torchs_multistep_lr() -> None:
    """Stepped once per update, MultiStepLR's rate at update s equals ours at global step s."""
    tc = TrainConfig(lr=1.0, lr_schedule="multistep", lr_milestones=[3, 7, 8], lr_decay_factor=0.5)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 7, 8], gamma=0.5)
    theirs = []
    for _ in range(12):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert [learning_rate(tc, step, 1000) for step in range(12)] == pytest.approx(theirs)
    assert theirs[:4] == [1.0, 1.0, 1.0, 0.5] and theirs[-1] == 0.125
    warm = TrainConfig(lr=1.0, lr_schedule="multistep", lr_milestones=[3], lr_decay_factor=0.1, lr_warmup_steps=2)
    assert [learning_rate(warm, step, 1000) for step in range(5)] == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1])


@pytest.mark.parametrize("threshold", [0.0, 1e-4, 0.1])
@pytest.mark.parametrize("patience", [0, 1, 3])
def test_plateau_follows_torchs_reduce_lr_on_plateau(patience: int, threshold: float) -> None:
    """The learning rates epoch by epoch equal those of ReduceLROnPlateau(threshold, eps=0) fed the same losses."""
    g = torch.Generator().manual_seed(patience)
    losses = (100 + torch.rand(60, generator=g).mul(10).round() - torch.arange(60) * 0.15).tolist()  # a slow decline
    tc = TrainConfig(lr=1.0, lr_schedule="plateau", lr_decay_factor=0.5, lr_plateau_patience=patience,
                     lr_plateau_threshold=threshold, validation_size=1)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=patience,
                                                           threshold=threshold, eps=0.0)
    best, bad, reductions, ours, theirs = None, 0, 0, [], []
    for loss in losses:
        best, bad, reductions = plateau_update(tc, loss, best, bad, reductions)
        reference.step(loss)
        ours.append(learning_rate(tc, 10**6, 1, reductions))
        theirs.append(optimizer.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs) and reductions > 0


def test_the_default_plateau_threshold_is_torchs() -> None:
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([torch.zeros(1, requires_grad=True)]))
    assert TrainConfig().lr_plateau_threshold == reference.threshold and reference.threshold_mode == "rel"


def test_kl_warmup_by_hand() -> None:
    tc = TrainConfig(kl_warmup_steps=4)
    assert [beta_scale(tc, step) for step in (0, 1, 3, 4, 100)] == [0.0, 0.25, 0.75, 1.0, 1.0]


def test_cyclical_kl_annealing_by_hand() -> None:
    tc = TrainConfig(kl_warmup_steps=4, kl_cycle_steps=6)
    assert [beta_scale(tc, step) for step in range(14)] == [
        0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.0, 0.25]


@pytest.mark.parametrize(("settings", "depends"), [
    ({}, False), ({"lr_warmup_steps": 10}, False), ({"lr_schedule": "cosine"}, True),
    ({"lr_schedule": "cosine", "lr_horizon_steps": 100}, False), ({"lr_schedule": "step"}, False),
    ({"validation_size": 10, "early_stopping_patience": 2}, False),
])
def test_schedule_depends_on_epochs(settings: dict[str, Any], depends: bool) -> None:
    assert schedule_depends_on_epochs(TrainConfig(**settings)) is depends


@pytest.mark.parametrize(("settings", "message"), [
    ({"lr_schedule": "linear"}, "lr_schedule"), ({"lr_warmup_steps": -1}, "lr_warmup_steps"),
    ({"lr_decay_factor": 0.0}, "lr_decay_factor"), ({"grad_clip_norm": 0.0}, "grad_clip_norm"),
    ({"early_stopping_patience": 2}, "validation_size"), ({"kl_warmup_steps": -3}, "kl_warmup_steps"),
    ({"lr_warmup_steps": 10, "lr_horizon_steps": 10}, r"lr_horizon_steps \(10\) must exceed train.lr_warmup_steps"),
    ({"lr_schedule": "plateau"}, "plateau needs a validation split"), ({"lr_plateau_patience": -1}, "lr_plateau_patience"),
    ({"weight_decay": -0.1}, "weight_decay"), ({"weight_decay": float("nan")}, "weight_decay"),
    ({"kl_cycle_steps": 10}, r"kl_cycle_steps \(10\) repeats the KL warm-up"),
    ({"kl_cycle_steps": 10, "kl_warmup_steps": 11}, "kl_warmup_steps=11"),
    ({"save_every_epochs": 0}, "save_every_epochs"), ({"grids_every_epochs": 0}, "grids_every_epochs"),
    ({"eval_batch_size": 0}, "eval_batch_size"), ({"kl_cycle_steps": 0, "kl_warmup_steps": 1}, "kl_cycle_steps"),
    ({"keep_best_on_train": True, "validation_size": 10}, "keep_best_on_train picks model.pt by the training loss"),
    ({"lr_plateau_threshold": 1.0}, "lr_plateau_threshold"), ({"lr_plateau_threshold": -0.1}, "lr_plateau_threshold"),
    ({"betas": [0.9]}, "betas"), ({"betas": [0.9, 1.0]}, "betas"), ({"momentum": 1.0}, "momentum"),
    ({"lr_schedule": "multistep"}, "multistep needs train.lr_milestones"),
    ({"lr_schedule": "multistep", "lr_milestones": [5, 5]}, "lr_milestones must be distinct ascending"),
    ({"lr_milestones": [10, 3]}, "lr_milestones must be distinct ascending"), ({"lr_milestones": [0]}, "lr_milestones"),
    ({"optimizer_params": {"lr": 0.1, "eps": 1e-6}}, r"optimizer_params cannot set \['lr'\]"),
    ({"optimizer_params": {"fused": False}}, r"cannot set \['fused'\]"),
    ({"keep_best_from_epoch": 0, "validation_size": 10}, "keep_best_from_epoch must be >= 1"),
    ({"keep_best_from_epoch": 2}, "keep_best_from_epoch chooses among the epochs kept by train.validation_size"),
    ({"keep_best_from_epoch": 4, "epochs": 3, "keep_best_on_train": True}, r"keep_best_from_epoch \(4\) is after the last"),
])
def test_bad_controls_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


# --------------------------------------------------------------------------------------------
# KL warm-up: one mechanism for every objective


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_beta_scale_scales_every_objectives_divergence_terms(objective: str) -> None:
    modalities = [ModalityConfig(f"m{i}", [3, 28, 28]) for i in range(3)]
    torch.manual_seed(0)
    model = MultimodalVAE(ModelConfig(modalities, latent_dim=4, objective=objective, objective_params={"beta": 2.0}))
    scaled = MultimodalVAE(ModelConfig(modalities, latent_dim=4, objective=objective, objective_params={"beta": 0.6}))
    scaled.load_state_dict(model.state_dict())
    data = {f"m{i}": torch.rand(4, 3, 28, 28) for i in range(3)}

    def loss(net: MultimodalVAE, scale: float = 1.0) -> torch.Tensor:
        torch.manual_seed(1)
        return net.loss(data, beta_scale=scale).loss

    assert torch.equal(loss(model, 0.3), loss(scaled))  # the same as beta 2.0 * 0.3
    if objective == "mmvae" and model.objective_config.estimator == "dreg":
        return  # beta enters the importance weights: not linear
    rec, full = loss(model, 0.0), loss(model)
    assert loss(model, 0.25).item() == pytest.approx((rec + 0.25 * (full - rec)).item(), rel=1e-5)
    if objective == "crmvae":  # by hand: beta * pi * (sum of the KL terms), pi = 1 / (M + 1)
        torch.manual_seed(1)
        kl = sum(v for k, v in model.loss(data).terms.items() if k.startswith("kl/"))
        assert (full - rec).item() == pytest.approx(2.0 / 4 * float(kl), abs=1e-6 * rec.abs().item())  # float32 cancellation


# --------------------------------------------------------------------------------------------
# clipping, early stopping


class GradientNorms(Callback):
    """The global gradient norm after every step (the gradients of the step are still there)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_step_end(self, trainer: Any) -> None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())


def test_clipping_bounds_the_gradient_norm(data_dir: Path, tmp_path: Path) -> None:
    free, clipped = GradientNorms(), GradientNorms()
    overrides = ("train.max_steps=4", "train.grid_examples=0")
    train(tiny_config(data_dir, *overrides), tmp_path / "free", callbacks=[free])
    train(tiny_config(data_dir, *overrides, "train.grad_clip_norm=0.5"), tmp_path / "clipped", callbacks=[clipped])
    assert min(free.norms) > 0.5
    assert max(clipped.norms) == pytest.approx(0.5, rel=1e-4)


class Snapshots(Callback):
    """The weights at each epoch's evaluation."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_evaluation(self, trainer: Any, record: dict[str, Any]) -> None:
        self.weights[record["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


def script_validation_losses(monkeypatch: pytest.MonkeyPatch, losses: list[float]) -> None:
    """The validation loss of the k-th validated epoch becomes ``losses[k]``; the test loss stays real."""
    scripted, real = iter(losses), trainer_module.evaluate

    def evaluate(model: Any, dataset: Any, *args: Any) -> dict[str, float]:
        return {"loss": next(scripted)} if dataset.name.endswith("(validation)") else real(model, dataset, *args)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)


def test_early_stopping_keeps_the_best_model(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted validation losses 5, 3, 4, 4: best epoch 2, patience 2 stops after epoch 4."""
    script_validation_losses(monkeypatch, [5.0, 3.0, 4.0, 4.0])
    snapshots = Snapshots()
    config = tiny_config(data_dir, "train.epochs=6", "train.validation_size=64", "train.early_stopping_patience=2")
    result = train(config, tmp_path / "out", callbacks=[snapshots])
    summary = json.loads(result.summary_path.read_text())
    assert result.epochs_completed == 4 and result.global_step == 4 * 6  # 192 training examples in batches of 32
    assert summary["early_stopping"] and summary["stopped_early"] and summary["best_epoch"] == 2
    assert summary["model"] == "best validation loss" and summary["best_val_loss"] == 3.0
    assert same(weights(result.model_path), snapshots.weights[2])
    assert same(weights(result.checkpoint_path), snapshots.weights[4])
    assert [r["val_loss"] for r in read_metrics(result.metrics_path) if r["kind"] == "epoch"] == [5.0, 3.0, 4.0, 4.0]
    # a stopped run stays stopped when continued to more epochs
    more = tiny_config(data_dir, "train.epochs=8", "train.validation_size=64", "train.early_stopping_patience=2")
    assert train(more, tmp_path / "out", resume=True).global_step == 24


def test_keep_best_on_train_keeps_the_epoch_of_the_lowest_training_loss(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scripted epoch training losses 5, 3, 4: model.pt holds epoch 2, the checkpoint epoch 3."""
    scripted = iter([5.0, 3.0, 4.0])
    monkeypatch.setattr(trainer_module.Trainer, "_epoch_train_loss", lambda self: next(scripted))
    snapshots = Snapshots()
    result = train(tiny_config(data_dir, "train.epochs=3", "train.keep_best_on_train=true"), tmp_path / "out",
                   callbacks=[snapshots])
    summary = json.loads(result.summary_path.read_text())
    assert summary["model"] == "best training loss" and summary["best_epoch"] == 2 and summary["best_train_loss"] == 3.0
    assert same(weights(result.model_path), snapshots.weights[2])
    assert same(weights(result.checkpoint_path), snapshots.weights[3])
    assert same(weights(result.checkpoint_path, "best_model"), snapshots.weights[2])


def test_keep_best_on_train_uses_the_epoch_means_of_the_log(data_dir: Path, tmp_path: Path) -> None:
    result = train(tiny_config(data_dir, "train.epochs=3", "train.keep_best_on_train=true",
                               "train.save_every_epochs=1"), tmp_path / "out")
    losses = [r["train_loss"] for r in read_metrics(result.metrics_path) if r["kind"] == "epoch"]
    best = losses.index(min(losses)) + 1
    summary = json.loads(result.summary_path.read_text())
    assert summary["best_epoch"] == best and summary["best_train_loss"] == pytest.approx(min(losses), rel=1e-6)
    assert same(weights(result.model_path), weights(result.out_dir / "epochs" / f"epoch{best}.pt"))
    with pytest.raises(ConfigError, match="keep_best_on_train"):  # the kept weights depend on it: fixed for the run
        train(tiny_config(data_dir, "train.epochs=4", "train.save_every_epochs=1"), tmp_path / "out", resume=True)


def test_keep_best_from_epoch_skips_the_earlier_epochs(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted validation losses 1, 5, 3, 4, 4 with keep_best_from_epoch=2: epoch 1's lower loss
    (as in a KL warm-up) is logged but not kept, and early stopping counts from epoch 2 on; the
    scripted training losses 1, 5, 3, 4 keep epoch 3 the same way."""
    script_validation_losses(monkeypatch, [1.0, 5.0, 3.0, 4.0, 4.0])
    snapshots = Snapshots()
    config = tiny_config(data_dir, "train.epochs=6", "train.validation_size=64", "train.early_stopping_patience=2",
                         "train.keep_best_from_epoch=2")
    result = train(config, tmp_path / "val", callbacks=[snapshots])
    summary = json.loads(result.summary_path.read_text())
    assert result.epochs_completed == 5 and summary["early_stopping"]
    assert summary["best_epoch"] == 3 and summary["best_val_loss"] == 3.0
    assert same(weights(result.model_path), snapshots.weights[3])

    losses = [1.0, 5.0, 3.0, 4.0]  # by epoch
    monkeypatch.setattr(trainer_module.Trainer, "_epoch_train_loss", lambda self: losses[self.state.epoch])
    snapshots = Snapshots()
    result = train(tiny_config(data_dir, "train.epochs=4", "train.keep_best_on_train=true", "train.keep_best_from_epoch=2"),
                   tmp_path / "train", callbacks=[snapshots])
    summary = json.loads(result.summary_path.read_text())
    assert summary["best_epoch"] == 3 and summary["best_train_loss"] == 3.0
    assert same(weights(result.model_path), snapshots.weights[3])
    with pytest.raises(ConfigError, match="keep_best_from_epoch"):  # fixed for the run
        train(tiny_config(data_dir, "train.epochs=5", "train.keep_best_on_train=true"), tmp_path / "train", resume=True)


def test_a_run_that_ends_before_keep_best_from_epoch_keeps_its_last_step(data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, "train.epochs=3", "train.validation_size=64", "train.keep_best_from_epoch=3",
                         "train.max_steps=12")
    result = train(config, tmp_path / "out")
    summary = json.loads(result.summary_path.read_text())
    assert summary["model"] == "last step" and summary["best_epoch"] is None and summary["best_val_loss"] is None
    assert same(weights(result.model_path), weights(result.checkpoint_path))


class LearningRates(Callback):
    """The learning rate of each epoch's last step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_evaluation(self, trainer: Any, record: dict[str, Any]) -> None:
        self.lrs.append(trainer.lr)


def test_plateau_lowers_the_learning_rate_after_the_patience(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scripted validation losses 5, 3, 4, 4, 4, 2 with patience 1: the epochs after the second
    epoch in a row without improvement (epoch 4) run at half the rate."""
    script_validation_losses(monkeypatch, [5.0, 3.0, 4.0, 4.0, 4.0, 2.0])
    rates = LearningRates()
    config = tiny_config(data_dir, "train.epochs=6", "train.validation_size=64", "train.lr_schedule=plateau",
                         "train.lr_plateau_patience=1", "train.lr_decay_factor=0.5", "train.lr=0.002", "train.grid_examples=0")
    with pytest.raises(KeyboardInterrupt):  # killed once epoch 4 is checkpointed: the reduction is in the checkpoint
        train(config, tmp_path / "out", callbacks=[rates, KillAt(4 * 6)])
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["plateau_reductions"] == 1
    result = train(config, tmp_path / "out", resume=True, callbacks=[rates])
    assert rates.lrs == [0.002] * 4 + [0.001] * 2
    assert torch.load(result.checkpoint_path, weights_only=True)["plateau_reductions"] == 1


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_with_its_settings(data_dir: Path, tmp_path: Path, name: str) -> None:
    config = tiny_config(data_dir, f"train.optimizer={name}", "train.weight_decay=0.01", "train.momentum=0.5",
                         "train.betas=[0.8, 0.99]", "train.lr=0.001", "train.grid_examples=0")
    result = train(config, tmp_path / "out")
    group = torch.load(result.checkpoint_path, weights_only=True)["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.01
    assert group["betas" if name.startswith("adam") else "momentum"] == ((0.8, 0.99) if name.startswith("adam") else 0.5)
    assert all(torch.isfinite(w).all() for w in weights(result.model_path).values())


def test_optimizer_settings_are_checked(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.optimizer: unknown train/optimizer 'lamb'; available: \['adam', 'adamw'"):
        train(tiny_config(data_dir, "train.optimizer=lamb"), tmp_path / "new")
    out = tmp_path / "out"
    train(tiny_config(data_dir, "train.max_steps=4", "train.grid_examples=0"), out)
    for change, words in (("train.optimizer=adamw", "train.optimizer: run has 'adam', given 'adamw'"),
                          ("train.weight_decay=0.1", "train.weight_decay: run has 0.0, given 0.1")):
        with pytest.raises(ConfigError, match=words):
            train(tiny_config(data_dir, "train.max_steps=8", "train.grid_examples=0", change), out, resume=True)


@pytest.mark.parametrize(("name", "params"), [
    ("adam", {"eps": 1e-6, "amsgrad": True}), ("adamw", {"eps": 1e-7}), ("sgd", {"nesterov": True, "dampening": 0.0}),
    ("rmsprop", {"alpha": 0.9, "centered": True}),
])
def test_optimizer_params_reach_the_optimizer(data_dir: Path, tmp_path: Path, name: str, params: dict[str, Any]) -> None:
    momentum = ["train.momentum=0.5"] if name == "sgd" else []  # nesterov needs a momentum
    config = tiny_config(data_dir, f"train.optimizer={name}", f"train.optimizer_params={json.dumps(params)}",
                         "train.max_steps=2", "train.grid_examples=0", *momentum)
    result = train(config, tmp_path / "out")
    group = torch.load(result.checkpoint_path, weights_only=True)["optimizer"]["param_groups"][0]
    assert {k: group[k] for k in params} == params
    with pytest.raises(ConfigError, match=r"train\.optimizer_params\.\w+: run has"):  # the optimizer state holds them
        train(tiny_config(data_dir, f"train.optimizer={name}", "train.max_steps=4", "train.grid_examples=0", *momentum),
              tmp_path / "out", resume=True)


@pytest.mark.parametrize(("name", "params", "words"), [
    ("adam", {"epsilon": 1e-6}, "unexpected keyword argument 'epsilon'"),
    ("adam", {"eps": -1.0}, "Invalid epsilon value"),
    ("sgd", {"nesterov": True}, "Nesterov momentum requires a momentum"),
])
def test_optimizer_params_the_optimizer_refuses_are_config_errors(
    data_dir: Path, tmp_path: Path, name: str, params: dict[str, Any], words: str,
) -> None:
    with pytest.raises(ConfigError, match=f"train.optimizer_params .* for {name}: .*{words}"):
        train(tiny_config(data_dir, f"train.optimizer={name}", f"train.optimizer_params={json.dumps(params)}"),
              tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


# --------------------------------------------------------------------------------------------
# exact resumption with every control on


ALL_CONTROLS = (
    "train.epochs=3", "train.validation_size=64", "train.early_stopping_patience=2", "train.lr_schedule=cosine",
    "train.lr_warmup_steps=3", "train.kl_warmup_steps=5", "train.grad_clip_norm=5.0", "train.checkpoint_every=4",
    "train.lr=0.002",
)
#: Another optimizer and schedule, whose state a resume restores too.
ADAMW_CONTROLS = (
    *(c for c in ALL_CONTROLS if "lr_schedule" not in c), "train.lr_schedule=plateau", "train.optimizer=adamw",
    "train.weight_decay=0.01", "train.kl_cycle_steps=7",
)

#: The best weights chosen by the training loss, whose tracking a resume continues.
KEEP_BEST_CONTROLS = (*(c for c in ALL_CONTROLS if "validation_size" not in c and "early_stopping" not in c),
                      "train.keep_best_on_train=true")


class KillAt(Callback):
    """Raises once the checkpoint of ``step`` is written: a kill -9 right after it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        if trainer.state.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize(("kill_step", "controls"), [(8, ALL_CONTROLS), (12, ALL_CONTROLS), (8, ADAMW_CONTROLS),
                                                    (8, KEEP_BEST_CONTROLS)],
                         ids=["mid-epoch", "epoch-end", "adamw", "keep-best-on-train"])
def test_resume_with_every_control_is_bit_exact(data_dir: Path, tmp_path: Path, kill_step: int, controls: tuple[str, ...]) -> None:
    config = tiny_config(data_dir, *controls)
    reference = train(config, tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", callbacks=[KillAt(kill_step)])
    assert not (tmp_path / "killed" / "model.pt").exists()
    resumed = train(config, tmp_path / "killed", resume=True)
    for name in ("model.pt", "checkpoint.pt"):
        assert same(weights(resumed.out_dir / name), weights(reference.out_dir / name)), name
    assert same(weights(resumed.checkpoint_path, "best_model"), weights(reference.checkpoint_path, "best_model"))
    records = [{k: v for k, v in r.items() if k not in ("examples_per_s", "elapsed_s", "epoch_s")}
               for r in read_metrics(resumed.metrics_path)]
    want = [{k: v for k, v in r.items() if k not in ("examples_per_s", "elapsed_s", "epoch_s")}
            for r in read_metrics(reference.metrics_path)]
    assert records == want
    steps = [r for r in want if r["kind"] == "step"]
    # each step record holds the multiplier of its interval's last update (global step - 1)
    assert [r["beta_scale"] for r in steps] == [beta_scale(config.train, r["global_step"] - 1) for r in steps]
    assert steps[0]["beta_scale"] == 0.6 and steps[0]["lr"] == 0.002
    if "train.kl_cycle_steps=7" in controls:
        assert [r["beta_scale"] for r in steps[:3]] == [0.6, 0.0, 0.8]  # updates 3, 7 (a new cycle), 11



def test_resume_may_change_the_optimisation(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    train(tiny_config(data_dir, "train.max_steps=4", "train.grid_examples=0"), out)
    changed = tiny_config(data_dir, "train.max_steps=8", "train.grid_examples=0", "train.lr=0.01",
                          "train.lr_schedule=step", "train.lr_decay_every=10", "train.grad_clip_norm=2")
    with caplog.at_level(logging.WARNING, logger="crmvae"):
        train(changed, out, resume=True)
    assert "train.lr: 0.001 -> 0.01" in caplog.text and "train.grad_clip_norm: None -> 2.0" in caplog.text
    assert "train.max_steps" not in caplog.text
    lrs = [r["lr"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert lrs == [0.001, 0.01]  # the lr of steps 4 (before) and 8 (after: no decay before step 10)
    with pytest.raises(ConfigError, match="train.kl_warmup_steps: run has 0, given 3"):
        train(tiny_config(data_dir, "train.max_steps=8", "train.grid_examples=0", "train.kl_warmup_steps=3"), out, resume=True)


def test_non_finite_advice_is_a_resume_command(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"--resume --set train.lr=1e\+29"):
        train(tiny_config(data_dir, "train.lr=1.0e+30", "train.max_steps=4", "train.grid_examples=0"), tmp_path / "out")


# --------------------------------------------------------------------------------------------
# callbacks and loggers


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_start(self, trainer: Any) -> None:
        self.calls.append("train_start")

    def on_epoch_start(self, trainer: Any) -> None:
        self.calls.append(f"epoch_start {trainer.state.epoch}")

    def on_step_end(self, trainer: Any) -> None:
        self.calls.append(f"step {trainer.state.global_step}")

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        self.calls.append(f"log {record['global_step']}")

    def on_epoch_end(self, trainer: Any) -> None:
        self.calls.append("epoch_end")

    def on_evaluation(self, trainer: Any, record: dict[str, Any]) -> None:
        self.calls.append(f"evaluation {record['epoch']}")

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        self.calls.append(f"checkpoint {trainer.state.global_step}")

    def on_train_end(self, trainer: Any) -> None:
        self.calls.append("train_end")

    def on_grids(self, trainer: Any, paths: list[Path]) -> None:
        self.calls.append(f"grids {len(paths)}")

    def close(self) -> None:
        self.calls.append("close")


def test_callbacks_are_called_in_order(data_dir: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    train(tiny_config(data_dir, "train.epochs=1", "train.checkpoint_every=3"), tmp_path / "out", callbacks=[recorder])
    assert recorder.calls == [
        "train_start", "epoch_start 0", "step 1", "step 2", "step 3", "checkpoint 3", "step 4", "log 4", "step 5",
        "step 6", "checkpoint 6", "step 7", "step 8", "log 8", "epoch_end", "evaluation 1", "checkpoint 8",
        "grids 6", "train_end", "close",  # the built-in grids callback, first, announces its grids
    ]


def test_only_rank_0_builds_callbacks_and_loggers(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    tc = TrainConfig(loggers=["tensorboard"])
    progress = Progress(1, 1, 1, 1, bar=False)
    extra = Recorder()
    main = trainer_module.build_callbacks(tc, tmp_path, DistContext(0, 2, 0).is_main, progress, [extra])
    other = trainer_module.build_callbacks(tc, tmp_path, DistContext(1, 2, 1).is_main, progress, [extra])
    assert any(isinstance(c, TensorBoardLogger) for c in main.callbacks) and main.callbacks[-1] is extra
    assert other.callbacks == [] and not (tmp_path / "tensorboard").exists()
    with pytest.raises(ConfigError, match="train.loggers: unknown train/logger 'nope'"):
        trainer_module.build_callbacks(TrainConfig(loggers=["nope"]), tmp_path, True, progress)


def test_tensorboard_writes_scalars_and_grids(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny_config(data_dir, "train.loggers=[tensorboard]"), tmp_path / "out")
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    records = read_metrics(result.metrics_path)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    loss = events.Scalars("step/loss")
    assert [e.step for e in loss] == [r["global_step"] for r in steps]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    assert [e.value for e in events.Scalars("epoch/test_loss")] == pytest.approx([r["test_loss"] for r in epochs], rel=1e-6)
    assert "step/kl/joint||prior" in events.Tags()["scalars"] and "step/lr" in events.Tags()["scalars"]
    images = events.Tags()["images"]
    assert sorted(images) == sorted(f"grids/{p.stem}" for p in result.grids)
    image = events.Images("grids/prior_samples")[0]
    assert image.step == 16 and (image.width, image.height) == _png_size(result.out_dir / "grids" / "prior_samples.png")
    # the encoded image is the grid itself
    from PIL import Image

    assert Image.open(io.BytesIO(image.encoded_image_string)).size == (image.width, image.height)


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_resuming_a_cosine_that_spans_the_epochs_with_more_epochs_warns(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    train(tiny_config(data_dir, "train.epochs=1", "train.grid_examples=0", "train.lr_schedule=cosine"), out)
    longer = tiny_config(data_dir, "train.epochs=2", "train.grid_examples=0", "train.lr_schedule=cosine")
    with caplog.at_level(logging.WARNING, logger="crmvae"):
        train(longer, out, resume=True)
    assert "train.epochs: 1 -> 2" in caplog.text


def test_every_kth_epoch_is_kept_and_usable(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from crmvae.cli import main

    snapshots = Snapshots()
    config = tiny_config(data_dir, "train.epochs=4", "train.save_every_epochs=2", "train.grid_examples=0")
    with pytest.raises(KeyboardInterrupt):  # killed at the end of epoch 3: epoch 2 is kept already
        train(config, tmp_path / "out", callbacks=[snapshots, KillAt(3 * 8)])
    train(config, tmp_path / "out", resume=True, callbacks=[snapshots])
    kept = tmp_path / "out" / "epochs"
    assert sorted(p.name for p in kept.iterdir()) == ["epoch2.pt", "epoch4.pt"]
    for epoch in (2, 4):
        assert same(weights(kept / f"epoch{epoch}.pt"), snapshots.weights[epoch])
    assert same(weights(kept / "epoch4.pt"), weights(tmp_path / "out" / "model.pt"))
    assert main(["info", str(kept / "epoch2.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_completed"] == 2
    out = tmp_path / "epoch2.json"
    assert main(["evaluate", str(kept / "epoch2.pt"), "--metrics", "similarity", "--n-test", "16", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_test"] == 16


class GridsSeen(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[str]]] = []

    def on_grids(self, trainer: Any, paths: list[Path]) -> None:
        self.calls.append((trainer.state.global_step, [p.relative_to(trainer.out).as_posix() for p in paths]))


def test_grids_every_kth_epoch_leave_training_unchanged(data_dir: Path, tmp_path: Path) -> None:
    plain = train(tiny_config(data_dir, "train.epochs=3"), tmp_path / "plain")
    seen = GridsSeen()
    result = train(tiny_config(data_dir, "train.epochs=3", "train.grids_every_epochs=2"), tmp_path / "grids", callbacks=[seen])
    assert same(weights(result.model_path), weights(plain.model_path))  # private RNG: the same run
    names = ["from_m0.png", "from_m1.png", "from_m2.png", "from_m3.png", "from_m4.png", "prior_samples.png"]
    assert seen.calls == [(16, [f"grids/epoch2/{n}" for n in names]), (24, [f"grids/{n}" for n in names])]
    assert [p.name for p in result.grids] == names


def test_drop_last_leaves_out_the_short_batch(data_dir: Path, tmp_path: Path) -> None:
    """256 training examples in batches of 48: five full batches and one of 16, or five."""
    kept = train(tiny_config(data_dir, "train.batch_size=48", "train.grid_examples=0"), tmp_path / "kept")
    dropped = train(tiny_config(data_dir, "train.batch_size=48", "train.drop_last=true", "train.grid_examples=0"),
                    tmp_path / "dropped")
    assert (kept.global_step, dropped.global_step) == (12, 10)
    summaries = [json.loads(r.summary_path.read_text()) for r in (kept, dropped)]
    assert [s["examples_seen"] for s in summaries] == [512, 480]
    with pytest.raises(ConfigError, match="train.drop_last with train.batch_size=300 leaves no batch of the 256"):
        train(tiny_config(data_dir, "train.batch_size=300", "train.drop_last=true"), tmp_path / "none")


def test_eval_batch_size_is_the_batch_of_the_test_and_validation_losses(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bool, int]] = []
    real = trainer_module.evaluate

    def evaluate(model: Any, dataset: Any, batch_size: int, *args: Any) -> dict[str, float]:
        seen.append((dataset.name.endswith("(validation)"), batch_size))
        return real(model, dataset, batch_size, *args)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    train(tiny_config(data_dir, "train.epochs=1", "train.validation_size=32", "train.eval_batch_size=64",
                      "train.grid_examples=0"), tmp_path / "out")
    assert sorted(seen) == [(False, 64), (True, 64)]  # the test loss and the validation loss
