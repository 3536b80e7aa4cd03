"""Several studies side by side: the settings, the claims and the last snapshot's numbers of
``compare`` report folders, read from their ``results.json`` and written as Markdown.

:func:`render_summary` writes one of two styles: ``claims`` (each study's settings and models,
then one row per claim with its verdict in every study) and ``full`` (the same, each verdict with
the snapshot from which it stands and its weakest comparison, then every model's numbers).
:func:`update_blocks` rewrites, in place, the blocks of a Markdown file marked

    <!-- summarize STYLE: FOLDER [FOLDER ...] -->
    ...
    <!-- end summarize -->

(folders relative to the file; blocks inside fenced code are left alone), so that a page's
tables are regenerated from the records rather than copied by hand; ``check=True`` only reports
the blocks that are out of date.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..fileio import atomic_write
from .claims import CLAIMS, FAILS, HOLDS, UNDECIDED, Claim, Verdict, check_claims, study_claims
from .report import MARKDOWN_FILE, RESULTS_FILE, claims_by_budget

Style = Literal["claims", "full"]
STYLES: tuple[Style, ...] = ("claims", "full")
BLOCK = re.compile(r"^<!-- summarize (\w+): ([^\n]*?) -->\n(.*?)^<!-- end summarize -->$", re.M | re.S)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


@dataclass(frozen=True)
class Study:
    """One report folder and the comparison its ``results.json`` holds."""

    folder: Path
    comparison: Mapping[str, Any]

    @property
    def dataset(self) -> str:
        return str(self.comparison["config"]["dataset"])

    @property
    def preset(self) -> str:
        return str(self.comparison["config"]["preset"])

    @property
    def final(self) -> int:
        return max(int(run["epochs"]) for run in self.comparison["runs"])

    @property
    def models(self) -> list[str]:
        recorded = {run["model"] for run in self.comparison["runs"]}
        return [m for m in self.comparison["config"]["models"] if m in recorded]

    def seeds(self, model: str) -> list[int]:
        return sorted(run["seed"] for run in self.comparison["runs"] if run["model"] == model)


def read_study(folder: str | Path) -> Study:
    """The study in report folder ``folder``; :class:`ConfigError` naming its ``results.json`` when
    that is missing, damaged or holds no run."""
    path = Path(folder) / RESULTS_FILE
    try:
        comparison = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: {folder} is not a compare report folder") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable results file ({exc}); rewrite it with "
                          f"'crmvae compare ... --report-only'") from None
    _check_results(comparison, path)
    return Study(Path(folder), comparison)


def _check_results(comparison: Any, path: Path) -> None:
    """A :class:`ConfigError` naming ``path`` unless ``comparison`` has what the tables read."""
    def fail(what: str) -> ConfigError:
        return ConfigError(f"{path}: not a compare results file ({what}); rewrite it with 'crmvae compare ... --report-only'")
    if not isinstance(comparison, dict):
        raise fail(f"a {type(comparison).__name__}, not a mapping")
    for key, kind in (("config", dict), ("runs", list), ("records", list), ("aggregate", dict)):
        if not isinstance(comparison.get(key), kind):
            raise fail(f"'{key}' is missing or not a {kind.__name__}")
    config = comparison["config"]
    if not all(isinstance(config.get(k), str) for k in ("dataset", "preset")) or not isinstance(config.get("models"), list):
        raise fail("config lacks its dataset, preset or models")
    if not comparison["runs"]:
        raise fail("no run")
    needed = {"model": str, "seed": int, "epochs": int, "result": dict, "run_config": dict, "summary": dict}
    for i, run in enumerate(comparison["runs"] + comparison["records"]):
        if not isinstance(run, dict) or not all(isinstance(run.get(k), kind) for k, kind in needed.items()):
            raise fail(f"run or record {i} lacks one of {sorted(needed)}")


# --------------------------------------------------------------------------------------------
# tables


def _link(study: Study, base: Path, text: str | None = None) -> str:
    """A link to the study's report, relative to ``base``, named by its folder (or ``text``)."""
    target = Path(os.path.relpath(study.folder / MARKDOWN_FILE, base)).as_posix()
    return f"[{text or f'`{study.folder.name}`'}]({target})"


