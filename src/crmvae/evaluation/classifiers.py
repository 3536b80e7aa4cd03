"""Coherence classifiers: architectures, training, test accuracy and a verified cache.

One classifier per modality predicts the example's label from a (real or generated) model input:
float images in [0, 1] ``[N, C, H, W]``, token ids ``int64 [N, L]`` or float vectors. The
architecture is picked from the modality's shape (:func:`classifier_for`); the reference ones
follow the coherence classifiers of the reference code (see the evaluation page of the
documentation), and generic fallbacks cover any image size, vector or vocabulary.

Classifiers are trained once per dataset (Adam, seeded) on the full train split, scored on the
full test split, and cached beside the dataset cache as ``classifiers-<dataset>-<key>.pt``
(weights, recorded test accuracy, the dataset's identity; see :mod:`crmvae.evaluation.cache`). Evaluation refuses classifiers below their accuracy threshold.

:func:`export_classifiers` writes them as one file that another machine, or another library,
loads with ``torch.load(weights_only=True)``; :func:`load_classifiers` reads it back, so that
coherence figures from several places are scored by the same classifiers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import atomic_torch_save, load_weights
from ..config import DataConfig, check_minimums
from ..data import MultimodalDataset, load_dataset
from ..data.base import ModalitySpec, to_model_input
from ..errors import CheckpointError, ConfigError, DataError
from ..fileio import TORCH_LOAD_ERRORS, atomic_write, load_error_reason, torch_load
from ..registry import Registry
from ..seeding import private_rng
from ..training.progress import progress_bar
from .cache import cache_file, dataset_identity, read_cached, write_cached

log = logging.getLogger(__name__)

#: Minimum recorded test accuracy per dataset; datasets not listed use ``"default"``.
DEFAULT_THRESHOLDS: dict[str, float] = {"polymnist": 0.95, "translated_polymnist": 0.95, "default": 0.8}
#: Image classifiers per dataset, where the shape alone would pick the wrong one: the reference
#: PolyMNIST net reaches only 0.84-0.92 on digits pasted at random offsets.
DATASET_IMAGE_ARCHITECTURES: dict[str, str] = {"translated_polymnist": "conv_bn_maxpool"}
#: Training epochs per dataset when ``ClassifierConfig.epochs`` is unset; ``"default"`` otherwise.
#: Translated-PolyMNIST's ``conv_bn_maxpool`` passes its 0.95 threshold in 5. MNIST-SVHN-Text's
#: 1.12 M training tuples pair each MNIST and SVHN image about 20 times, so one epoch is about 20
#: passes over the distinct images (12 would take over two hours on a 2-core CPU).
DEFAULT_EPOCHS: dict[str, int] = {"translated_polymnist": 5, "mnist_svhn_text": 1, "default": 12}

ClassifierFactory = Callable[[ModalitySpec, int], nn.Module]
ARCHITECTURES: Registry[ClassifierFactory] = Registry("classifier")
#: Decorator adding a ``(spec, num_classes) -> nn.Module`` factory to :data:`ARCHITECTURES` under a name.
register_classifier = ARCHITECTURES.register


# --------------------------------------------------------------------------------------------
# architectures


class OneHot(nn.Module):
    """Token ids ``[N, L]`` -> one-hot channels ``float [N, V, L]`` (for Conv1d)."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        return F.one_hot(tokens, self.vocab_size).float().transpose(1, 2)


class TokenEmbedding(nn.Module):
    """Token ids ``[N, L]`` -> embedded channels ``[N, E, L]``."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens).transpose(1, 2)


class ResidualBlock1d(nn.Module):
    """``relu(body(x) + skip(x))``, both paths striding with the same ``Conv1d(c_in, c_out, k, s, p)``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, stride, padding), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, 1), nn.BatchNorm1d(c_out),
        )
        self.skip = nn.Sequential(nn.Conv1d(c_in, c_out, kernel, stride, padding), nn.BatchNorm1d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.skip(x))


@register_classifier("polymnist")
def polymnist_classifier(spec: ModalitySpec, num_classes: int) -> nn.Module:
    """Conv(3,10,4,2,1) Dropout2d ReLU Conv(10,20,4,2,1) Dropout2d ReLU Linear(980,128) Dropout ReLU Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 10, 4, 2, 1), nn.Dropout2d(0.5), nn.ReLU(),
        nn.Conv2d(10, 20, 4, 2, 1), nn.Dropout2d(0.5), nn.ReLU(),
        nn.Flatten(), nn.Linear(980, 128), nn.Dropout(0.5), nn.ReLU(), nn.Linear(128, num_classes),
    )


@register_classifier("mnist")
def mnist_classifier(spec: ModalitySpec, num_classes: int) -> nn.Module:
    """Conv(1,32,4,2) Conv(32,64,4,2) Conv(64,128,4,2) (ReLU after each) Dropout Linear(128, classes)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 4, 2), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
        nn.Conv2d(64, 128, 4, 2), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(128, num_classes),
    )


