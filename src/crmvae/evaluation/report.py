"""The report of a comparison study: ``results.json``, ``report.md``, ``report.html``, plots, grids.

The tables hold the last snapshot; the learning curves every recorded snapshot; the claims table
(:mod:`crmvae.evaluation.claims`) the paper's statements decided on the seeds, at the last snapshot
and at each one; the records table every record the report was made from, with its settings hashes.

Every table cell is ``mean ± std`` over seeds (sample standard deviation, see
:mod:`crmvae.evaluation.compare`); the best mean of each column is bold (highest for accuracies
and coherence, lowest for FID). The Markdown and HTML hold the same tables; the HTML is one
offline file (inline CSS, no scripts) that links the PNGs beside it (drawn with matplotlib's
Agg canvas).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..fileio import atomic_write, make_dir
from .claims import ALPHA, CLOSE, check_claims, study_claims
from .compare import mean_std

RESULTS_FILE = "results.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
PLOTS_DIR = "plots"
CLAIMS_NOTE = (
    f"Each claim is a set of one-sided comparisons between models, each decided by Welch's t-test across seeds "
    f"at level {ALPHA} (no multiplicity correction): a claim holds when every comparison is significant in its "
    f"direction, does not hold when any is significant against it, and is undecided otherwise (always with one "
    f"seed). A claim that two models are close is decided by two one-sided Welch tests against a margin of "
    f"{CLOSE:.0%} of the second model's mean. Effects are differences of means at the last snapshot."
)
BUDGET_NOTE = (
    "The same tests on the records of each snapshot alone: the budget from which a claim holds, or stops holding. "
    "A metric that a snapshot did not evaluate leaves its claims not measured there."
)
FID_NOTE = "FID from a small sample count is biased upward; compare only figures computed with the same count."

Aggregate = Mapping[str, Mapping[str, Mapping[str, Any]]]  # model -> score -> {mean, std, n, values}


@dataclass
class Table:
    """Rows of ``mean ± std`` cells with ``digits`` decimals (``column_digits``: per column);
    ``best`` ``higher``/``lower`` picks the bold best of each column, ``None``: none
    (``column_best``: per column). ``seeds``: the seeds of each row's model, by row label; a cell
    over fewer says how many it has."""

    title: str
    corner: str
    columns: list[str]
    rows: list[tuple[str, list[Mapping[str, Any] | None]]]
    digits: int = 3
    best: str | None = "higher"
    note: str = ""
    column_digits: list[int] | None = None
    column_best: list[str | None] | None = None
    seeds: Mapping[str, int] = field(default_factory=dict)

    def digits_of(self, column: int) -> int:
        """The decimals shown in ``column``."""
        return self.column_digits[column] if self.column_digits else self.digits

    def best_rows(self, column: int) -> set[int]:
        """Indices of the rows holding the best mean of ``column`` (all of them on a tie at the
        displayed precision)."""
        means = {i: round(cells[column]["mean"], self.digits_of(column)) for i, (_, cells) in enumerate(self.rows)
                 if cells[column] is not None}
        best = self.column_best[column] if self.column_best else self.best
        if best is None or len(means) < 2:
            return set()
        target = max(means.values()) if best == "higher" else min(means.values())
        return {i for i, mean in means.items() if mean == target}

    def text_rows(self) -> list[tuple[str, list[tuple[str, bool]]]]:
        """``(label, [(cell text, bold), ...])`` per row."""
        bold = [self.best_rows(j) for j in range(len(self.columns))]
        return [
            (label, [(format_cell(cell, self.digits_of(j), self.seeds.get(label)), i in bold[j])
                     for j, cell in enumerate(cells)])
            for i, (label, cells) in enumerate(self.rows)
        ]


def format_cell(cell: Mapping[str, Any] | None, digits: int = 3, seeds: int | None = None) -> str:
    """``"0.812 ± 0.010"``; ``"0.812"`` for one seed; ``"–"`` when absent; ``"0.812 ± 0.010 (n=2)"``
    over fewer than the model's ``seeds``."""
    if cell is None:
        return "–"
    text = f"{cell['mean']:.{digits}f}" + (f" ± {cell['std']:.{digits}f}" if cell["n"] >= 2 else "")
    return text + (f" (n={cell['n']})" if seeds is not None and cell["n"] < seeds else "")


