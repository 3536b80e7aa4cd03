"""A custom objective, registered from outside the package and trained like the built-in ones.

The objective here is the plain joint ELBO of a product of experts, with the reconstruction of
each modality weighted by a setting ``rec_weight``:

    L = rec_weight * sum_m E_{q(z|X)}[log p(x_m|z)] - beta * KL(q(z|X) || p(z))

    python examples/custom_objective.py --out /tmp/custom      # a minute or two on 2 CPU cores
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from crmvae import OBJECTIVES, build_run_config, register_objective, train
from crmvae.distributions import kl_standard_normal, reparameterize, subset_poe
from crmvae.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput, combine


@dataclass
class JointELBOConfig(ObjectiveConfig):
    """Settings (``model.objective_params``); ``beta`` comes from :class:`ObjectiveConfig`."""

    rec_weight: float = 1.0
    prior_expert: bool = True  # include p(z) in the PoE; also used by inference from any subset


def joint_elbo_loss(cfg: JointELBOConfig, ctx: ObjectiveContext) -> ObjectiveOutput:
    """Negative joint ELBO; every term is per example, ``combine`` averages over the batch."""
    everything = ctx.mask.new_ones(1, ctx.num_modalities)  # one subset: all modalities
    mu, logvar = subset_poe(ctx.mu, ctx.logvar, everything, ctx.mask, cfg.prior_weight)  # [1, B, D]
    z = reparameterize(mu, logvar)
    terms = {"kl/joint||prior": (cfg.beta, kl_standard_normal(mu, logvar)[0])}
    for m, name in enumerate(ctx.modality_names):
        terms[f"rec/joint/{name}"] = (cfg.rec_weight, -ctx.log_likelihood(m, z)[0])  # 0 where absent
    return combine(terms)


if "joint_elbo" not in OBJECTIVES:  # register once per process
    register_objective("joint_elbo", JointELBOConfig, "PoE joint ELBO only (example)")(joint_elbo_loss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/custom-objective-example"))
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    config = build_run_config("polymnist", "joint_elbo", "cpu-short", [
        "data.params.source=digits", f"data.train_size={args.train_size}", "data.test_size=200",
        f"data.data_dir={args.out / 'data'}", "model.latent_dim=32", f"train.epochs={args.epochs}",
        "model.objective_params.rec_weight=0.5", "train.progress=false",
    ])
    result = train(config, args.out / "run")
    print(f"joint_elbo: {result.global_step} steps, test loss {result.metrics['test_loss']:.1f}; "
          f"grids in {result.out_dir / 'grids'}")


if __name__ == "__main__":
    main()
