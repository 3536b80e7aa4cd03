"""Latent linear probes: how linearly the label can be read from ``q(z | X_S)``'s mean.

For every non-empty subset S (the full set included): fit a logistic regression on the
posterior means of ``n_train`` training examples, report its accuracy on the posterior means of
the test examples; plus the mean accuracy by subset size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from ..data.base import Batch
from ..distributions import all_subsets
from ..model import MultimodalVAE
from .latents import mean_by_size, subset_names, subset_posteriors


@torch.no_grad()
def subset_means(model: MultimodalVAE, batches: Iterable[Batch], subsets: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior means ``[K, N, D]`` of every subset row for all examples, and the labels ``[N]``."""
    device = next(model.parameters()).device
    means, labels = [], []
    for batch in batches:
        batch = batch.to(device)
        means.append(subset_posteriors(model, batch.data, batch.mask, subsets).mean().float().cpu())
        labels.append(batch.labels.cpu())
    return torch.cat(means, 1), torch.cat(labels)


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0) -> float:
    """Test accuracy of a multinomial logistic regression (L2, C = 1) fitted on ``(train_x, train_y)``.

    Features are standardised with the training examples' mean and standard deviation first: the
    posterior means of different models live on very different scales, and on raw features lbfgs
    needs hundreds of iterations (about 4 s per subset on PolyMNIST) instead of a few dozen.
    """
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    classifier.fit(train_x, train_y)
    return float((classifier.predict(test_x) == test_y).mean())


def latent_probes(
    model: MultimodalVAE, train_batches: Iterable[Batch], test_batches: Iterable[Batch], seed: int = 0
) -> dict[str, Any]:
    """``{"table": {"m0,m1": accuracy}, "by_size": {"k": mean}, "train_examples": n}`` over all
    non-empty subsets; the train batches are the probe's training examples."""
    subsets = all_subsets(len(model.modality_names))
    train_means, train_y = subset_means(model, train_batches, subsets)
    test_means, test_y = subset_means(model, test_batches, subsets)
    table = {
        key: probe_accuracy(train_means[k].numpy(), train_y.numpy(), test_means[k].numpy(), test_y.numpy(), seed)
        for k, key in enumerate(subset_names(subsets, model.modality_names))
    }
    return {"table": table, "by_size": mean_by_size(table.items()), "train_examples": int(train_y.shape[0])}
