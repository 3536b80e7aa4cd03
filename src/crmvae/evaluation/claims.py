"""The paper's claims, checked on a study's per-seed results.

Each claim is a set of one-sided comparisons "model A's score is better than model B's". One
comparison is decided by Welch's t-test across seeds (``scipy.stats.ttest_ind`` with unequal
variances) at level ``ALPHA``: *holds* when A is significantly better, *fails* when significantly
worse, *undecided* otherwise, and always undecided with fewer than two seeds on a side. A claim
holds when all its comparisons hold, does not hold when any fails, and is undecided at this
budget otherwise; a claim about a model the study lacks is *not measured*. The comparisons of a
claim are not corrected for multiplicity: "holds" asks every one of them to pass on its own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from .compare import VARIANT_SEPARATOR

ALPHA = 0.05
#: Relative difference of means under which two FIDs count as close.
CLOSE = 0.10

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided at this budget"
NOT_MEASURED, MEASURED = "not measured", "measured"

#: ``score(result) -> value`` for one run's evaluation result; ``None`` when it lacks the score.
Score = Callable[[Mapping[str, Any]], "float | None"]


# --------------------------------------------------------------------------------------------
# scores of one run


def _get(result: Mapping[str, Any], path: str) -> float | None:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) else None


def leaf(path: str) -> Score:
    """The score at dotted ``path`` of the result (``cross_coherence.by_size.1``)."""
    return lambda result: _get(result, path)


def conditional_fid(result: Mapping[str, Any]) -> float | None:
    """Mean FID of the images generated from subsets, over targets and subset sizes."""
    by_size = (result.get("fid") or {}).get("by_size") or {}
    values = [v for per_size in by_size.values() for v in per_size.values()]
    return float(np.mean(values)) if values else None


def coherence_given(modality: str) -> Score:
    """Mean cross-coherence of the other modalities generated from ``modality`` alone."""
    def score(result: Mapping[str, Any]) -> float | None:
        table = (result.get("cross_coherence") or {}).get("table") or {}
        values = [per_subset[modality] for per_subset in table.values() if modality in per_subset]
        return float(np.mean(values)) if values else None
    return score


# --------------------------------------------------------------------------------------------
# one comparison


@dataclass(frozen=True)
class Comparison:
    """``better`` scores above ``worse`` on ``score`` (below, when ``higher`` is false)."""

    label: str
    score: Score
    better: str
    worse: str
    higher: bool = True


@dataclass(frozen=True)
class Outcome:
    """A decided comparison: the difference of means (better - worse, in the score's units), the
    one-sided p-values for the claimed direction and against it, and the verdict."""

    comparison: Comparison
    diff: float
    p: float
    p_against: float
    n: tuple[int, int]
    verdict: str


def welch_one_sided(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """One-sided Welch p-values for ``mean(a) > mean(b)`` and for ``mean(a) < mean(b)``; NaN with
    fewer than two values on a side, or with no spread on either side (no test applies)."""
    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return math.nan, math.nan
    with warnings.catch_warnings():  # nearly equal values: scipy warns of round-off, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        greater = float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
        less = float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    return greater, less


def equivalence(a: Sequence[float], b: Sequence[float], margin: float) -> str:
    """Whether ``mean(a) - mean(b)`` lies within ``±margin``, by two one-sided Welch tests (TOST)
    at level ``ALPHA``: *holds* when both ``diff > -margin`` and ``diff < margin`` are significant,
    *fails* when ``diff > margin`` or ``diff < -margin`` is, *undecided* otherwise (one seed
    included)."""
    above_low, below_low = welch_one_sided([v + margin for v in a], b)  # diff > -margin / diff < -margin
    above_high, below_high = welch_one_sided([v - margin for v in a], b)  # diff > margin / diff < margin
    if above_low < ALPHA and below_high < ALPHA:
        return HOLDS
    if above_high < ALPHA or below_low < ALPHA:
        return FAILS
    return UNDECIDED


def decide(comparison: Comparison, values: Mapping[str, Sequence[float]]) -> Outcome | None:
    """The outcome of ``comparison`` on per-model seed values; ``None`` when a model has none."""
    a, b = values.get(comparison.better, []), values.get(comparison.worse, [])
    if not a or not b:
        return None
    sign = 1.0 if comparison.higher else -1.0
    greater, less = welch_one_sided([sign * v for v in a], [sign * v for v in b])
    verdict = HOLDS if greater < ALPHA else FAILS if less < ALPHA else UNDECIDED
    return Outcome(comparison, float(np.mean(a) - np.mean(b)), greater, less, (len(a), len(b)), verdict)


# --------------------------------------------------------------------------------------------
# claims


@dataclass(frozen=True)
class Claim:
    """A statement of the paper, checked by ``comparisons`` (all must hold); ``kind`` ``"close"``
    checks instead that each pair's means differ by at most :data:`CLOSE` of the second model's
    mean (:func:`equivalence`), and
    ``"measured"`` only reports ``scores`` per model. ``short`` words the statement for a table of
    several studies (default: ``statement``)."""

    label: str
    statement: str
    comparisons: tuple[Comparison, ...] = ()
    kind: str = "better"
    scores: tuple[tuple[str, Score], ...] = ()
    short: str = ""

    @property
    def brief(self) -> str:
        return self.short or self.statement


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict, the measured effect in words, and its ``headline``: the part of the
    effect that decides the verdict (the weakest comparison), for a table of several studies."""

    claim: Claim
    verdict: str
    effect: str
    headline: str


def _values(runs: Sequence[Mapping[str, Any]], score: Score) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for run in runs:
        value = score(run["result"])
        if value is not None:
            values.setdefault(run["model"], []).append(value)
    return values


def _p(p: float) -> str:
    return "n/a (one seed)" if math.isnan(p) else f"{p:.3g}"


def _better_verdict(claim: Claim, runs: Sequence[Mapping[str, Any]]) -> Verdict:
    outcomes = [decide(c, _values(runs, c.score)) for c in claim.comparisons]
    if any(o is None for o in outcomes):
        lacking = sorted({m for c, o in zip(claim.comparisons, outcomes) if o is None for m in (c.better, c.worse)
                          if not _values(runs, c.score).get(m)})
        effect = f"no results for {', '.join(lacking)}"
        return Verdict(claim, NOT_MEASURED, effect, effect)
    decided = [o for o in outcomes if o is not None]
    verdict = FAILS if any(o.verdict == FAILS for o in decided) else HOLDS if all(o.verdict == HOLDS for o in decided) \
        else UNDECIDED
    tested = [o for o in decided if not math.isnan(o.p)]  # the least evidence: largest p, else smallest effect
    weakest = max(tested, key=lambda o: o.p) if tested else min(decided, key=lambda o: o.diff * (1 if o.comparison.higher else -1))
    right_way = sum((o.diff > 0) == o.comparison.higher and o.diff != 0 for o in decided)
    c = weakest.comparison
    headline = (f"{c.better} - {c.worse} {c.label} = {weakest.diff:+.4g} "
                f"(p = {_p(weakest.p)}, seeds {weakest.n[0]}/{weakest.n[1]})")
    effect = (f"{right_way}/{len(decided)} differences in the claimed direction, "
              f"{sum(o.verdict == HOLDS for o in decided)} significant, {sum(o.verdict == FAILS for o in decided)} "
              f"significantly against; weakest: {headline}")
    return Verdict(claim, verdict, effect, f"{right_way}/{len(decided)} in its direction; weakest: {headline}")


def _close_verdict(claim: Claim, runs: Sequence[Mapping[str, Any]]) -> Verdict:
    parts, verdicts = [], []
    for c in claim.comparisons:
        values = _values(runs, c.score)
        a, b = values.get(c.better, []), values.get(c.worse, [])
        if not a or not b:
            effect = f"no results for {c.better if not a else c.worse}"
            return Verdict(claim, NOT_MEASURED, effect, effect)
        relative = (np.mean(a) - np.mean(b)) / abs(np.mean(b))
        outcome = equivalence(a, b, CLOSE * abs(np.mean(b)))
        verdicts.append(outcome)
        parts.append(f"{c.better} {np.mean(a):.4g} vs {c.worse} {np.mean(b):.4g} {c.label}: {relative:+.1%} "
                     f"(close: within {CLOSE:.0%}; seeds {len(a)}/{len(b)})")
    verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else UNDECIDED
    return Verdict(claim, verdict, "; ".join(parts), "; ".join(parts))


def _measured(claim: Claim, runs: Sequence[Mapping[str, Any]], models: Sequence[str]) -> Verdict:
    parts = []
    for name, score in claim.scores:
        values = _values(runs, score)
        cells = [f"{m} {np.mean(values[m]):.3f}" + (f" ± {np.std(values[m], ddof=1):.3f}" if len(values[m]) > 1 else "")
                 for m in models if m in values]
        if cells:
            parts.append(f"{name}: " + ", ".join(cells))
    text = "; ".join(parts) or f"{claim.scores[0][0]}: no results"  # a score no record has is left out
    return Verdict(claim, MEASURED, text, text)


def check_claims(claims: Sequence[Claim], runs: Sequence[Mapping[str, Any]], models: Sequence[str]) -> list[Verdict]:
    """The verdict of every claim on ``runs`` (entries with ``model`` and ``result``, one per seed)."""
    checks = {"better": _better_verdict, "close": _close_verdict}
    return [_measured(c, runs, models) if c.kind == "measured" else checks[c.kind](c, runs) for c in claims]


# --------------------------------------------------------------------------------------------
# the paper's claims per dataset


def _all_sizes(better: str, worse: Sequence[str], sizes: Sequence[int]) -> tuple[Comparison, ...]:
    return tuple(Comparison(f"at k={k}", leaf(f"cross_coherence.by_size.{k}"), better, w)
                 for w in worse for k in sizes)


def ablation_claim(sizes: Sequence[int]) -> Claim:
    """(a): CRMVAE above MVTCAE in cross-coherence at every subset size in ``sizes``."""
    return Claim("(a)", "CRMVAE's cross-coherence is above MVTCAE's at every subset size (the ablation: the "
                        "unimodal reconstruction is the only difference)", _all_sizes("crmvae", ["mvtcae"], sizes),
                 short="CRMVAE above MVTCAE in cross-coherence at every subset size (the ablation)")


def alignment_claim() -> Claim:
    """(e): CRMVAE's unimodal posteriors more aligned than MVTCAE's (latent cosine-similarity gap)."""
    return Claim("(e)", "CRMVAE's unimodal posteriors are more aligned (latent cosine-similarity gap) than MVTCAE's",
                 (Comparison("cosine gap", leaf("cosine_similarity_gap.mean"), "crmvae", "mvtcae"),),
                 short="CRMVAE's unimodal posteriors more aligned than MVTCAE's")


def polymnist_claims(modalities: int = 5) -> list[Claim]:
    """Claims (a)-(f) on PolyMNIST-like data with ``modalities`` modalities."""
    sizes = range(1, modalities)
    others = ("crmvae", "mvtcae", "mopoe", "mmvae", "mmjsd", "mmjsd_poe")
    fid = [Comparison("FID", conditional_fid, c, m, higher=False)
           for c in ("crmvae", "mvtcae") for m in ("mopoe", "mmvae", "mmjsd")]
    return [
        ablation_claim(sizes),
        Claim("(b)", "CRMVAE's cross-coherence is above MoPoE's, MMJSD-PoE's and MVAE's at every subset size",
              _all_sizes("crmvae", ["mopoe", "mmjsd_poe", "mvae"], sizes),
              short="CRMVAE above MoPoE, MMJSD-PoE and MVAE in cross-coherence"),
        Claim("(c)", "MVAE has the lowest cross-coherence",
              tuple(c for o in others for c in _all_sizes(o, ["mvae"], sizes)), short="MVAE lowest in cross-coherence"),
        Claim("(d)", "the coordination-based models (CRMVAE, MVTCAE) have lower FID than the mixture-based ones "
                     "(MoPoE, MMVAE, MMJSD)", tuple(fid),
              short="CRMVAE and MVTCAE below MoPoE, MMVAE and MMJSD in FID"),
        Claim("(d')", "CRMVAE's FID is close to MVAE's",
              (Comparison("FID", conditional_fid, "crmvae", "mvae", higher=False),), kind="close",
              short="CRMVAE's FID close to MVAE's"),
        alignment_claim(),
        Claim("(f)", "joint coherence, as measured", kind="measured",
              scores=(("joint coherence", leaf("joint_coherence")),
                      ("effective classes of its agreeing samples", leaf("joint_coherence_labels.effective_classes")))),
    ]


def mnist_svhn_text_claims() -> list[Claim]:
    """(g): CRMVAE's coherence given SVHN and given text is above MVTCAE's and MoPoE's; with the
    ablation (a) over its subset sizes 1 and 2 and the alignment (e) of the PolyMNIST claims."""
    return [
        Claim("(g)", "CRMVAE's coherence given SVHN and given text is above MVTCAE's and MoPoE's",
              tuple(Comparison(f"given {m}", coherence_given(m), "crmvae", other)
                    for m in ("svhn", "text") for other in ("mvtcae", "mopoe")),
              short="CRMVAE above MVTCAE and MoPoE given SVHN and given text"),
        ablation_claim(range(1, 3)),
        alignment_claim(),
    ]


#: The claims checked in a study's report, per dataset.
CLAIMS: dict[str, Callable[[], list[Claim]]] = {
    "polymnist": polymnist_claims,
    "translated_polymnist": polymnist_claims,
    "mnist_svhn_text": mnist_svhn_text_claims,
}


def variant_claims(claims: Sequence[Claim], models: Sequence[str], base: str = "crmvae") -> list[Claim]:
    """The claims about ``base`` alone (every comparison has it on one side) restated for each
    variant of it among ``models`` (``crmvae@recon_coef=half``): labelled ``(a)@recon_coef=half``,
    with the claim's own short wording (the label names the variant)."""
    variants = [m for m in models if m.split(VARIANT_SEPARATOR)[0] == base and VARIANT_SEPARATOR in m]
    about_base = [c for c in claims if c.comparisons and all(base in (x.better, x.worse) for x in c.comparisons)]
    restated = []
    for variant in variants:
        suffix = variant.split(VARIANT_SEPARATOR, 1)[1]
        for claim in about_base:
            comparisons = tuple(replace(x, better=variant if x.better == base else x.better,
                                        worse=variant if x.worse == base else x.worse) for x in claim.comparisons)
            restated.append(replace(claim, label=f"{claim.label}{VARIANT_SEPARATOR}{suffix}",
                                    statement=f"{claim.label} with {variant} as CRMVAE: {claim.statement}",
                                    short=claim.brief, comparisons=comparisons))
    return restated


def study_claims(dataset: str, models: Sequence[str]) -> list[Claim]:
    """The claims a study of ``models`` on ``dataset`` decides: the dataset's own (:data:`CLAIMS`;
    none for a dataset without claims), then those about CRMVAE again for each of its variants."""
    make = CLAIMS.get(dataset)
    claims = make() if make is not None else []
    return claims + variant_claims(claims, models)


__all__ = [
    "ALPHA",
    "CLAIMS",
    "CLOSE",
    "Claim",
    "Comparison",
    "Outcome",
    "Verdict",
    "check_claims",
    "coherence_given",
    "conditional_fid",
    "decide",
    "equivalence",
    "leaf",
    "study_claims",
    "variant_claims",
    "welch_one_sided",
]
