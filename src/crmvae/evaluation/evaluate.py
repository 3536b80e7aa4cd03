"""Evaluate a trained model with the paper's metrics: one call, one JSON-friendly dict.

:func:`evaluate_model` runs the requested metrics that apply to the dataset: cross- and joint
coherence, text edit distance and latent probes need labels; cosine similarity is the
label-free alternative; attribute coherence needs a text modality that states attributes (the
dataset's ``attribute_parsers``); FID needs image modalities; importance-sampled log-likelihoods
(:mod:`crmvae.evaluation.likelihood`) run only when asked for. The result's top-level keys
(absent when a metric did not run)::

    {"n_test", "classifier_accuracy", "classifiers", "cross_coherence", "attribute_coherence", "joint_coherence",
     "joint_coherence_labels",
     "text", "fid", "probes", "cosine_similarity", "cosine_similarity_mismatched",
     "cosine_similarity_gap", "latent_usage", "likelihood", "sampler", "seconds"}

Joint coherence and the unconditional FID decode latents from ``EvalConfig.sampler``: the prior,
or a density fitted to the aggregate posterior on the training split (:mod:`crmvae.samplers`);
the result then says which, under ``"sampler"``.

Coherence scores with the dataset's cached classifiers (trained on first use), or with the ones
``EvalConfig.classifiers`` names (a file of :func:`~crmvae.evaluation.classifiers.export_classifiers`),
or with networks passed to :func:`evaluate_model`; the latter two are scored on the full test
split first, that accuracy is checked against the threshold, and ``"classifiers"`` says where
they came from.

``similarity`` also measures the latent usage (:mod:`crmvae.evaluation.usage`): KL to the prior
and active units of each unimodal posterior and of the joint one.

Latent samples come from a private RNG seeded with ``EvalConfig.seed``, so results are
deterministic and the global RNG is untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..checkpoint import SAFETENSORS_FILE, is_safetensors_export, load_model, read_checkpoint
from ..config import (
    DataConfig,
    RunConfig,
    check_minimums,
    from_dict,
    load_mapping,
    merge_values,
    missing_keys,
    warn_missing_keys,
)
from ..data import MultimodalDataset, load_dataset
from ..data import text as text_data
from ..errors import ConfigError, DataError
from ..model import MultimodalVAE
from ..samplers import LatentSampler, SamplerConfig, fit_sampler
from ..seeding import private_rng
from ..training import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    autocast,
    check_dataset,
    resolve_device,
    resolve_precision,
)
from ..training.progress import progress_bar, write_line
from .attributes import (
    attribute_scorer,
    majority_baseline,
    majority_rates,
    per_attribute_accuracy,
)
from .classifiers import (
    DEFAULT_THRESHOLDS,
    Classifier,
    ClassifierConfig,
    check_classifiers,
    classifier_accuracy,
    classifier_threshold,
    load_classifiers,
    load_or_train_classifiers,
)
from .coherence import (
    Scorer,
    accuracy_scorer,
    cross_generation_scores,
    joint_coherence,
    score_table,
)
from .fid import (
    FeatureExtractor,
    cached_real_statistics,
    check_image_modalities,
    load_inception,
    model_fid,
)
from .fitted_samplers import load_or_fit_sampler
from .likelihood import importance_log_likelihoods, likelihood_summary
from .probes import latent_probes
from .similarity import latent_cosine_similarity
from .text import DIGIT_WORDS, digit_word, text_scorer
from .usage import latent_usage

log = logging.getLogger(__name__)

METRICS = ("coherence", "text", "attributes", "fid", "probes", "similarity", "likelihood")
#: Metrics that need class labels.
LABELLED = frozenset({"coherence", "text", "probes"})
#: The result entry that each metric writes.
METRIC_RESULTS = {"coherence": "cross_coherence", "text": "text", "attributes": "attribute_coherence", "fid": "fid",
                  "probes": "probes", "similarity": "cosine_similarity", "likelihood": "likelihood"}


def metrics_in(result: Mapping[str, Any]) -> list[str]:
    """The metrics that ran to make ``result`` (an :func:`evaluate_model` dict), in :data:`METRICS` order."""
    return [m for m in METRICS if METRIC_RESULTS[m] in result]


@dataclass
class EvalConfig:
    """Evaluation settings.

    ``metrics`` None runs every metric that applies (labels: coherence, text, fid, probes; no
    labels: similarity, fid; attributes where a text states them; never likelihood, which costs
    ``2^M - 1`` subsets x K latents x M decodings per example). ``threads`` sets torch's CPU threads during the call (None: as
    is). ``n_test`` takes the first test examples (None: all). FID uses
    ``fid_samples`` generated and real images per set (few samples bias it upward), for the image
    modalities ``fid_modalities`` (None: the first one). ``fid_precision="auto"`` runs the Inception
    network under bf16 autocast where bf16 is fast (CUDA; CPUs with AMX or AVX512-BF16) and in
    fp32 elsewhere, where bf16 is emulated and slower than fp32. ``classifier_thresholds`` maps a
    dataset name (or ``"default"``) to the minimum recorded test accuracy of its classifiers.
    ``likelihood`` estimates ``log p(X)`` and ``log p(x_m | X_S)`` with ``likelihood_samples``
    importance samples (K) on the first ``likelihood_n_test`` evaluated examples that have every
    modality (None: all), decoding ``likelihood_batch_size`` latents per call. ``sampler``
    chooses the latents of joint coherence and the unconditional FID (default: the prior).
    ``classifiers`` is a classifier file (``crmvae data classifiers``) that coherence uses instead
    of the dataset's cached classifiers.
    """

    metrics: list[str] | None = None
    n_test: int | None = 1000
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    use_mean: bool = False
    fid_samples: int = 1000
    fid_modalities: list[str] | None = None
    fid_batch_size: int = 50
    fid_precision: Literal["fp32", "bf16", "auto"] = "auto"
    fid_channels_last: bool = True
    probe_train_size: int = 500
    likelihood_samples: int = 100
    likelihood_n_test: int | None = 100
    likelihood_batch_size: int = 1024
    classifier_thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    classifiers: str | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        check_minimums("eval.", self, {
            "batch_size": 1, "fid_batch_size": 1, "likelihood_samples": 1, "likelihood_batch_size": 1,
            "fid_samples": 2, "probe_train_size": 2, "threads": 1, "n_test": 1, "likelihood_n_test": 1,
        })
        self.classifier.__post_init__()
        self.sampler.__post_init__()


def resolve_metrics(config: EvalConfig, labelled: bool, attribute_texts: bool = False) -> list[str]:
    """The metrics to run: ``config.metrics`` checked, or the defaults for (un)labelled data (and
    ``attributes`` where a text modality states attributes). Metrics that need labels are
    dropped (with a warning) for unlabelled data, ``attributes`` where no text states them."""
    if config.metrics is None:
        defaults = ["coherence", "text", "fid", "probes"] if labelled else ["similarity", "fid"]
        return defaults + ["attributes"] * attribute_texts
    unknown = sorted(set(config.metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; available: {list(METRICS)}")
    metrics = list(config.metrics)
    for needed, available, reason in ((LABELLED, labelled, "the dataset has no labels"),
                                      ({"attributes"}, attribute_texts, "no text modality of the dataset states attributes")):
        skipped = sorted(needed & set(metrics)) if not available else []
        if skipped:
            log.warning("%s: skipping %s", reason, skipped)
            metrics = [m for m in metrics if m not in skipped]
    return metrics


@contextmanager
def _timed(seconds: dict[str, float], name: str, announce: bool) -> Iterator[None]:
    """Record the block's wall time as ``seconds[name]``; with ``announce``, a line on stderr."""
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 3)
    if announce:
        write_line(f"evaluate: {name} done in {seconds[name]:.1f} s")