def _title(study: Study) -> str:
    return f"`{study.dataset}`, `{study.preset}`"


def _settings(study: Study) -> str:
    """beta, learning rate, batch, latent size and tuples per pass, from the first run's
    configuration and summary (a value they lack is left out)."""
    run = study.comparison["runs"][0]
    model, train = run["run_config"].get("model") or {}, run["run_config"].get("train") or {}
    values = [("beta", (model.get("objective_params") or {}).get("beta"), "g"), ("lr", train.get("lr"), "g"),
              ("batch", train.get("batch_size"), "d"), ("latent", model.get("latent_dim"), "d")]
    parts = [f"{name} {value:{spec}}" for name, value, spec in values
             if isinstance(value, (int, float)) and not isinstance(value, bool) and (spec == "g" or isinstance(value, int))]
    seen = run["summary"].get("examples_seen")
    if isinstance(seen, int) and run["epochs"] > 0:
        parts.append(f"{seen // run['epochs']:,} tuples a pass")
    return ", ".join(parts)


def _models_and_seeds(study: Study) -> str:
    """``crmvae, mvtcae x 3 (seeds 0-2); mopoe x 2 (seeds 0-1)``: models grouped by their seeds."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for model in study.models:
        groups.setdefault(tuple(study.seeds(model)), []).append(model)
    def seeds(s: tuple[int, ...]) -> str:
        contiguous = list(s) == list(range(s[0], s[-1] + 1))
        return f"seed {s[0]}" if len(s) == 1 else f"seeds {s[0]}-{s[-1]}" if contiguous else "seeds " + ", ".join(map(str, s))
    return "; ".join(f"{', '.join(models)} x {len(s)} ({seeds(s)})" for s, models in groups.items())


def studies_table(studies: Sequence[Study], base: Path) -> str:
    """One row per study: its report, data and preset, settings, models x seeds and snapshots."""
    rows = ["| study | data, preset | settings | models x seeds | snapshots (epochs) |", "|---|---|---|---|---|"]
    for study in studies:
        epochs = sorted({int(r["epochs"]) for r in study.comparison["records"]})
        rows.append(f"| {_link(study, base)} | {_title(study)} | {_settings(study)} | {_models_and_seeds(study)} "
                    f"| {', '.join(map(str, epochs))} |")
    return "\n".join(rows)


def _verdicts(study: Study) -> dict[str, Verdict]:
    """The study's claims decided at its last snapshot, by label (none for a dataset without claims)."""
    claims = study_claims(study.dataset, study.models)
    return {v.claim.label: v for v in check_claims(claims, study.comparison["runs"], study.models)}


def _since(study: Study) -> dict[str, int]:
    """Per claim, the first snapshot from which every later snapshot gives the last one's verdict."""
    budget = claims_by_budget({**study.comparison, "config": {**study.comparison["config"], "models": study.models}})
    since = {}
    for label, verdicts in budget.rows:
        first = len(verdicts) - 1
        while first > 0 and verdicts[first - 1] == verdicts[-1]:
            first -= 1
        since[label] = budget.epochs[first]
    return since


def _cell(verdict: Verdict | None, since: int | None, final: int, full: bool) -> str:
    """A verdict for a claims table: the word, and (``full``) the snapshot it stands from and its headline."""
    if verdict is None:
        return ""
    word = "undecided" if verdict.verdict == UNDECIDED else verdict.verdict
    if not full:
        return word
    standing = f" from epoch {since}" if verdict.verdict in (HOLDS, FAILS) and since is not None and since < final else ""
    return f"**{word}**{standing}: {verdict.headline}"


