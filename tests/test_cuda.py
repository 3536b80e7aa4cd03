"""On a CUDA device: training in bf16, the same loss as on the CPU, FID features. Skipped without one
(run them with ``python -m pytest -m cuda``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crmvae.data import load_dataset
from crmvae.evaluation.fid import FeatureExtractor
from crmvae.model import MultimodalVAE
from crmvae.presets import build_run_config
from crmvae.training import train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def tiny(data_dir: Path, *overrides: str):
    return build_run_config("polymnist", "crmvae", "cpu-short", [
        "data.params.source=digits", "data.train_size=256", "data.test_size=64", f"data.data_dir={data_dir}",
        "model.latent_dim=8", "train.batch_size=32", "train.epochs=2", "train.progress=false",
        "train.grid_examples=2", *overrides])


def test_training_on_cuda_in_bf16_lowers_the_loss(data_dir: Path, tmp_path: Path) -> None:
    result = train(tiny(data_dir, "train.device=cuda", "train.precision=bf16"), tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [m["test_loss"] for m in map(json.loads, lines) if "test_loss" in m]
    assert np.isfinite(losses).all() and losses[-1] < losses[0] and result.model_path.is_file()


def test_the_posterior_on_cuda_is_the_posterior_on_the_cpu(data_dir: Path) -> None:
    config = tiny(data_dir)
    torch.manual_seed(0)
    model = MultimodalVAE(config.model).eval()
    batch = load_dataset(config.data, "test").batch(torch.arange(16))
    with torch.no_grad():
        cpu = model.posterior(batch.data, subset=["m0", "m2"]).mean()
        gpu = model.to("cuda").posterior({k: v.cuda() for k, v in batch.data.items()}, subset=["m0", "m2"]).mean()
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-2, atol=1e-3)  # TF32 convolutions on the GPU


def test_feature_network_on_cuda_matches_the_cpu() -> None:
    torch.manual_seed(0)
    net = torch.jit.script(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten()).eval())
    images = torch.rand(6, 3, 12, 12)
    cpu = FeatureExtractor(net, preprocess=lambda x: x, precision="fp32")(images)
    gpu = FeatureExtractor(torch.jit.script(net), preprocess=lambda x: x, precision="fp32",
                           device=torch.device("cuda"))(images)
    assert np.allclose(cpu, gpu, rtol=1e-3, atol=1e-4)