def _text_scorers(model: MultimodalVAE, test: MultimodalDataset) -> dict[str, Scorer]:
    """Edit-distance scorers for token modalities over the 71-symbol alphabet with digit labels."""
    assert test.labels is not None
    if int(test.labels.max()) >= len(DIGIT_WORDS):
        return {}
    return {
        m: text_scorer(text_data.decode_tokens, digit_word)
        for m, spec in test.specs.items()
        if spec.kind == "tokens" and spec.vocab_size == text_data.VOCAB_SIZE and m in model.modality_names
    }


def evaluate_model(model: MultimodalVAE, data_cfg: DataConfig, config: EvalConfig | None = None,
                   classifiers: Mapping[str, nn.Module | Classifier] | None = None) -> dict[str, Any]:
    """Run the metrics of ``config`` on ``model`` with the test split of ``data_cfg``'s dataset
    (``data_cfg.train_size``/``test_size`` are ignored: ``config.n_test`` chooses the examples).

    ``classifiers`` (one per modality: a network mapping a model input of the modality to class
    logits, or a :class:`Classifier`) replaces the dataset's classifiers for coherence."""
    config = config or EvalConfig()
    config.__post_init__()  # fields may have been set after the configuration was built
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _evaluate(model, data_cfg, config, classifiers)
    finally:
        torch.set_num_threads(threads)


