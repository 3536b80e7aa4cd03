"""Your own data with missing modalities: write a data folder, train CRMVAE on it, then generate
the image of test examples from their feature vector alone (cross-generation).

    python examples/own_data.py --out /tmp/own-data            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.datasets import load_digits

from crmvae import build_run_config, load_dataset, load_model, train


def write_data_folder(root: Path, missing: float = 0.3, seed: int = 0) -> None:
    """Two modalities of scikit-learn's 8x8 digits: the image, and a noisy 10-d code of its class.
    A fraction ``missing`` of the examples lacks one of the two (chosen at random)."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8], floats in [0, 1]
    labels = digits.target.astype(np.int64)
    features = np.eye(10, dtype=np.float32)[labels] * 2 + rng.normal(0, 0.5, (len(labels), 10)).astype(np.float32)
    mask = np.ones((len(labels), 2), dtype=bool)
    drop = rng.random(len(labels)) < missing
    mask[drop, rng.integers(0, 2, drop.sum())] = False  # each dropped example keeps the other modality
    root.mkdir(parents=True, exist_ok=True)
    (root / "modalities.yaml").write_text(yaml.safe_dump({
        "modalities": [{"name": "digit", "kind": "image", "shape": [1, 8, 8]},
                       {"name": "code", "kind": "vector", "shape": [10]}],
        "num_classes": 10,
    }))
    np.savez(root / "data.npz", digit=images, code=features, labels=labels, mask=mask)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/own-data-example"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N training examples")
    args = parser.parse_args(argv)

    write_data_folder(args.out / "data")
    config = build_run_config("user", "crmvae", "cpu-short", [
        f"data.root={args.out / 'data'}", f"train.epochs={args.epochs}", "train.batch_size=64",
        "model.latent_dim=16", "train.progress=false",
        *([f"data.train_size={args.train_size}"] if args.train_size else []),
    ])
    result = train(config, args.out / "run")
    print(f"trained {result.global_step} steps; test loss {result.metrics['test_loss']:.1f}")

    model = load_model(result.model_path).eval()
    test = load_dataset(config.data, "test")
    batch = test.batch(torch.arange(len(test)))
    has_both = batch.mask.all(dim=1)  # score only the examples whose image is known
    with torch.no_grad():
        generated = model.generate(batch.data, subset=["code"], targets=["digit"], use_mean=True)["digit"]
    error = (generated - batch.data["digit"]).abs().mean(dim=(1, 2, 3))[has_both].mean()
    baseline = (batch.data["digit"][has_both].mean(0) - batch.data["digit"][has_both]).abs().mean()
    print(f"image generated from the code alone: mean abs. error {error:.3f} "
          f"(the mean image: {baseline:.3f}) on {int(has_both.sum())} test examples")


if __name__ == "__main__":
    main()
