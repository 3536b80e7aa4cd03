"""Cross-coherence and joint coherence (Shi et al. 2019, Sutter et al. 2021).

Cross-coherence of target t given a subset S (t not in S): draw one reparameterised
``z ~ q(z | X_S)``, decode t (the likelihood mean), classify it, and score the prediction against
the example's label; the figure is the mean over test examples. For a batch every modality is
encoded once, the posteriors of all proper subsets are formed together, and each target is
decoded in one call over all the subsets that lack it (:func:`cross_generation_scores`, which
serves any per-example score, e.g. the text distance of :mod:`crmvae.evaluation.text`).

Joint coherence: ``z ~ N(0, I)`` (or from another latent sampler, :mod:`crmvae.samplers`), decode
every modality, the fraction of samples on which all classifiers predict the same label. A
decoder that turns every latent into the same class's look-alike is jointly coherent without
generating anything: :class:`JointCoherence` also counts the labels the agreeing samples got, and
their effective number of classes tells the two apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.base import Batch
from ..model import MultimodalVAE
from ..samplers import LatentSampler, PriorSampler
from .latents import mean_by_size, proper_subsets, subset_names, subset_posteriors

#: ``(generated [N, ...], labels [N]) -> {metric: per-example score float [N]}``.
Scorer = Callable[[Tensor, Tensor], dict[str, Tensor]]
#: Model inputs ``[N, ...]`` -> predicted labels ``int64 [N]``.
Predictor = Callable[[Tensor], Tensor]


def accuracy_scorer(predict: Predictor) -> Scorer:
    """Scores ``{"correct": 1.0 where predict(x) == label}``."""
    return lambda generated, labels: {"correct": (predict(generated) == labels).float()}


@torch.no_grad()
def cross_generation_scores(
    model: MultimodalVAE, batches: Iterable[Batch], scorers: Mapping[str, Scorer], use_mean: bool = False,
    truth: Callable[[Batch], Tensor] = lambda batch: batch.labels,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean per-example scores ``{target: {"m0,m1": {metric: mean}}}`` of every target in
    ``scorers`` generated from every non-empty proper subset of the modalities that lacks it.

    ``z`` is one posterior sample per (subset, example), or the posterior mean with ``use_mean``.
    Scorers compare with ``truth(batch)`` (default the labels, ``[B]``; or e.g. attributes ``[B, A]``).
    """
    names = model.modality_names
    subsets = proper_subsets(len(names))
    keys = subset_names(subsets, names)
    rows = {t: (subsets[:, names.index(t)] == 0).nonzero().flatten() for t in scorers}
    sums: dict[str, dict[str, Tensor]] = {t: {} for t in scorers}
    count = 0
    device = next(model.parameters()).device
    for batch in batches:
        batch = batch.to(device)
        posts = subset_posteriors(model, batch.data, batch.mask, subsets)
        z = posts.mean() if use_mean else posts.sample()  # [K, B, D]
        n = z.shape[1]
        target = truth(batch)
        for t, scorer in scorers.items():
            picked = z[rows[t].to(device)]  # [K_t, B, D]
            generated = model.likelihoods[t].mean(model.decode_params(t, picked))
            scores = scorer(generated.flatten(0, 1), target.repeat(picked.shape[0], *[1] * (target.ndim - 1)))
            for metric, value in scores.items():
                total = value.float().reshape(picked.shape[0], n).sum(1).cpu()
                sums[t][metric] = sums[t].get(metric, 0) + total
        count += n
    return {
        t: {keys[int(k)]: {metric: float(v[i]) / count for metric, v in sums[t].items()} for i, k in enumerate(rows[t])}
        for t in scorers
    }


def score_table(scores: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str) -> dict[str, Any]:
    """``{"table": {target: {subset: value}}, "by_size": {k: mean over subsets of size k and their
    missing targets}}`` of one metric of :func:`cross_generation_scores`."""
    table = {t: {s: values[metric] for s, values in per_subset.items()} for t, per_subset in scores.items()}
    return {"table": table, "by_size": mean_by_size((s, v) for per in table.values() for s, v in per.items())}


def cross_coherence(
    model: MultimodalVAE, batches: Iterable[Batch], classifiers: Mapping[str, Predictor], use_mean: bool = False
) -> dict[str, Any]:
    """Cross-coherence table and by-size means (see :func:`score_table`) for the targets that
    have a classifier."""
    scores = cross_generation_scores(model, batches, {t: accuracy_scorer(c) for t, c in classifiers.items()}, use_mean)
    return score_table(scores, "correct")


@dataclass(frozen=True)
class JointCoherence:
    """Joint coherence and the labels of the samples it counts.

    ``fraction``: the share of the unconditional samples on which every classifier predicts the
    same label; ``agreed_labels[c]``: how many of them agreed on class ``c``.
    """

    fraction: float
    agreed_labels: tuple[int, ...]

    @property
    def effective_classes(self) -> float:
        """``exp(H(p))`` of the agreed labels' distribution ``p``: K for K equally frequent classes,
        1 when every agreeing sample has the same label (0 when none agree)."""
        total = sum(self.agreed_labels)
        if total == 0:
            return 0.0
        return math.exp(-sum(c / total * math.log(c / total) for c in self.agreed_labels if c))

    @property
    def majority_share(self) -> float:
        """The most common agreed label's share of the agreeing samples (0 when none agree)."""
        total = sum(self.agreed_labels)
        return max(self.agreed_labels) / total if total else 0.0

    def labels_result(self) -> dict[str, Any]:
        """The label summary as an evaluation result entry."""
        return {"effective_classes": self.effective_classes, "majority_share": self.majority_share,
                "agreed": list(self.agreed_labels)}


@torch.no_grad()
def joint_coherence(
    model: MultimodalVAE, classifiers: Mapping[str, Predictor], n: int, batch_size: int = 256,
    generator: torch.Generator | None = None, sampler: LatentSampler | None = None,
) -> JointCoherence:
    """Of ``n`` latents from ``sampler`` (default: the prior ``N(0, I)``), the fraction whose
    decodings all classifiers label alike, and how often each label was the agreed one."""
    sampler = sampler or PriorSampler(model.latent_dim)
    device = next(model.parameters()).device
    agreed: list[Tensor] = []
    for start in range(0, n, batch_size):
        z = sampler.sample(min(batch_size, n - start), generator=generator, device=device)
        samples = model.decode(z, targets=list(classifiers))
        predictions = torch.stack([classifiers[m](samples[m]) for m in classifiers])
        agreed.append(predictions[0][(predictions == predictions[0]).all(0)].cpu())
    labels = torch.cat(agreed)
    classes = max([getattr(c, "num_classes", 0) for c in classifiers.values()] + [int(labels.max()) + 1 if len(labels) else 0])
    return JointCoherence(len(labels) / n, tuple(int(c) for c in torch.bincount(labels, minlength=classes)))