def _evaluate(model: MultimodalVAE, data_cfg: DataConfig, config: EvalConfig,
              given: Mapping[str, nn.Module | Classifier] | None) -> dict[str, Any]:
    device = resolve_device(config.device)
    model = model.to(device).eval()
    data_cfg = replace(data_cfg, train_size=None, test_size=None)
    test_full = load_dataset(data_cfg, "test")
    check_dataset(model.config, test_full)
    test = test_full if config.n_test is None else test_full.subset(slice(0, min(config.n_test, len(test_full))))
    metrics = resolve_metrics(config, test.labels is not None, bool(test.attribute_parsers))
    results: dict[str, Any] = {"n_test": len(test)}
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def batches(dataset: MultimodalDataset, what: str) -> Any:
        return progress_bar(dataset.batches(config.batch_size), total=dataset.num_batches(config.batch_size),
                            desc=what, enabled=config.progress)

    with private_rng(config.seed, device), autocast(device, config.precision):
        sampler = _sampler(model, data_cfg, config, metrics, seconds)
        if sampler.name != "prior":
            results["sampler"] = sampler.describe()
        scorers: dict[str, Scorer] = {}
        if "coherence" in metrics:
            with _timed(seconds, "classifiers", config.progress):
                classifiers, source = _coherence_classifiers(data_cfg, test_full, config, given)
            if source != "cache":
                results["classifiers"] = source
            check_classifiers(classifiers, classifier_threshold(data_cfg.dataset, config.classifier_thresholds), data_cfg.dataset)
            for c in classifiers.values():
                c.net.to(device)
            results["classifier_accuracy"] = {m: c.test_accuracy for m, c in classifiers.items()}
            scorers = {m: accuracy_scorer(c) for m, c in classifiers.items()}
        texts = _text_scorers(model, test) if "text" in metrics else {}
        if len(model.modality_names) > 1 and (scorers or texts):
            combined = {m: _merge(scorers.get(m), texts.get(m)) for m in {**scorers, **texts}}
            with _timed(seconds, "cross_generation", config.progress):
                scores = cross_generation_scores(model, batches(test, "coherence"), combined, config.use_mean)
            if scorers:
                results["cross_coherence"] = score_table({m: scores[m] for m in scorers}, "correct")
            if texts:
                results["text"] = {m: _text_summary(scores[m]) for m in texts}
        if "attributes" in metrics and len(model.modality_names) > 1:
            with _timed(seconds, "attributes", config.progress):
                results["attribute_coherence"] = _attribute_coherence(model, test, batches(test, "attributes"), config.use_mean)
        if "coherence" in metrics:
            with _timed(seconds, "joint_coherence", config.progress):
                joint = joint_coherence(model, classifiers, len(test), config.batch_size, sampler=sampler)
                results["joint_coherence"] = joint.fraction
                results["joint_coherence_labels"] = joint.labels_result()
        if "fid" in metrics:
            with _timed(seconds, "fid", config.progress):
                results["fid"] = _fid(model, data_cfg, test_full, config, device, sampler)
        if "probes" in metrics:
            with _timed(seconds, "probes", config.progress):
                results["probes"] = _probes(model, data_cfg, test, config, batches)
        if "similarity" in metrics:
            with _timed(seconds, "similarity", config.progress):
                similarity = latent_cosine_similarity(model, batches(test, "similarity"))
                results["cosine_similarity"] = similarity.matched
                results["cosine_similarity_mismatched"] = similarity.mismatched
                results["cosine_similarity_gap"] = {
                    "mean": similarity.gap, "stderr": similarity.gap_stderr, "examples": similarity.examples}
                results["latent_usage"] = latent_usage(model, batches(test, "latent usage")).as_result(
                    ",".join(model.modality_names))
        if "likelihood" in metrics:
            with _timed(seconds, "likelihood", config.progress):
                results["likelihood"] = _likelihood(model, test, config, device)
    seconds["total"] = round(time.perf_counter() - start, 3)
    results["seconds"] = seconds
    return results


