"""Train two objectives on the same data under the same budget, then compare them on the same
metrics: test loss, latent linear probes and the latent cosine similarity of the modalities.

    python examples/compare_objectives.py --out /tmp/compare     # a few minutes on 2 CPU cores

``crmvae compare`` does the same for many models and seeds and writes a report; this script
shows the Python calls underneath.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crmvae import build_run_config, train
from crmvae.evaluation import EvalConfig, evaluate_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare-example"))
    parser.add_argument("--models", default="crmvae,mvae")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    budget = [  # PolyMNIST built from scikit-learn's small digits set: quick to generate
        "data.params.source=digits", f"data.train_size={args.train_size}", f"data.test_size={args.n_test}",
        f"data.data_dir={args.out / 'data'}", "model.latent_dim=32", f"train.epochs={args.epochs}",
        "train.progress=false", "train.grid_examples=0",
    ]
    evaluation = EvalConfig(metrics=["probes", "similarity"], n_test=args.n_test,
                            probe_train_size=min(500, args.train_size), progress=False)
    rows = []
    for model in args.models.split(","):
        config = build_run_config("polymnist", model, "cpu-short", budget)
        run = train(config, args.out / model)
        results = evaluate_checkpoint(run.out_dir, evaluation)
        probes = results["probes"]["by_size"]  # mean probe accuracy per number of given modalities
        gap = results["cosine_similarity_gap"]  # same example's modalities against different examples'
        by_size = list(probes.values())
        rows.append((model, run.metrics["test_loss"], by_size[0], by_size[-1], gap["mean"], gap["stderr"]))

    print(f"\n{'model':<8} {'test loss':>10} {'probe k=1':>10} {'probe all':>10} {'cosine gap':>16}")
    for model, loss, k1, kall, gap, err in rows:
        print(f"{model:<8} {loss:>10.1f} {k1:>10.3f} {kall:>10.3f} {gap:>+9.3f} ± {err:.3f}")
    print("Losses of different objectives are different quantities: compare the metrics.")


if __name__ == "__main__":
    main()
