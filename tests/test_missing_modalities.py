"""Every objective trains on user data with 30% of the modality entries missing at random, and an
absent entry's stored values cannot reach the loss or the gradients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor

from crmvae import MultimodalVAE
from crmvae.config import DataConfig, ModelConfig
from crmvae.data import Batch, MultimodalDataset, load_dataset
from crmvae.data.user import user_modality_configs
from crmvae.objectives import OBJECTIVES
from crmvae.seeding import private_rng
from crmvae.training import evaluate

N, CLASSES, VOCAB, LENGTH = 96, 3, 6, 5
MISSING = 0.3
STEPS = 30


def write_dataset(root: Path, rng: np.random.Generator) -> np.ndarray:
    """A single-set user dataset whose three modalities all show the class; returns the presence
    mask [N, 3] (30% absent, never a whole row), written as the mask and, as the loader checks
    that they agree, as NaN rows (vectors) and -1 rows (tokens)."""
    labels = rng.integers(0, CLASSES, N)
    photo = rng.integers(0, 60, (N, 1, 8, 8)).astype(np.uint8)
    for c in range(CLASSES):
        photo[labels == c, 0, :, 2 * c : 2 * c + 3] += 180  # a bright band whose place is the class
    feat = np.eye(CLASSES, 6)[labels] * 3 + rng.normal(size=(N, 6)) * 0.3
    tokens = np.where(rng.random((N, LENGTH)) < 0.8, labels[:, None] + 1, rng.integers(0, VOCAB, (N, LENGTH)))
    present = rng.random((N, 3)) >= MISSING
    empty = ~present.any(1)
    present[np.flatnonzero(empty), rng.integers(0, 3, int(empty.sum()))] = True
    np.savez(
        root / "data.npz", photo=photo, labels=labels, mask=present,
        feat=np.where(present[:, 1:2], feat, np.nan), cap=np.where(present[:, 2:3], tokens, -1),
    )  # fmt: skip
    modalities = [
        {"name": "photo", "kind": "image", "shape": [1, 8, 8]},
        {"name": "feat", "kind": "vector", "shape": [6]},
        {"name": "cap", "kind": "tokens", "shape": [LENGTH], "vocab_size": VOCAB},
    ]
    (root / "modalities.yaml").write_text(yaml.safe_dump({"modalities": modalities, "num_classes": CLASSES}))
    return present


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    torch.set_num_threads(1)  # conftest's restore_threads puts the count back after the module
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, single_thread: None) -> tuple[DataConfig, MultimodalDataset, MultimodalDataset]:
    root = tmp_path_factory.mktemp("user")
    present = write_dataset(root, np.random.default_rng(0))
    cfg = DataConfig("user", root=str(root), params={"test_fraction": 0.25})
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert torch.equal(torch.cat([train.mask, test.mask]).sum(0), torch.from_numpy(present).sum(0))
    missing = 1 - float(torch.cat([train.mask, test.mask]).float().mean())
    assert 0.2 < missing < 0.35 and bool(train.mask.any(1).all())
    return cfg, train, test


def build(cfg: DataConfig, objective: str) -> MultimodalVAE:
    torch.manual_seed(0)
    return MultimodalVAE(ModelConfig(user_modality_configs(cfg), latent_dim=4, objective=objective))


def with_garbage(batch: Batch, present: Tensor) -> dict[str, Tensor]:
    """The batch with every absent entry replaced: NaN for floats, an id far outside the vocabulary
    for tokens (either would poison the loss, or crash the embedding, if it were read)."""
    out = {}
    for m, (name, x) in enumerate(batch.data.items()):
        fill = torch.full_like(x, 10**6) if x.dtype == torch.int64 else torch.full_like(x, float("nan"))
        keep = present[:, m].reshape((-1,) + (1,) * (x.dim() - 1))
        out[name] = torch.where(keep, x, fill)
    return out


def loss_and_grads(model: MultimodalVAE, data: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    model.zero_grad()
    with private_rng(0, torch.device("cpu")):
        output = model.loss(data, mask)
    output.loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return output.loss.detach(), grads



@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_training_with_missing_entries_lowers_the_test_loss(objective: str, data: tuple) -> None:
    cfg, train, test = data
    model = build(cfg, objective)
    before = evaluate(model, test, batch_size=len(test), seed=0)["loss"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    steps = 0
    while steps < STEPS:
        for batch in train.batches(24, shuffle=True, generator=generator):
            loss = model.loss(batch.data, batch.mask).loss
            assert torch.isfinite(loss), f"{objective}: loss {loss} at step {steps}"
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    after = evaluate(model, test, batch_size=len(test), seed=0)["loss"]
    assert np.isfinite(before) and np.isfinite(after)
    assert after < 0.8 * before, f"{objective}: test loss {before:.1f} -> {after:.1f}"


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_absent_entries_do_not_reach_the_loss_or_the_gradients(objective: str, data: tuple) -> None:
    cfg, _, test = data
    model = build(cfg, objective)
    batch = test.batch(torch.arange(len(test)))
    assert not bool(batch.mask.all())  # the batch has absent entries
    loss, grads = loss_and_grads(model, batch.data, batch.mask)
    garbage_loss, garbage_grads = loss_and_grads(model, with_garbage(batch, batch.mask), batch.mask)
    assert torch.isfinite(loss) and torch.equal(loss, garbage_loss)
    assert grads.keys() == garbage_grads.keys() and all(torch.equal(grads[k], garbage_grads[k]) for k in grads)
    # the control: the same stored values, all declared present, do change the loss
    full_loss, _ = loss_and_grads(model, batch.data, torch.ones_like(batch.mask))
    assert not torch.equal(loss, full_loss)