def _coherence_classifiers(data_cfg: DataConfig, test: MultimodalDataset, config: EvalConfig,
                           given: Mapping[str, nn.Module | Classifier] | None) -> tuple[dict[str, Classifier], str]:
    """The classifiers of coherence and where they come from: ``given``, else the file
    ``config.classifiers``, else the dataset's cache (``"cache"``). Given and loaded ones get
    their accuracy on ``test``, the full test split, as the cached ones have it."""
    if given is None and config.classifiers is None:
        return load_or_train_classifiers(data_cfg, config.classifier, progress=config.progress), "cache"
    assert test.labels is not None  # coherence runs on labelled data only
    if given is None:
        classifiers, source = load_classifiers(config.classifiers, test.specs), str(config.classifiers)
    else:
        missing = sorted(set(test.specs) - set(given))
        if missing:
            raise ConfigError(f"classifiers were given for {sorted(given)}; coherence needs one for every modality, "
                              f"also {missing}")
        num_classes = int(test.labels.max()) + 1
        classifiers = {m: c if isinstance(c, Classifier) else Classifier(test.specs[m], type(c).__name__, c, num_classes, 0.0)
                       for m, c in given.items() if m in test.specs}
        source = "given"
    for classifier in classifiers.values():
        classifier.test_accuracy = classifier_accuracy(classifier, test)
    return classifiers, source


def _sampler(model: MultimodalVAE, data_cfg: DataConfig, config: EvalConfig, metrics: list[str],
             seconds: dict[str, float]) -> LatentSampler:
    """The latent sampler of the unconditional metrics, fitted on the training split only when
    one of them runs and the sampler needs data."""
    if config.sampler.name == "prior" or not {"coherence", "fid"} & set(metrics):
        return fit_sampler(model, None)
    with _timed(seconds, "sampler", config.progress):
        return load_or_fit_sampler(model, data_cfg, config.sampler,
                                   resolve_precision(config.precision, next(model.parameters()).device))


def _attribute_coherence(model: MultimodalVAE, test: MultimodalDataset, batches: Any, use_mean: bool) -> dict[str, Any]:
    assert test.attributes is not None
    names = test.attribute_names or [str(i) for i in range(test.attributes.shape[1])]
    scorers = {m: attribute_scorer(test.text_decoders[m], parse, names) for m, parse in test.attribute_parsers.items()}
    scores = cross_generation_scores(model, batches, scorers, use_mean, truth=lambda batch: batch.attributes)
    return {
        **score_table(scores, "attributes"),
        "majority_baseline": majority_baseline(test.attributes),
        "per_attribute": {t: {s: per_attribute_accuracy(means, names) for s, means in row.items()} for t, row in scores.items()},
        "per_attribute_majority": majority_rates(test.attributes, names),
    }


def _merge(first: Scorer | None, second: Scorer | None) -> Scorer:
    """One scorer returning the metrics of both (either may be None)."""
    parts = [s for s in (first, second) if s is not None]
    return lambda generated, labels: {k: v for s in parts for k, v in s(generated, labels).items()}


def _text_summary(per_subset: dict[str, dict[str, float]]) -> dict[str, Any]:
    exact = score_table({"t": per_subset}, "exact_match")
    distance = score_table({"t": per_subset}, "distance")
    n = len(per_subset)
    return {
        "exact_match": sum(v["exact_match"] for v in per_subset.values()) / n,
        "mean_distance": sum(v["distance"] for v in per_subset.values()) / n,
        "by_size": exact["by_size"],
        "mean_distance_by_size": distance["by_size"],
    }


def _fid(model: MultimodalVAE, data_cfg: DataConfig, test: MultimodalDataset, config: EvalConfig, device: torch.device,
         sampler: LatentSampler) -> dict[str, Any]:
    images = [m for m, s in model.shapes.items() if len(s) == 3 and s[0] in (1, 3)]
    if config.fid_modalities is None and not images:
        raise ConfigError(f"FID needs an image modality; the model has {dict(model.shapes)}")
    modalities = check_image_modalities(model, config.fid_modalities or images[:1])
    precision = resolve_precision(config.fid_precision, device)
    extractor = FeatureExtractor(load_inception(), batch_size=config.fid_batch_size, precision=precision,
                                 channels_last=config.fid_channels_last, device=device)
    n = min(config.fid_samples, len(test))

    def real(modality: str) -> Any:
        return cached_real_statistics(data_cfg, "test", test, extractor, modality, n, config.progress)

    return model_fid(model, test, extractor, real, modalities, n, config.batch_size, config.progress, sampler=sampler)