# --------------------------------------------------------------------------------------------
# tables


def _sizes(aggregate: Aggregate, prefix: str) -> list[str]:
    """The subset sizes ``k`` for which some model has ``<prefix>.<k>``, in numeric order."""
    keys = {score[len(prefix) + 1:] for scores in aggregate.values() for score in scores if score.startswith(prefix + ".")}
    return sorted((k for k in keys if k.isdigit()), key=int)


def score_table(
    aggregate: Aggregate, models: Sequence[str], title: str, scores: Sequence[tuple[str, str]],
    unranked: frozenset[str] = frozenset(), **kwargs: Any,
) -> Table | None:
    """One row per model, one column per ``(header, score key)`` that some model has; ``None``
    when no model has any. Columns of the ``unranked`` score keys get no bold best."""
    scores = [(header, key) for header, key in scores if any(key in aggregate.get(m, {}) for m in models)]
    if not scores:
        return None
    rows = [(m, [aggregate.get(m, {}).get(key) for _, key in scores]) for m in models]
    table = Table(title, "model", [header for header, _ in scores], rows, **kwargs)
    if unranked:
        table.column_best = [None if key in unranked else table.best for _, key in scores]
    return table


def by_size_table(aggregate: Aggregate, models: Sequence[str], title: str, prefix: str, **kwargs: Any) -> Table | None:
    """:func:`score_table` with one column per subset size ``k`` of ``<prefix>.<k>``."""
    return score_table(aggregate, models, title, [(f"k={k}", f"{prefix}.{k}") for k in _sizes(aggregate, prefix)], **kwargs)


def subset_table(aggregate: Aggregate, model: str) -> Table | None:
    """The paper's Table 1 for ``model``: one row per conditioning subset, one column per target."""
    prefix = "cross_coherence.table."
    keys = [key[len(prefix):].split(".", 1) for key in aggregate.get(model, {}) if key.startswith(prefix)]
    if not keys:
        return None
    targets = sorted({t for t, _ in keys})
    subsets = sorted({s for _, s in keys}, key=lambda s: (s.count(",") + 1, s))
    rows = [(s, [aggregate[model].get(f"{prefix}{t}.{s}") for t in targets]) for s in subsets]
    return Table(f"Cross-coherence of {model} by conditioning subset and target (as the paper's Table 1)",
                 "given \\ target", targets, rows, best=None)


def run_table(runs: Sequence[Mapping[str, Any]], models: Sequence[str]) -> Table:
    """Training and evaluation cost and the final test loss per model."""
    def cell(model: str, get: Any) -> Mapping[str, Any] | None:
        values = [v for v in (get(r) for r in runs if r["model"] == model) if v is not None]
        return mean_std(values) if values else None

    columns = [
        ("steps", lambda r: r["summary"].get("global_step")),
        ("test loss", lambda r: r["summary"].get("test_loss")),
        ("training s", lambda r: r["summary"].get("wall_time_s")),
        ("evaluation s", lambda r: r["result"].get("seconds", {}).get("total")),
    ]
    rows = [(m, [cell(m, get) for _, get in columns]) for m in models]
    return Table("Training and evaluation", "model", [name for name, _ in columns], rows, best=None,
                 column_digits=[0, 1, 0, 0],
                 note="training s: wall time of the whole run, resumed parts included; evaluation s: the metrics' "
                      "own timings, when the evaluation was computed (a cached one keeps its first timings).")


def fid_samples(runs: Sequence[Mapping[str, Any]]) -> list[int]:
    """The distinct FID sample counts of the runs."""
    return sorted({r["result"]["fid"]["samples"] for r in runs if "fid" in r["result"]})


