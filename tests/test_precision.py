"""bf16 autocast changes the loss of every objective by well under 0.1% on a fixed batch."""

import pytest
import torch

from crmvae.config import ModalityConfig, ModelConfig
from crmvae.model import MultimodalVAE
from crmvae.objectives import OBJECTIVES
from crmvae.training.trainer import has_fast_bf16, resolve_precision


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_bf16_autocast_loss_is_close_to_fp32(objective: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig([ModalityConfig(f"m{i}", [3, 28, 28]) for i in range(3)], latent_dim=16, objective=objective)
    model = MultimodalVAE(config)
    data = {f"m{i}": torch.rand(16, 3, 28, 28) for i in range(3)}
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)  # the same latent samples in both passes
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            losses[precision] = model.loss(data).loss.float()
    assert losses["bf16"].dtype == torch.float32
    assert abs(losses["bf16"] - losses["fp32"]) / losses["fp32"].abs() < 1e-3  # measured: about 5e-5 for every objective
    assert losses["bf16"] != losses["fp32"]  # autocast really changed the arithmetic


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    for amx, avx512_bf16, expected in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert has_fast_bf16(cpu) == (expected == "bf16")
        assert resolve_precision("auto", cpu) == expected


def test_auto_is_a_valid_training_and_evaluation_precision() -> None:
    from crmvae.evaluation.evaluate import EvalConfig
    from crmvae.presets import build_run_config

    assert build_run_config("polymnist", "crmvae", "cpu-short", ["train.precision=auto"]).train.precision == "auto"
    assert EvalConfig(precision="auto", fid_precision="auto").precision == "auto"