@register_classifier("svhn")
def svhn_classifier(spec: ModalitySpec, num_classes: int) -> nn.Module:
    """The SVHN encoder's four convs (32-64-64-128, k4 s2) with BatchNorm, Dropout, Linear(128, classes)."""
    layers: list[nn.Module] = []
    for c_in, c_out, padding in ((3, 32, 1), (32, 64, 1), (64, 64, 1), (64, 128, 0)):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, padding), nn.BatchNorm2d(c_out), nn.ReLU(), nn.Dropout2d(0.1)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.5), nn.Linear(128, num_classes))


@register_classifier("text")
def text_classifier(spec: ModalitySpec, num_classes: int) -> nn.Module:
    """One-hot (71, 8) -> Conv1d(71,128,1) -> residual 128->192 (k4 s2 p1) -> 192->128 (k4 s2 p0)
    -> Dropout -> Linear(128, classes)."""
    assert spec.vocab_size is not None
    return nn.Sequential(
        OneHot(spec.vocab_size), nn.Conv1d(spec.vocab_size, 128, 1),
        ResidualBlock1d(128, 192, 4, 2, 1), ResidualBlock1d(192, 128, 4, 2, 0),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(128, num_classes),
    )


def conv_bn_relu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    """``Conv(c_in, c_out, 3, stride, 1) BatchNorm ReLU``."""
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU()]


@register_classifier("conv_bn_maxpool")
def conv_bn_maxpool_classifier(spec: ModalitySpec, num_classes: int) -> nn.Module:
    """Any ``[C, H, W]``, translation-invariant: five Conv(3x3)-BatchNorm-ReLU blocks of
    16-32-32-64-64 channels with strides (s, 2, 1, 2, 2), ``s = 1`` for images up to 32 pixels
    wide and 2 above, a global max pool and Linear(64, classes).

    The max pool finds an object wherever it is; BatchNorm lets it train from the first epoch
    on textured backgrounds, where a plain conv stack with an average pool does not learn.
    """
    first_stride = 1 if spec.shape[-1] <= 32 else 2
    blocks = [(spec.shape[0], 16, first_stride), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 2)]
    layers = [layer for c_in, c_out, stride in blocks for layer in conv_bn_relu(c_in, c_out, stride)]
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