def claims_table(studies: Sequence[Study], base: Path, full: bool) -> str:
    """One row per claim (in the order the studies' datasets list them), one column per study."""
    verdicts = [_verdicts(s) for s in studies]
    since = [_since(s) if full else {} for s in studies]
    claims: dict[str, Claim] = {}
    for per_study in verdicts:
        for label, verdict in per_study.items():
            if verdict.claim.kind != "measured":  # reported in the numbers, not decided
                claims.setdefault(label, verdict.claim)
    header = "| claim | " + " | ".join(f"{_link(s, base, _title(s))}, {s.final} epochs" for s in studies) + " |"
    rows = [header, "|---" * (len(studies) + 1) + "|"]
    for label, claim in claims.items():
        cells = [_cell(v.get(label), t.get(label), s.final, full) for v, t, s in zip(verdicts, since, studies)]
        rows.append(f"| {label} {claim.brief} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _mean(aggregate: Mapping[str, Any], key: str, digits: int, seeds: int) -> str:
    """The mean of ``key`` over the seeds, and how many seeds it has when fewer than ``seeds``."""
    entry = aggregate.get(key)
    if not entry or entry.get("mean") is None:
        return ""
    n = entry.get("n", seeds)
    return f"{entry['mean']:.{digits}f}" + (f" (n={n})" if n < seeds else "")


def numbers_table(study: Study) -> str:
    """Every model's means over its seeds at the last snapshot."""
    aggregate = study.comparison["aggregate"]
    sizes = sorted({int(k.rsplit(".", 1)[1]) for a in aggregate.values() for k in a
                    if k.startswith("cross_coherence.by_size.")})
    columns = [("joint coherence", "joint_coherence", 3), ("cosine gap", "cosine_similarity_gap.mean", 3),
               ("FID (prior)", "fid.unconditional_mean", 1), ("probe k=1", "probes.by_size.1", 3),
               ("q(z\\|X): nats", "latent_usage.joint.kl", 1), ("active units", "latent_usage.joint.active_units", 1)]
    rows = ["| model | seeds | cross-coherence k=" + " / ".join(map(str, sizes)) + " | "
            + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 3) + "|"]
    for model in study.models:
        a, seeds = aggregate.get(model, {}), len(study.seeds(model))
        coherence = " / ".join(_mean(a, f"cross_coherence.by_size.{k}", 3, seeds) for k in sizes)
        rows.append(f"| {model} | {seeds} | {coherence} | "
                    + " | ".join(_mean(a, key, digits, seeds) for _, key, digits in columns) + " |")
    return "\n".join(rows)


def render_summary(studies: Sequence[Study], style: Style = "full", base: str | Path = ".") -> str:
    """The studies side by side as Markdown, links relative to ``base``."""
    if style not in STYLES:
        raise ConfigError(f"summary style {style!r} is not one of {list(STYLES)}")
    base = Path(base)
    full = style == "full"
    parts = [studies_table(studies, base)]
    if any(CLAIMS.get(s.dataset) for s in studies):  # user data has no claims of the paper
        parts.append(claims_table(studies, base, full))
    if full:
        parts += [f"**{_title(s)}** ({_link(s, base)}), means over the seeds at epoch {s.final}:\n\n{numbers_table(s)}"
                  for s in studies]
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# marked blocks


def update_blocks(path: str | Path, check: bool = False) -> list[str]:
    """Regenerate every ``summarize`` block of Markdown file ``path`` from the folders it names
    (relative to the file); the headers of the blocks that changed. ``check``: write nothing."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    changed: list[str] = []
    fenced = [m.span() for m in FENCE.finditer(text)]
    blocks = {m.start() for m in BLOCK.finditer(text) if not any(start <= m.start() < end for start, end in fenced)}
    if not blocks:
        raise ConfigError(f"{path} has no '<!-- summarize STYLE: FOLDER ... -->' ... '<!-- end summarize -->' block")

    def regenerate(match: re.Match[str]) -> str:
        if match.start() not in blocks:  # an example in fenced code
            return match.group(0)
        style, folders, old = match.group(1), match.group(2).split(), match.group(3)
        if style not in STYLES:
            raise ConfigError(f"{path}: summarize block style {style!r} is not one of {list(STYLES)}")
        if not folders:
            raise ConfigError(f"{path}: a summarize block names no report folder")
        new = render_summary([read_study(path.parent / f) for f in folders], style, path.parent)  # type: ignore[arg-type]
        if new != old:
            changed.append(f"summarize {style}: {' '.join(folders)}")
        return f"<!-- summarize {style}: {match.group(2)} -->\n{new}<!-- end summarize -->"

    updated = BLOCK.sub(regenerate, text)
    if changed and not check:
        atomic_write(path, updated)
    return changed


__all__ = ["STYLES", "Study", "claims_table", "numbers_table", "read_study", "render_summary", "studies_table",
           "update_blocks"]