def _probes(model: MultimodalVAE, data_cfg: DataConfig, test: MultimodalDataset, config: EvalConfig, batches: Any) -> dict[str, Any]:
    train = load_dataset(data_cfg, "train")
    generator = torch.Generator().manual_seed(config.seed)
    chosen = torch.randperm(len(train), generator=generator)[: config.probe_train_size].sort().values
    return latent_probes(model, batches(train.subset(chosen), "probes train"), batches(test, "probes test"))


def _likelihood(model: MultimodalVAE, test: MultimodalDataset, config: EvalConfig, device: torch.device) -> dict[str, Any]:
    """``{"samples": K, "n_test": examples, "joint": nats, "conditional": {"table", "by_size"}}``
    (see :func:`likelihood_summary`), latents from a generator seeded with ``config.seed``.
    Batches of about ``likelihood_batch_size / K`` examples decode K latents each per call (K in
    chunks beyond ``likelihood_batch_size``)."""
    complete = test.mask.all(1).nonzero().flatten()[: config.likelihood_n_test]
    if not len(complete):
        raise DataError("likelihood: no evaluated test example has every modality")
    examples = test.subset(complete)
    per_batch = max(1, min(config.batch_size, config.likelihood_batch_size // config.likelihood_samples))
    batches = progress_bar(examples.batches(per_batch), total=examples.num_batches(per_batch), desc="likelihood",
                           enabled=config.progress)
    generator = torch.Generator(device).manual_seed(config.seed)
    estimates = importance_log_likelihoods(model, batches, config.likelihood_samples,
                                           max(1, config.likelihood_batch_size // per_batch), generator)
    return {"samples": config.likelihood_samples, "n_test": len(examples),
            **likelihood_summary(estimates, model.modality_names)}


# --------------------------------------------------------------------------------------------
# checkpoints and run directories


def resolve_checkpoint(path: str | Path) -> Path:
    """A model file: ``path`` itself, or a run directory's ``model.pt`` (else ``checkpoint.pt``), or
    an export folder's ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, CHECKPOINT_FILE, SAFETENSORS_FILE):
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"folder {path} holds none of {MODEL_FILE}, {CHECKPOINT_FILE} or {SAFETENSORS_FILE}")
    return path


_NAME_THE_DATA = "write its data section there, e.g. 'data: {dataset: polymnist}' (generate also takes --dataset)"


def run_data_config(checkpoint: Path) -> DataConfig:
    """The data configuration of the run that wrote ``checkpoint``: the ``data`` section of the
    ``config.yaml`` beside it (a run's or an export's), else the run configuration stored in the
    checkpoint. Keys the section lacks are taken from the stored configuration, else the defaults,
    with a warning that names them."""
    run_file = checkpoint.parent / CONFIG_FILE
    if run_file.is_file():
        values = load_mapping(run_file)
        if "data" not in values:
            raise ConfigError(f"{run_file} has no data section (a model exported without its run); {_NAME_THE_DATA}")
        stored = None
        if missing_keys(DataConfig, values["data"]) and not is_safetensors_export(checkpoint):
            stored = (read_checkpoint(checkpoint).get("run_config") or {}).get("data")
        source = "their defaults" if stored is None else f"the values stored in {checkpoint}"
        warn_missing_keys(DataConfig, values["data"], str(run_file), prefix="data.", source=source)
        data = values["data"] if stored is None else merge_values(stored, values["data"])
        return from_dict(RunConfig, {**values, "data": data}, where=str(run_file)).data
    stored = read_checkpoint(checkpoint).get("run_config")
    if stored is None:
        raise ConfigError(f"no {run_file} and no run configuration in {checkpoint}; {_NAME_THE_DATA}")
    return from_dict(RunConfig, stored, where=str(checkpoint)).data


def evaluate_checkpoint(path: str | Path, config: EvalConfig | None = None, data_cfg: DataConfig | None = None) -> dict[str, Any]:
    """:func:`evaluate_model` on the model in ``path`` (a model/checkpoint file or a run directory),
    with the run's own data configuration unless ``data_cfg`` is given."""
    config = config or EvalConfig()
    checkpoint = resolve_checkpoint(path)
    model = load_model(checkpoint, map_location=resolve_device(config.device))
    return evaluate_model(model, data_cfg or run_data_config(checkpoint), config)


def format_results(results: dict[str, Any]) -> str:
    """A compact text table of :func:`evaluate_model`'s result."""
    lines = [f"test examples: {results['n_test']}"]
    sampler = results.get("sampler", {}).get("name", "prior")
    source = "" if sampler == "prior" else f" ({sampler} sampler)"
    if sampler != "prior":
        lines.append(f"{sampler} sampler: " + ", ".join(f"{k} {v}" for k, v in results["sampler"].items() if k != "name"))
    if "classifier_accuracy" in results:
        origin = f" ({results['classifiers']} classifiers)" if "classifiers" in results else ""
        lines.append(f"classifier accuracy{origin}: " + "  ".join(f"{m} {v:.4f}" for m, v in results["classifier_accuracy"].items()))
    if "cross_coherence" in results:
        by_size = results["cross_coherence"]["by_size"]
        lines.append("cross-coherence by subset size: " + "  ".join(f"{k}: {v:.4f}" for k, v in by_size.items()))
        for target, row in results["cross_coherence"]["table"].items():
            lines.append(f"  -> {target}: " + "  ".join(f"{s} {v:.3f}" for s, v in row.items()))
    if "joint_coherence" in results:
        labels = results.get("joint_coherence_labels")
        spread = (f" (the agreeing samples span {labels['effective_classes']:.1f} effective classes, the commonest "
                  f"{labels['majority_share']:.0%})" if labels and results["joint_coherence"] > 0 else "")
        lines.append(f"joint coherence{source}: {results['joint_coherence']:.4f}{spread}")
    for m, entry in results.get("text", {}).items():
        lines.append(f"text {m}: exact match {entry['exact_match']:.4f}, mean Levenshtein distance {entry['mean_distance']:.3f}")
    if "fid" in results:
        fid = results["fid"]
        lines.append(f"FID ({fid['samples']} samples; few samples bias FID upward):")
        for m, value in fid["unconditional"].items():
            sizes = "  ".join(f"{k}: {v:.2f}" for k, v in fid["by_size"].get(m, {}).items())
            lines.append(f"  {m}: {sampler} {value:.2f}   given subsets of size {sizes}")
    if "probes" in results:
        probes = results["probes"]
        lines.append(f"latent probes ({probes['train_examples']} training examples) by subset size: "
                     + "  ".join(f"{k}: {v:.4f}" for k, v in probes["by_size"].items()))
    if "attribute_coherence" in results:
        attributes = results["attribute_coherence"]
        lines.append("attribute coherence (generated text) by subset size: "
                     + "  ".join(f"{k}: {v:.4f}" for k, v in attributes["by_size"].items())
                     + f"   (majority baseline {attributes['majority_baseline']:.4f})")
        majority = attributes["per_attribute_majority"]
        for target, row in attributes["per_attribute"].items():
            for subset, accuracy in row.items():
                lines.append(f"  -> {target} from {subset}, per attribute (majority rate): "
                             + "  ".join(f"{a} {v:.2f} ({majority[a]:.2f})" for a, v in accuracy.items()))
    if "cosine_similarity" in results:
        gap = results["cosine_similarity_gap"]
        lines.append(f"latent cosine similarity: {results['cosine_similarity']:.4f} "
                     f"(between different examples: {results['cosine_similarity_mismatched']:.4f}; "
                     f"paired difference {gap['mean']:+.4f} +- {gap['stderr']:.4f} s.e. over {gap['examples']} examples)")
    if "latent_usage" in results:
        usage = results["latent_usage"]
        lines.append("latent usage, KL(q(z|x_S) || p(z)) nats / active units: "
                     + "  ".join(f"{s}: {usage['kl_to_prior'].get(s, float('nan')):.1f} / {u}"
                                 for s, u in usage["active_units"].items()))
    if "likelihood" in results:
        lik = results["likelihood"]
        lines.append(f"log-likelihood ({lik['samples']} importance samples, {lik['n_test']} examples, nats per example): "
                     f"joint {lik['joint']:.2f}; conditional by subset size: "
                     + "  ".join(f"{k}: {v:.2f}" for k, v in lik["conditional"]["by_size"].items()))
    lines.append("seconds: " + "  ".join(f"{k} {v:.1f}" for k, v in results["seconds"].items()))
    return "\n".join(lines)