@register_classifier("generic_tokens")
def generic_token_classifier(spec: ModalitySpec, num_classes: int) -> nn.Module:
    """Any vocabulary and length: Embedding(V, 64), two Conv1d(k3) of 128 channels, global max
    pool, Dropout, Linear(128, classes)."""
    assert spec.vocab_size is not None
    return nn.Sequential(
        TokenEmbedding(spec.vocab_size, 64), nn.Conv1d(64, 128, 3, padding=1), nn.ReLU(),
        nn.Conv1d(128, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(128, num_classes),
    )


@register_classifier("mlp")
def mlp_classifier(spec: ModalitySpec, num_classes: int) -> nn.Module:
    """Any vector: Flatten, Linear(numel, 256), ReLU, Dropout, Linear(256, classes)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(spec.shape), 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, num_classes)
    )


def classifier_for(spec: ModalitySpec, dataset: str | None = None) -> str:
    """The architecture for a modality: the dataset's entry in :data:`DATASET_IMAGE_ARCHITECTURES`
    for its images, else by shape: ``polymnist`` (3x28x28), ``mnist`` (1x28x28), ``svhn``
    (3x32x32), ``text`` (8 tokens over 71 symbols), else ``conv_bn_maxpool`` (images),
    ``generic_tokens`` or ``mlp``."""
    shape = tuple(spec.shape)
    if spec.kind == "image":
        if dataset in DATASET_IMAGE_ARCHITECTURES:
            return DATASET_IMAGE_ARCHITECTURES[dataset]
        return {(3, 28, 28): "polymnist", (1, 28, 28): "mnist", (3, 32, 32): "svhn"}.get(shape, "conv_bn_maxpool")
    if spec.kind == "tokens":
        return "text" if shape == (8,) and spec.vocab_size == 71 else "generic_tokens"
    return "mlp"


def build_classifier(architecture: str, spec: ModalitySpec, num_classes: int) -> nn.Module:
    """A fresh network of the named architecture for ``spec``."""
    return ARCHITECTURES.lookup(architecture, f"modality {spec.name!r}")(spec, num_classes)


# --------------------------------------------------------------------------------------------
# a trained classifier


@dataclass
class Classifier:
    """A trained classifier of one modality, with its recorded test accuracy."""

    spec: ModalitySpec
    architecture: str
    net: nn.Module
    num_classes: int
    test_accuracy: float

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """Predicted labels ``int64 [N]`` of model inputs ``x`` (images are clamped to [0, 1])."""
        self.net.eval()
        device = next(self.net.parameters()).device
        if self.spec.kind == "image":
            x = x.float().clamp(0.0, 1.0)
        return torch.cat([self.net(chunk.to(device)).argmax(-1) for chunk in x.split(batch_size)]).to(x.device)

    __call__ = predict


@dataclass
class ClassifierConfig:
    """How coherence classifiers are trained (part of the cache key); ``epochs=None``: the
    dataset's entry in :data:`DEFAULT_EPOCHS`."""

    epochs: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    train_size: int | None = None

    def __post_init__(self) -> None:
        check_minimums("eval.classifier.", self, {"epochs": 1, "batch_size": 1, "train_size": 1})
        if not self.lr > 0:
            raise ConfigError(f"eval.classifier.lr must be > 0, got {self.lr}")

    def for_dataset(self, dataset: str) -> ClassifierConfig:
        """This configuration with ``epochs`` resolved for ``dataset``."""
        if self.epochs is not None:
            return self
        return replace(self, epochs=DEFAULT_EPOCHS.get(dataset, DEFAULT_EPOCHS["default"]))


def train_classifiers(
    train: MultimodalDataset, architectures: Mapping[str, str], num_classes: int, config: ClassifierConfig,
    progress: bool = False,
) -> dict[str, nn.Module]:
    """Train one network per modality with Adam on cross-entropy (learning rate annealed from
    ``config.lr`` to 0 by a cosine over all steps), on the examples where the modality is
    present; one shuffled pass over ``train`` per epoch serves every modality, for
    ``config.epochs`` epochs (unset: ``DEFAULT_EPOCHS["default"]``)."""
    if train.labels is None:
        raise DataError(f"{train.name}: coherence classifiers need labels, the dataset has none")
    epochs = config.epochs if config.epochs is not None else DEFAULT_EPOCHS["default"]
    if config.train_size is not None:
        train = train.subset(slice(0, config.train_size))
    with private_rng(config.seed, torch.device("cpu")):
        nets = {m: build_classifier(a, train.specs[m], num_classes) for m, a in architectures.items()}
        optimizers = {m: torch.optim.Adam(net.parameters(), lr=config.lr) for m, net in nets.items()}
        steps = epochs * train.num_batches(config.batch_size)
        schedules = {m: torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)) for m, opt in optimizers.items()}
        generator = torch.Generator().manual_seed(config.seed)
        with progress_bar(total=steps, desc="classifiers", enabled=progress) as bar:
            for epoch in range(epochs):
                loss_sums = {m: torch.zeros(()) for m in nets}
                loss_counts = dict.fromkeys(nets, 0)
                for batch in train.batches(config.batch_size, shuffle=True, generator=generator):
                    for m, net in nets.items():
                        keep = batch.mask[:, train.modality_names.index(m)]
                        if keep.any():
                            net.train()
                            loss = F.cross_entropy(net(batch.data[m][keep]), batch.labels[keep])
                            optimizers[m].zero_grad(set_to_none=True)
                            loss.backward()
                            optimizers[m].step()
                            loss_sums[m] += loss.detach()
                            loss_counts[m] += 1
                        schedules[m].step()
                    bar.update()
                if progress:  # the last epoch's mean cross-entropy per modality, read once per epoch
                    bar.set_postfix({"epoch": f"{epoch + 1}/{epochs}"} | {
                        f"loss/{m}": f"{float(loss_sums[m]) / max(loss_counts[m], 1):.3f}" for m in nets
                    })
    return nets


@torch.no_grad()
def classifier_accuracy(classifier: Classifier, dataset: MultimodalDataset, batch_size: int = 1024) -> float:
    """Accuracy on the examples of ``dataset`` where the classifier's modality is present."""
    if dataset.labels is None:
        raise DataError(f"{dataset.name}: accuracy needs labels, the dataset has none")
    m = classifier.spec.name
    keep = dataset.mask[:, dataset.modality_names.index(m)]
    correct = total = 0
    for start in range(0, len(dataset), batch_size):
        rows = slice(start, start + batch_size)
        x = to_model_input(dataset.specs[m], dataset.tensors[m][rows])[keep[rows]]
        correct += int((classifier.predict(x) == dataset.labels[rows][keep[rows]]).sum())
        total += int(keep[rows].sum())
    return correct / max(total, 1)


