"""Export to safetensors + YAML and load back without pickle."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
import yaml

from crmvae.checkpoint import export_safetensors, load_model, save_model
from crmvae.cli import main
from crmvae.config import ModalityConfig, ModelConfig, RunConfig, load_config, to_dict
from crmvae.errors import CheckpointError
from crmvae.model import MultimodalVAE

pytest.importorskip("safetensors")


def tiny_model() -> MultimodalVAE:
    torch.manual_seed(0)
    config = ModelConfig([ModalityConfig("m0", [3, 28, 28]), ModalityConfig("m1", [6], "generic_mlp", "normal", 0.5)],
                         latent_dim=4, objective="mopoe")
    return MultimodalVAE(config).eval()


def outputs(model: MultimodalVAE) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    data = {"m0": torch.rand(2, 3, 28, 28, generator=g), "m1": torch.randn(2, 6, generator=g)}
    with torch.no_grad():
        mu, logvar, _ = model.encode(data)
        return {"mu": mu, "logvar": logvar, **model.decode(model.posterior(data).mean())}


def forbid_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)


def test_export_then_load_gives_identical_outputs_without_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    weights = export_safetensors(model, tmp_path / "export")
    assert weights == tmp_path / "export" / "model.safetensors"
    assert yaml.safe_load((tmp_path / "export" / "config.yaml").read_text()) == {"model": to_dict(model.config)}
    expected = outputs(model)
    forbid_pickle(monkeypatch)
    for path in (tmp_path / "export", weights):
        loaded = load_model(path).eval()
        assert loaded.config == model.config
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
        assert all(torch.equal(v, expected[k]) for k, v in outputs(loaded).items())


def test_cli_exports_a_run_checkpoint_with_its_run_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model().to(memory_format=torch.channels_last)  # strided conv weights, as training saves them
    run = RunConfig(model=model.config)
    run.data.dataset, run.train.epochs = "user", 2
    save_model(model, tmp_path / "run" / "model.pt", run_config=to_dict(run))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    assert f"weights: {tmp_path / 'out' / 'model.safetensors'}" in capsys.readouterr().out
    assert load_config(RunConfig, tmp_path / "out" / "config.yaml") == run  # usable as a run's config.yaml
    expected = outputs(load_model(tmp_path / "run" / "model.pt"))
    assert all(torch.equal(v, expected[k]) for k, v in outputs(load_model(tmp_path / "out")).items())


def test_a_missing_or_mismatched_pair_is_a_checkpoint_error(tmp_path: Path) -> None:
    model = tiny_model()
    weights = export_safetensors(model, tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["model"]["latent_dim"] = 5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError, match="stored weights are unusable"):
        load_model(weights)
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="config.yaml does not exist"):
        load_model(weights)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": to_dict(model.config)}))
    weights.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_model(tmp_path)


def test_without_the_package_the_error_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(CheckpointError, match=r"pip install safetensors"):
        export_safetensors(tiny_model(), tmp_path)


def test_every_command_takes_an_export_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_faults import FAST, user_data

    run, export = tmp_path / "run", tmp_path / "export"
    assert main(["train", "--data", str(user_data(tmp_path / "data")), "--out", str(run), "--epochs", "1", *FAST]) == 0
    assert main(["export", str(run), "--out", str(export)]) == 0
    capsys.readouterr()
    infos = []
    for path in (run / "model.pt", export):
        assert main(["info", str(path), "--json"]) == 0
        infos.append(json.loads(capsys.readouterr().out))
    assert infos[1]["kind"] == "safetensors export" and infos[1]["dataset"] == "user"
    assert {k: infos[1][k] for k in ("objective", "latent_dim", "modalities", "parameters")} == {
        k: infos[0][k] for k in ("objective", "latent_dim", "modalities", "parameters")}
    results = []
    for path in (run / "model.pt", export):
        out = tmp_path / f"{path.name}.json"
        assert main(["evaluate", str(path), "--metrics", "similarity", "--n-test", "8", "--out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[1]["cosine_similarity"] == results[0]["cosine_similarity"]
    assert main(["generate", str(export), "--n", "2", "--out", str(tmp_path / "grids")]) == 0
    assert (tmp_path / "grids" / "from_img.png").is_file()
    assert main(["export", str(export)]) == 2
    assert "is already an export; give a model.pt or checkpoint.pt" in capsys.readouterr().err


def test_an_export_of_a_bare_model_asks_for_its_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_safetensors(tiny_model(), tmp_path / "export")
    for command in (["evaluate", str(tmp_path / "export"), "--metrics", "similarity"],
                    ["generate", str(tmp_path / "export")]):
        assert main(command) == 2
        assert "config.yaml has no data section (a model exported without its run); write its data section" in \
            capsys.readouterr().err