def build_tables(comparison: Mapping[str, Any]) -> list[Table]:
    """Every table of the report that has data."""
    agg, models, runs = comparison["aggregate"], comparison["config"]["models"], comparison["runs"]
    counts = fid_samples(runs)
    probe_examples = sorted({r["result"]["probes"].get("train_examples") for r in runs if "probes" in r["result"]})
    sampler = comparison["config"].get("eval", {}).get("sampler", {}).get("name", "prior")
    latents = "z ~ p(z)" if sampler == "prior" else f"z from the {sampler} sampler fitted to the aggregate posterior"
    fid_scores = [(sampler, "fid.unconditional_mean")] + [(f"k={k}", f"fid.by_size_mean.{k}") for k in _sizes(agg, "fid.by_size_mean")]
    text_mods = sorted({key.split(".")[1] for scores in agg.values() for key in scores if key.startswith("text.")})
    tables = [
        by_size_table(agg, models, "Cross-coherence by number of given modalities k (as the paper's Figure 2)",
                      "cross_coherence.by_size",
                      note="Mean accuracy of the coherence classifiers on the modalities generated from every subset "
                           "of size k, over all such subsets and their missing targets."),
        by_size_table(agg, models, "Attribute coherence of generated text by number of given modalities k",
                      "attribute_coherence.by_size",
                      note="Fraction of each example's attributes that the text generated from the other modalities "
                           "states correctly (read back by the dataset's caption parser, no classifier)."),
        score_table(agg, models, "Joint coherence and latent similarity",
                    [("joint coherence", "joint_coherence"),
                     ("joint: effective classes", "joint_coherence_labels.effective_classes"),
                     ("cosine similarity", "cosine_similarity"),
                     ("cosine, different examples", "cosine_similarity_mismatched"),
                     ("cosine gap", "cosine_similarity_gap.mean")],
                    unranked=frozenset({"cosine_similarity_mismatched", "joint_coherence_labels.effective_classes"}),
                    note=f"Joint coherence: {latents}, all modalities decoded, fraction on which every classifier agrees; "
                         "its effective classes, exp of the entropy of the agreed labels, are about the number of classes "
                         "when the agreeing samples cover them all and 1 when a generator draws one class's look-alike "
                         "for every latent (coherent without generating anything). "
                         "Cosine similarity of the unimodal posterior means of one example, and of different "
                         "examples (its chance level); the gap is the paired difference of the two."),
        score_table(agg, models, "Latent usage",
                    [("KL joint", "latent_usage.joint.kl"), ("KL unimodal, mean", "latent_usage.unimodal.kl_mean"),
                     ("KL unimodal, least", "latent_usage.unimodal.kl_min"),
                     ("active units joint", "latent_usage.joint.active_units"),
                     ("active units unimodal, mean", "latent_usage.unimodal.active_units_mean"),
                     ("active units unimodal, least", "latent_usage.unimodal.active_units_min")],
                    digits=1, best=None,
                    note="KL(q(z|x_S) || p(z)) in nats, mean over test examples, for the posterior of all modalities "
                         "(joint; none for a mixture) and of each single modality (mean and least over modalities); "
                         "active units: latent dimensions whose posterior mean varies over the test examples with "
                         "variance above 0.01. A collapsed encoder carries about 0 nats and 0 active units."),
        subset_table(agg, models[0]),
        score_table(agg, models, f"FID, {' / '.join(map(str, counts))} samples per set (lower is better)", fid_scores,
                    digits=1, best="lower",
                    note=f"Mean over target modalities; {sampler}: {latents}; k: generated from subsets of k modalities. {FID_NOTE}"),
        by_size_table(agg, models, "Latent linear probe accuracy by number of given modalities k", "probes.by_size",
                      note=f"Logistic regression on posterior means of {' / '.join(map(str, probe_examples))} "
                           f"training examples, accuracy on the test set."),
        score_table(agg, models, "Log-likelihood estimates (nats per example, higher is better)",
                    [("joint log p(X)", "likelihood.joint")]
                    + [(f"log p(x_m | X_S), |S|={k}", f"likelihood.conditional.by_size.{k}")
                       for k in _sizes(agg, "likelihood.conditional.by_size")],
                    digits=1, note="Importance-sampled with K latents from the (subset) posterior: the joint is a "
                                   "lower bound that tightens as K grows; the conditional is the ratio of two "
                                   "estimates, averaged over subsets of size |S| and their missing targets."),
        score_table(agg, models, "Text coherence",
                    [(f"{m} {what.replace('_', ' ')}", f"text.{m}.{what}") for m in text_mods
                     for what in ("exact_match", "mean_distance")], best=None,
                    note="Generated text against the true word, spaces removed: exact-match rate, mean Levenshtein distance."),
        run_table(runs, models),
    ]
    seeds = {m: sum(r["model"] == m for r in runs) for m in models}
    for table in tables:
        if table is not None and table.corner == "model":
            table.seeds = seeds
    return [t for t in tables if t is not None]