# --------------------------------------------------------------------------------------------
# the cache


def classifier_cache_path(data_cfg: DataConfig, config: ClassifierConfig, architectures: Mapping[str, str]) -> Path:
    """``<data dir>/classifiers-<dataset>-<key>.pt``; the key hashes the dataset's identity
    (see :mod:`crmvae.evaluation.cache`), the architectures and the training settings (with
    ``epochs`` resolved for the dataset)."""
    training = asdict(config.for_dataset(data_cfg.dataset))
    return cache_file(data_cfg, "classifiers", {"architectures": dict(architectures), "training": training})


def load_or_train_classifiers(
    data_cfg: DataConfig,
    config: ClassifierConfig | None = None,
    architectures: Mapping[str, str] | None = None,
    progress: bool = False,
) -> dict[str, Classifier]:
    """The dataset's classifiers from the cache, or trained, scored and cached now.

    Trains on the full train split and scores on the full test split (``data_cfg.train_size``
    and ``test_size`` are ignored). ``architectures`` overrides :func:`classifier_for` per modality.
    """
    config = (config or ClassifierConfig()).for_dataset(data_cfg.dataset)
    data_cfg = replace(data_cfg, train_size=None, test_size=None)
    test = load_dataset(data_cfg, "test")
    if test.labels is None:
        raise DataError(f"{test.name}: coherence classifiers need labels, the dataset has none")
    chosen = {m: classifier_for(s, data_cfg.dataset) for m, s in test.specs.items()} | dict(architectures or {})
    path = classifier_cache_path(data_cfg, config, chosen)
    cached = read_cached(path, lambda p: {m: _restore(test.specs[m], p["classifiers"][m], p["num_classes"], path)
                                          for m in chosen})
    if cached is not None:
        return cached
    train = load_dataset(data_cfg, "train")
    assert train.labels is not None
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    start = time.perf_counter()
    nets = train_classifiers(train, chosen, num_classes, config, progress)
    seconds = time.perf_counter() - start
    classifiers = {m: Classifier(test.specs[m], chosen[m], nets[m], num_classes, 0.0) for m in chosen}
    for classifier in classifiers.values():
        classifier.test_accuracy = classifier_accuracy(classifier, test)
    write_cached(path, {
        "data": dataset_identity(data_cfg), "training": asdict(config), "train_seconds": seconds,
        "num_classes": num_classes,
        "classifiers": {m: _stored(c) for m, c in classifiers.items()},
    })
    log.info("trained classifiers in %.1f s -> %s (test accuracy %s)", seconds, path,
             {m: round(c.test_accuracy, 4) for m, c in classifiers.items()})
    return classifiers


def _stored(classifier: Classifier) -> dict[str, Any]:
    """What the cache and an exported file keep of a classifier: architecture, weights, accuracy."""
    return {"architecture": classifier.architecture, "test_accuracy": float(classifier.test_accuracy),
            "state": {k: v.detach().cpu() for k, v in classifier.net.state_dict().items()}}


def _restore(spec: ModalitySpec, entry: dict[str, Any], num_classes: int, where: str | Path) -> Classifier:
    """A stored classifier (:func:`_stored`). Its net is built in a private RNG stream, as training
    builds it: the random initialisation that the loaded weights replace must not advance the
    caller's stream, or an evaluation's samples would depend on whether the classifiers came from
    the cache. Weights that do not fit are a :class:`CheckpointError` naming ``where``."""
    accuracy = entry["test_accuracy"]
    if not isinstance(accuracy, float) or not 0 <= accuracy <= 1:
        raise ValueError(f"test accuracy {accuracy!r}")
    with private_rng(0, torch.device("cpu")):
        net = build_classifier(entry["architecture"], spec, num_classes)
    load_weights(net, entry["state"], where)
    return Classifier(spec, entry["architecture"], net.eval(), num_classes, accuracy)


# --------------------------------------------------------------------------------------------
# export and import

EXPORT_FORMAT = "crmvae-classifiers"
EXPORT_VERSION = 1


