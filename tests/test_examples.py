"""Every script under examples/ runs end to end, at a tiny size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == ["compare_objectives", "custom_objective", "own_data"]


def test_own_data_with_missing_modalities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load("own_data").main(["--out", str(tmp_path), "--epochs", "1", "--train-size", "64"])
    out = capsys.readouterr().out
    assert "image generated from the code alone" in out
    assert (tmp_path / "run" / "model.pt").is_file()


def test_compare_two_objectives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load("compare_objectives").main(["--out", str(tmp_path), "--epochs", "1", "--train-size", "64", "--n-test", "32"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("crmvae ") for line in lines) and any(line.startswith("mvae ") for line in lines)


def test_custom_objective(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load("custom_objective").main(["--out", str(tmp_path), "--epochs", "1", "--train-size", "64"])
    assert "joint_elbo: 1 steps" in capsys.readouterr().out