# --------------------------------------------------------------------------------------------
# plots and grids


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG atomically; ``path``."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def plot_by_size(aggregate: Aggregate, models: Sequence[str], prefix: str, ylabel: str, path: Path) -> Path | None:
    """One line per model of ``<prefix>.<k>`` against k with ±std error bars; ``None`` without data."""
    sizes = _sizes(aggregate, prefix)
    if not sizes:
        return None
    fig = Figure(figsize=(5.5, 3.8), dpi=120)  # no pyplot: the Agg canvas, no global backend state
    ax = fig.add_subplot()
    for model in models:
        cells = [(int(k), aggregate.get(model, {}).get(f"{prefix}.{k}")) for k in sizes]
        cells = [(k, c) for k, c in cells if c is not None]
        if cells:
            ax.errorbar([k for k, _ in cells], [c["mean"] for _, c in cells], yerr=[c["std"] for _, c in cells],
                        marker="o", capsize=3, label=model)
    ax.set_xlabel("number of given modalities k")
    ax.set_ylabel(ylabel)
    ax.set_xticks([int(k) for k in sizes])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


PLOTS = (
    ("cross_coherence.by_size", "cross-coherence", "coherence_by_size.png"),
    ("fid.by_size_mean", "FID (mean over targets)", "fid_by_size.png"),
    ("probes.by_size", "linear probe accuracy", "probes_by_size.png"),
)


