"""The checklists of CONTRIBUTING.md, each proven from outside the package: a dataset, a
network and an objective registered by user code, then trained a few steps by the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from crmvae import (
    OBJECTIVES,
    PRESETS,
    ConfigError,
    DataConfig,
    ModalityConfig,
    ModalitySpec,
    MultimodalDataset,
    MultimodalVAE,
    available_datasets,
    build_run_config,
    load_dataset,
    load_model,
    register_objective,
    train,
)
from crmvae.data import register_dataset
from crmvae.distributions import kl_standard_normal, reparameterize, subset_poe
from crmvae.nets import NETWORKS, register_network
from crmvae.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput, combine
from crmvae.presets import DATASET_MODALITIES

FAST = ["train.epochs=1", "train.batch_size=16", "train.progress=false", "train.threads=1",
        "train.grid_examples=0", "train.checkpoint_every=1000", "model.latent_dim=4"]


# --------------------------------------------------------------------------------------------
# a dataset: a provider object, registered; presets and modalities for build_run_config


class ToyPairs:
    """Two views of a random class: a noisy one-hot code and a noisy 2x code, both vectors."""

    name = "toy_pairs"
    summary = "two noisy vector views of a class (test)"
    params: dict[str, Any] = {"classes": 3}

    def load(self, cfg: DataConfig, split: str) -> MultimodalDataset:
        g = torch.Generator().manual_seed(cfg.seed + (split == "test"))
        n, k = (96 if split == "train" else 32), cfg.params["classes"]
        labels = torch.randint(0, k, (n,), generator=g)
        code = torch.eye(k)[labels]
        views = {"a": code + 0.1 * torch.randn(n, k, generator=g), "b": 2 * code + 0.1 * torch.randn(n, k, generator=g)}
        specs = [ModalitySpec("a", "vector", (k,)), ModalitySpec("b", "vector", (k,))]
        return MultimodalDataset(views, specs, labels=labels, name=f"toy_pairs/{split}")

    def info(self, cfg: DataConfig) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "modalities": ["a", "b"]}


@pytest.fixture
def toy_dataset(monkeypatch: pytest.MonkeyPatch) -> str:
    if ToyPairs.name not in available_datasets():  # the registry is per process
        register_dataset(ToyPairs())
    modalities = [ModalityConfig(m, [3], "generic_mlp", "normal", 1.0) for m in ("a", "b")]
    monkeypatch.setitem(DATASET_MODALITIES, ToyPairs.name, lambda: modalities)
    monkeypatch.setitem(PRESETS, ToyPairs.name, {"cpu-short": {"train": {"lr": 1e-3}}})
    return ToyPairs.name


def test_a_dataset_registered_from_outside_trains(toy_dataset: str, tmp_path: Path) -> None:
    config = build_run_config(toy_dataset, "crmvae", "cpu-short", FAST)
    result = train(config, tmp_path / "run")
    assert result.global_step == 6 and torch.isfinite(torch.tensor(result.metrics["test_loss"]))
    model = load_model(result.model_path)
    assert model.modality_names == ["a", "b"]
    assert len(load_dataset(DataConfig(toy_dataset, params={"classes": 3}), "test")) == 32
    with pytest.raises(ConfigError, match="unknown key"):
        load_dataset(DataConfig(toy_dataset, params={"colours": 2}), "train")


# --------------------------------------------------------------------------------------------
# a network: a factory returning (encoder, decoder), registered by name


class ToyEncoder(nn.Module):
    def __init__(self, size: int, latent_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(size, 16), nn.ReLU())
        self.mu, self.logvar = nn.Linear(16, latent_dim), nn.Linear(16, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x.flatten(1))
        return self.mu(h), self.logvar(h)


def toy_network(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    size = int(torch.tensor(modality.shape).prod())
    decoder = nn.Sequential(nn.Linear(latent_dim, 16), nn.ReLU(), nn.Linear(16, size), nn.Unflatten(1, tuple(modality.shape)))
    return ToyEncoder(size, latent_dim), decoder


def test_a_network_registered_from_outside_trains(toy_dataset: str, tmp_path: Path) -> None:
    if "toy_mlp" not in NETWORKS:
        register_network("toy_mlp")(toy_network)
    config = build_run_config(toy_dataset, "mvae", "cpu-short", FAST)
    for m in config.model.modalities:
        m.network = "toy_mlp"
    result = train(config, tmp_path / "run")
    model = load_model(result.model_path)
    assert all(m.network == "toy_mlp" for m in model.config.modalities)
    assert any(isinstance(module, ToyEncoder) for module in model.modules())
    generated = model.generate({"a": torch.eye(3)}, subset=["a"], targets=["b"])
    assert generated["b"].shape == (3, 3)


# --------------------------------------------------------------------------------------------
# an objective: a settings dataclass and a loss function, registered by name


@dataclass
class ToyConfig(ObjectiveConfig):
    prior_expert: bool = True


def toy_loss(cfg: ToyConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    everything = ctx.mask.new_ones(1, ctx.num_modalities)
    mu, logvar = subset_poe(ctx.mu, ctx.logvar, everything, ctx.mask, cfg.prior_weight)
    z = reparameterize(mu, logvar)
    terms = {"kl/joint||prior": (cfg.beta, kl_standard_normal(mu, logvar)[0])}
    for m, name in enumerate(ctx.modality_names):
        terms[f"rec/joint/{name}"] = (1.0, -ctx.log_likelihood(m, z)[0])
    return combine(terms)


def test_an_objective_registered_from_outside_trains(toy_dataset: str, tmp_path: Path) -> None:
    if "toy_elbo" not in OBJECTIVES:
        register_objective("toy_elbo", ToyConfig, "joint ELBO (test)")(toy_loss)
    config = build_run_config(toy_dataset, "toy_elbo", "cpu-short", [*FAST, "model.objective_params.beta=0.5"])
    result = train(config, tmp_path / "run")
    assert {"test/kl/joint||prior", "test/rec/joint/a", "test/rec/joint/b"} <= set(result.metrics)
    model = load_model(result.model_path)
    assert model.config.objective == "toy_elbo" and model.config.objective_params["beta"] == 0.5
    post = model.posterior({"b": torch.eye(3)}, subset=["b"])
    assert post.mean().shape == (3, 4)
    with pytest.raises(ConfigError, match="gamma"):  # settings are checked against ToyConfig when built
        build_run_config(toy_dataset, "toy_elbo", "cpu-short", [*FAST, "model.objective_params.gamma=1"])
