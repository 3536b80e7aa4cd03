"""benchmarks/gpu_study.py at a tiny size on the CPU: a recorded study stage and its archive."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_study.py"


def test_gpu_study_script_records_and_packs_a_tiny_stage(data_dir: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, archive = tmp_path / "study", tmp_path / "study.tar.gz"
    budget = ["data.params.source=digits", "data.train_size=64", "data.test_size=32", f"data.data_dir={data_dir}",
              "model.latent_dim=8", "train.batch_size=32", "train.grid_examples=2", "train.progress=false",
              "train.threads=1"]
    args = ["--device", "cpu", "--precision", "fp32", "--no-tests", "--snapshots", "1,2", "--metrics", "similarity",
            "--snapshot-metrics", "similarity", "--n-test", "32", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
            "--out-archive", str(archive), *(a for b in budget for a in ("--budget", b))]
    assert module.main(args) == 0
    record = json.loads((out / "records" / "crmvae" / "seed0" / "epoch2.json").read_text())
    assert record["run_config"]["train"]["precision"] == "fp32" and record["run_config"]["train"]["epochs"] == 2
    assert "cosine_similarity_gap" in record["result"] and (out / "report.md").is_file()
    with tarfile.open(archive) as packed:
        names = packed.getnames()
    assert any(n.endswith("records/crmvae/seed0/epoch1.json") for n in names)