def write_plots(comparison: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """The by-size plots at the last snapshot and, with more than one snapshot, the learning curves."""
    models = comparison["config"]["models"]
    paths = [plot_by_size(comparison["aggregate"], models, prefix, label, out_dir / PLOTS_DIR / name)
             for prefix, label, name in PLOTS]
    if any(len(per_epoch) > 1 for per_epoch in comparison.get("curves", {}).values()):
        paths.append(plot_learning_curves(comparison, out_dir / PLOTS_DIR / "learning_curves.png"))
    return [p for p in paths if p is not None]


def record_grids(runs: Sequence[Mapping[str, Any]], models: Sequence[str], out_dir: Path) -> dict[str, list[Path]]:
    """Per model, the generation grid stored with its lowest seed's record at the last snapshot."""
    grids: dict[str, list[Path]] = {}
    for model in models:
        own = [r for r in runs if r["model"] == model]
        if not own:
            continue
        record = Path(out_dir) / min(own, key=lambda r: r["seed"])["record"]
        grid = record.with_suffix(".png")
        if grid.is_file():
            grids[model] = [grid]
    return grids


# --------------------------------------------------------------------------------------------
# learning curves


def curve_scores(curves: Mapping[str, Mapping[int, Aggregate]]) -> list[tuple[str, str]]:
    """The panels of the learning curves: cross-coherence at k=1 and k=M-1, joint coherence and
    the cosine-similarity gap, those that some model has."""
    keys = {key for per_epoch in curves.values() for agg in per_epoch.values() for key in agg}
    sizes = sorted((int(k.rsplit(".", 1)[1]) for k in keys if k.startswith("cross_coherence.by_size.")), key=int)
    panels = []
    if sizes:
        panels.append((f"cross-coherence, k={sizes[0]}", f"cross_coherence.by_size.{sizes[0]}"))
        if sizes[-1] != sizes[0]:
            panels.append((f"cross-coherence, k={sizes[-1]}", f"cross_coherence.by_size.{sizes[-1]}"))
    panels += [(title, key) for title, key in (("joint coherence", "joint_coherence"),
                                               ("latent cosine-similarity gap", "cosine_similarity_gap.mean")) if key in keys]
    return panels


def plot_learning_curves(comparison: Mapping[str, Any], path: Path) -> Path | None:
    """One panel per :func:`curve_scores` entry: each model's mean ± std over seeds against the
    training examples seen; ``None`` when there is nothing to draw."""
    curves, examples = comparison["curves"], comparison["examples"]
    panels = curve_scores(curves)
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.6), dpi=110)
    for i, (title, key) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for model, per_epoch in curves.items():
            points = [(examples.get(f"{model}/{e}") or 0, agg[key]) for e, agg in sorted(per_epoch.items(), key=lambda kv: int(kv[0]))
                      if key in agg]
            if not points:
                continue
            x = [p[0] for p in points]
            mean = [p[1]["mean"] for p in points]
            std = [p[1]["std"] for p in points]
            line = ax.plot(x, mean, marker="o", label=model)[0]
            ax.fill_between(x, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                            color=line.get_color(), alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training examples seen")
        ax.set_xscale("log")  # snapshots are usually spread geometrically (1, 3, 10 passes)
        ax.set_xticks(sorted({x for x in examples.values() if x}), minor=False)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if "coherence" in key:  # a fraction: the whole range, so noise near chance does not look like a trend
            ax.set_ylim(0.0, 1.0)
        else:
            ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.grid(alpha=0.3, which="both")
        if i == 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# claims and records


def claim_rows(comparison: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(label, statement, measured effect, verdict)`` per claim of the study's dataset, on
    the runs of the last snapshot."""
    claims = study_claims(comparison["config"]["dataset"], comparison["config"]["models"])
    verdicts = check_claims(claims, comparison["runs"], comparison["config"]["models"])
    return [(v.claim.label, v.claim.statement, v.effect, v.verdict) for v in verdicts]


@dataclass
class ClaimsByBudget:
    """Each claim's verdict at every recorded snapshot: ``rows`` of ``(label, [verdict per epoch])``."""

    epochs: list[int]
    rows: list[tuple[str, list[str]]]


def claims_by_budget(comparison: Mapping[str, Any]) -> ClaimsByBudget:
    """The claims decided on the records of each snapshot alone, to show the budget a claim needs
    (a metric left out at a snapshot, as FID by ``--snapshot-metrics``, is *not measured* there)."""
    models = comparison["config"]["models"]
    claims = study_claims(comparison["config"]["dataset"], models)
    epochs = sorted({r["epochs"] for r in comparison["records"]})
    if not claims or not epochs:
        return ClaimsByBudget([], [])
    verdicts = [check_claims(claims, [r for r in comparison["records"] if r["epochs"] == e], models) for e in epochs]
    return ClaimsByBudget(epochs, [(claim.label, [at[i].verdict for at in verdicts]) for i, claim in enumerate(claims)])


def record_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    """One row per record used: model, seed, epochs, examples, times, CPU, settings hashes, file."""
    rows = []
    for r in comparison["records"]:
        record = r["record"]
        rows.append([
            r["model"], str(r["seed"]), str(r["epochs"]), str(r["summary"].get("examples_seen", "")),
            f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "",
            f"{r['eval_seconds']:.0f}" if r.get("eval_seconds") is not None else "",
            r.get("cpu", ""), r.get("settings", ""), record,
        ])
    return rows


RECORD_COLUMNS = ["model", "seed", "epochs", "examples", "training s", "evaluation s", "CPU", "run / eval sha256", "record"]


# --------------------------------------------------------------------------------------------
# rendering


@dataclass
class Report:
    """What the Markdown and HTML renderers need."""

    title: str
    facts: list[tuple[str, str]]
    tables: list[Table]
    plots: list[Path] = field(default_factory=list)
    grids: dict[str, list[Path]] = field(default_factory=dict)
    claims: list[tuple[str, str, str, str]] = field(default_factory=list)
    claims_by_budget: ClaimsByBudget = field(default_factory=lambda: ClaimsByBudget([], []))
    records: list[list[str]] = field(default_factory=list)


def _facts(comparison: Mapping[str, Any]) -> list[tuple[str, str]]:
    config, runs = comparison["config"], comparison["runs"]
    seeds = sorted({r["seed"] for r in runs})
    return [
        ("command", comparison["command"]),
        ("dataset", config["dataset"]),
        ("models", ", ".join(config["models"])),
        ("seeds", f"{', '.join(map(str, seeds))} (cells: mean ± sample std over the seeds of each model)"),
        ("preset and budget", " ".join([config["preset"], *config["budget"]])),
        ("tables at", f"{comparison['epochs']} epochs; the learning curves use every recorded snapshot"),
        ("evaluation", json.dumps(config["eval"], sort_keys=True)),
        ("test examples", ", ".join(map(str, sorted({r["result"].get("n_test") for r in runs if "n_test" in r["result"]})))),
        ("records", f"{len(comparison['records'])} (listed at the end)"),
        ("software", ", ".join(f"{k} {v}" for k, v in comparison["versions"].items())),
    ]


def _epochs_label(epochs: int) -> str:
    return f"{epochs} epoch{'' if epochs == 1 else 's'}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: Report, out_dir: Path) -> str:
    lines = [f"# {report.title}", ""]
    lines += [f"- **{name}**: {_md_escape(value)}" for name, value in report.facts]
    for table in report.tables:
        lines += ["", f"## {table.title}", "", "| " + " | ".join([table.corner, *table.columns]) + " |",
                  "|" + "---|" * (len(table.columns) + 1)]
        for label, cells in table.text_rows():
            lines.append("| " + " | ".join([_md_escape(label), *(f"**{t}**" if b else t for t, b in cells)]) + " |")
        if table.note:
            lines += ["", table.note]
    if report.plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in report.plots]
    if report.claims:
        lines += ["", "## Claims of the paper", "", CLAIMS_NOTE, "", "| claim | statement | measured effect | verdict |",
                  "|---|---|---|---|"]
        lines += [f"| {label} | {_md_escape(text)} | {_md_escape(effect)} | **{verdict}** |"
                  for label, text, effect, verdict in report.claims]
    budget = report.claims_by_budget
    if len(budget.epochs) > 1:
        lines += ["", "### Verdicts at each snapshot", "", BUDGET_NOTE, "",
                  "| claim | " + " | ".join(map(_epochs_label, budget.epochs)) + " |", "|---|" + "---|" * len(budget.epochs)]
        lines += [f"| {label} | " + " | ".join(verdicts) + " |" for label, verdicts in budget.rows]
    if report.records:
        lines += ["", "## Records used", "", "| " + " | ".join(RECORD_COLUMNS) + " |", "|" + "---|" * len(RECORD_COLUMNS)]
        lines += ["| " + " | ".join([*map(_md_escape, row[:-1]), f"[{row[-1]}]({row[-1]})"]) + " |" for row in report.records]
    if report.grids:
        lines += ["", "## Sample grids", ""]
        for model, paths in report.grids.items():
            lines += [f"**{model}**", ""] + [f"![{model} {p.stem}]({p.relative_to(out_dir).as_posix()})" for p in paths] + [""]
    return "\n".join(lines).rstrip() + "\n"


CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
td.text { text-align: left; max-width: 30em; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
dt { font-weight: bold; } dd { margin: 0 0 0.4em 1em; font-family: monospace; }
img { max-width: 100%; margin: 0.3em; border: 1px solid #ddd; }
"""


def render_html(report: Report, out_dir: Path) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(report.title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{e(report.title)}</h1>", "<dl>"]
    parts += [f"<dt>{e(name)}</dt><dd>{e(value)}</dd>" for name, value in report.facts]
    parts.append("</dl>")
    for table in report.tables:
        parts += [f"<h2>{e(table.title)}</h2>", "<table><tr>"
                  + "".join(f"<th>{e(c)}</th>" for c in [table.corner, *table.columns]) + "</tr>"]
        for label, cells in table.text_rows():
            parts.append("<tr><td>" + e(label) + "</td>"
                         + "".join(f"<td><b>{e(t)}</b></td>" if b else f"<td>{e(t)}</td>" for t, b in cells) + "</tr>")
        parts.append("</table>")
        if table.note:
            parts.append(f"<p class=\"note\">{e(table.note)}</p>")
    if report.plots:
        parts += ["<h2>Plots</h2>"] + [f"<img src=\"{e(p.relative_to(out_dir).as_posix())}\" alt=\"{e(p.stem)}\">"
                                       for p in report.plots]
    if report.claims:
        parts += ["<h2>Claims of the paper</h2>", f"<p class=\"note\">{e(CLAIMS_NOTE)}</p>",
                  "<table><tr><th>claim</th><th>statement</th><th>measured effect</th><th>verdict</th></tr>"]
        parts += [f"<tr><td>{e(label)}</td><td class=\"text\">{e(text)}</td><td class=\"text\">{e(effect)}</td>"
                  f"<td><b>{e(verdict)}</b></td></tr>" for label, text, effect, verdict in report.claims]
        parts.append("</table>")
    budget = report.claims_by_budget
    if len(budget.epochs) > 1:
        parts += ["<h3>Verdicts at each snapshot</h3>", f"<p class=\"note\">{e(BUDGET_NOTE)}</p>",
                  "<table><tr><th>claim</th>" + "".join(f"<th>{_epochs_label(x)}</th>" for x in budget.epochs) + "</tr>"]
        parts += ["<tr><td>" + e(label) + "</td>" + "".join(f"<td class=\"text\">{e(v)}</td>" for v in verdicts) + "</tr>"
                  for label, verdicts in budget.rows]
        parts.append("</table>")
    if report.records:
        parts += ["<h2>Records used</h2>", "<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in RECORD_COLUMNS) + "</tr>"]
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row[:-1])
                  + f"<td><a href=\"{e(row[-1])}\">{e(row[-1])}</a></td></tr>" for row in report.records]
        parts.append("</table>")
    if report.grids:
        parts.append("<h2>Sample grids</h2>")
        for model, paths in report.grids.items():
            parts += [f"<h3>{e(model)}</h3>"] + [
                f"<img src=\"{e(p.relative_to(out_dir).as_posix())}\" alt=\"{e(model)} {e(p.stem)}\">" for p in paths]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(comparison: Mapping[str, Any], out_dir: str | Path | None = None, grids: bool = True) -> dict[str, Any]:
    """Write ``results.json``, ``report.md``, ``report.html`` and ``plots/*.png`` into ``out_dir``
    (default: the study's ``out_dir``), the pages showing (``grids``) each model's generation grid
    stored beside its records; the paths written and linked."""
    out = make_dir(out_dir or comparison["config"]["out_dir"])
    models = comparison["config"]["models"]
    report = Report(
        title=f"Comparison on {comparison['config']['dataset']}: {', '.join(models)}",
        facts=_facts(comparison),
        tables=build_tables(comparison),
        plots=write_plots(comparison, out),
        grids=record_grids(comparison["runs"], models, out) if grids else {},
        claims=claim_rows(comparison),
        claims_by_budget=claims_by_budget(comparison),
        records=record_rows(comparison),
    )
    paths = {
        "results": atomic_write(out / RESULTS_FILE, json.dumps(comparison, indent=2, sort_keys=True) + "\n"),
        "markdown": atomic_write(out / MARKDOWN_FILE, render_markdown(report, out)),
        "html": atomic_write(out / HTML_FILE, render_html(report, out)),
    }
    return {**paths, "plots": report.plots, "grids": report.grids}