def export_classifiers(classifiers: Mapping[str, Classifier], path: str | Path, dataset: str,
                       about: Mapping[str, Any] | None = None) -> Path:
    """Write ``classifiers`` to ``path`` (tensors and plain values, for ``torch.load(weights_only=True)``)
    and their description to ``path`` with suffix ``.json``::

        {"format": "crmvae-classifiers", "version": 1, "dataset": ..., "num_classes": K,
         "classifiers": {m: {"architecture", "kind", "shape", "vocab_size", "test_accuracy", "state"}},
         "about": {...}}

    ``about`` holds anything else worth keeping (the training settings, the dataset's identity).
    Each net maps a model input of its modality (see :meth:`Classifier.predict`) to K logits.
    """
    if not classifiers:
        raise ConfigError("no classifiers to export")
    num_classes = {c.num_classes for c in classifiers.values()}
    if len(num_classes) != 1:
        raise ConfigError(f"classifiers of one file share their labels; got {sorted(num_classes)} classes")
    stored = {m: _stored(c) | {"kind": c.spec.kind, "shape": list(c.spec.shape), "vocab_size": c.spec.vocab_size}
              for m, c in classifiers.items()}
    head = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "dataset": dataset, "num_classes": num_classes.pop(),
            "about": dict(about or {})}
    path = Path(path)
    atomic_torch_save(head | {"classifiers": stored}, path)
    described = {m: {k: v for k, v in entry.items() if k != "state"} for m, entry in stored.items()}
    atomic_write(path.with_suffix(".json"), json.dumps(head | {"classifiers": described, "file": path.name}, indent=2))
    return path


def load_classifiers(path: str | Path, specs: Mapping[str, ModalitySpec] | None = None) -> dict[str, Classifier]:
    """The classifiers :func:`export_classifiers` wrote to ``path``, each with the test accuracy
    recorded there. With ``specs`` (a dataset's modalities), every modality of ``specs`` must have
    a classifier of the same kind, shape and vocabulary; a :class:`CheckpointError` names what
    differs."""
    path = Path(path)
    try:
        payload = torch_load(path)
    except TORCH_LOAD_ERRORS as exc:
        raise CheckpointError(f"classifier file {path} {load_error_reason(path, exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path} is not a classifier file of crmvae (write one with `crmvae data classifiers`)")
    if payload.get("version") != EXPORT_VERSION:
        raise CheckpointError(f"{path}: classifier file version {payload.get('version')!r} is not supported "
                              f"(this crmvae reads version {EXPORT_VERSION})")
    entries, num_classes = payload.get("classifiers"), payload.get("num_classes")
    if not isinstance(entries, dict) or not entries or not isinstance(num_classes, int) or num_classes < 2:
        raise CheckpointError(f"{path}: 'classifiers' must map modalities to classifiers and 'num_classes' be an integer >= 2")
    if specs is not None:
        missing = sorted(set(specs) - set(entries))
        if missing:
            raise CheckpointError(f"{path} has no classifier for modality {missing} (it has {sorted(entries)})")
    classifiers = {}
    for m in specs or entries:
        entry, where = entries[m], f"{path}, modality {m!r}"
        try:
            spec = ModalitySpec(m, entry["kind"], tuple(int(n) for n in entry["shape"]), entry["vocab_size"])
            if specs is not None and specs[m] != spec:
                raise CheckpointError(
                    f"{where}: the classifier takes {spec.kind} of shape {list(spec.shape)} (vocabulary "
                    f"{spec.vocab_size}), the data holds {specs[m].kind} of shape {list(specs[m].shape)} "
                    f"(vocabulary {specs[m].vocab_size})")
            classifiers[m] = _restore(spec, entry, num_classes, where)
        except (KeyError, TypeError, ValueError, ConfigError, RuntimeError) as exc:
            raise CheckpointError(f"{where}: unusable entry ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return classifiers


def classifier_threshold(dataset: str, thresholds: Mapping[str, float]) -> float:
    """The accuracy threshold of ``dataset``: ``thresholds[dataset]``, else ``thresholds["default"]``."""
    if dataset in thresholds:
        return thresholds[dataset]
    if "default" not in thresholds:
        raise ConfigError(f"no classifier threshold for dataset {dataset!r} and no 'default' in {dict(thresholds)}")
    return thresholds["default"]


def check_classifiers(classifiers: Mapping[str, Classifier], threshold: float, dataset: str) -> None:
    """Raise :class:`ConfigError` naming every classifier whose recorded test accuracy is below ``threshold``."""
    low = {m: round(c.test_accuracy, 4) for m, c in classifiers.items() if c.test_accuracy < threshold}
    if low:
        raise ConfigError(
            f"{dataset}: coherence classifiers {sorted(low)} have recorded test accuracy {low}, below the "
            f"threshold {threshold}; coherence measured with them would be meaningless. Train them longer "
            f"(classifier.epochs) or lower classifier_thresholds[{dataset!r}]"
        )
