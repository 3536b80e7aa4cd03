"""Latent linear probes: how linearly the label can be read from ``q(z | X_S)``'s mean.

For every non-empty subset S (the full set included): fit a logistic regression on the
posterior means of ``n_train`` training examples, report its accuracy on the posterior means of
the test examples; plus the mean accuracy by subset size.

The regression is scikit-learn's ``LogisticRegression()`` (multinomial, L2 with C = 1, intercept
not penalised) on standardised features (each feature z-scored with the training examples'
mean and standard deviation), but all subsets are fitted at once: one full-batch L-BFGS in
float64 over the ``K`` independent problems (:func:`fit_logistic_regressions`). The objective is
strictly convex, so the solution is scikit-learn's; the test checks that the two agree.
Fitting all subsets at once is several times faster than one scikit-learn fit per subset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
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


def standardise(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x - mean) / std`` over the examples axis (-2) with the training statistics; constant
    features get std 1 (as scikit-learn's ``StandardScaler``)."""
    mean = train_x.mean(-2, keepdim=True)
    std = train_x.std(-2, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train_x - mean) / std, (test_x - mean) / std


def fit_logistic_regressions(
    x: Tensor, y: Tensor, num_classes: int, c: float = 1.0, max_iter: int = 1000, tol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Weights ``[K, D, C]`` and intercepts ``[K, C]`` of ``K`` multinomial logistic regressions
    on features ``x`` ``[K, N, D]`` and class indices ``y`` ``[N]``, each minimising (as
    scikit-learn's ``LogisticRegression(C=c)``)

        (1/N) sum_n CE(W^T x_n + b, y_n) + ||W||^2 / (2 c N),

    by one L-BFGS (strong Wolfe line search) on their sum, in float64."""
    x = x.double()
    k, n, d = x.shape
    weight = torch.zeros(k, d, num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, 1, num_classes, dtype=torch.float64, requires_grad=True)
    targets = y.long().expand(k, n)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad()
        logits = torch.baddbmm(bias, x, weight)  # [K, N, C]
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum") / n
        loss = loss + weight.square().sum() / (2.0 * c * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return weight.detach(), bias.detach().squeeze(1)


def probe_accuracies(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> Tensor:
    """Test accuracy ``[K]`` of a logistic regression per feature set: ``train_x`` ``[K, N, D]``,
    ``test_x`` ``[K, M, D]``; classes are those present in ``train_y``."""
    classes, train_index = torch.unique(train_y, return_inverse=True)
    train_x, test_x = standardise(train_x.double(), test_x.double())
    weight, bias = fit_logistic_regressions(train_x, train_index, len(classes))
    predicted = classes[torch.baddbmm(bias[:, None], test_x, weight).argmax(-1)]  # [K, M]
    return (predicted == test_y).double().mean(-1)


def latent_probes(model: MultimodalVAE, train_batches: Iterable[Batch], test_batches: Iterable[Batch]) -> dict[str, Any]:
    """``{"table": {"m0,m1": accuracy}, "by_size": {"k": mean}, "train_examples": n}`` over all
    non-empty subsets; the train batches are the probe's training examples."""
    subsets = all_subsets(len(model.modality_names))
    train_means, train_y = subset_means(model, train_batches, subsets)
    test_means, test_y = subset_means(model, test_batches, subsets)
    accuracies = probe_accuracies(train_means, train_y, test_means, test_y).tolist()
    table = dict(zip(subset_names(subsets, model.modality_names), accuracies, strict=True))
    return {"table": table, "by_size": mean_by_size(table.items()), "train_examples": int(train_y.shape[0])}
