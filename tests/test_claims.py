"""The paper's claims: Welch's test by hand, verdicts of comparisons and claims, the report's table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from crmvae.evaluation.claims import (
    FAILS,
    HOLDS,
    MEASURED,
    NOT_MEASURED,
    UNDECIDED,
    Claim,
    Comparison,
    check_claims,
    coherence_given,
    conditional_fid,
    decide,
    equivalence,
    leaf,
    mnist_svhn_text_claims,
    polymnist_claims,
    study_claims,
    welch_one_sided,
)


def test_welch_one_sided_matches_the_formula() -> None:
    a, b = [0.30, 0.32, 0.35], [0.20, 0.26]
    va, vb = stats.tvar(a) / 3, stats.tvar(b) / 2
    t = (sum(a) / 3 - sum(b) / 2) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)  # Welch-Satterthwaite
    greater, less = welch_one_sided(a, b)
    assert greater == pytest.approx(stats.t.sf(t, df)) and less == pytest.approx(stats.t.cdf(t, df))
    assert math.isnan(welch_one_sided([0.3], [0.1, 0.2])[0])  # one seed: no test
    assert all(math.isnan(p) for p in welch_one_sided([0.1, 0.1], [0.2, 0.2]))  # no spread: no test


def test_equivalence_by_two_one_sided_tests() -> None:
    near = [100.0, 101.0, 102.0]
    assert equivalence(near, [100.5, 101.5, 102.5], margin=10.0) == HOLDS
    assert equivalence([130.0, 131.0, 132.0], near, margin=10.0) == FAILS  # 30 apart, significantly beyond 10
    assert equivalence([80.0, 70.0, 90.0], near, margin=10.0) == UNDECIDED  # 21 apart, but too noisy to say
    assert equivalence([100.0], [100.0], margin=10.0) == UNDECIDED  # one seed: no test
    # 12 apart with a tight spread is beyond the margin; with a wide one it is undecided, not "does not hold"
    assert equivalence([112.0, 112.1, 111.9], [100.0, 100.1, 99.9], margin=10.0) == FAILS
    assert equivalence([112.0, 104.0, 120.0], [100.0, 100.1, 99.9], margin=10.0) == UNDECIDED


def test_a_comparison_holds_fails_or_stays_undecided() -> None:
    better = Comparison("k=1", leaf("x"), "a", "b")
    assert decide(better, {"a": [0.9, 0.91, 0.92], "b": [0.1, 0.11, 0.12]}).verdict == HOLDS
    assert decide(better, {"a": [0.1, 0.11, 0.12], "b": [0.9, 0.91, 0.92]}).verdict == FAILS
    assert decide(better, {"a": [0.5, 0.9], "b": [0.4, 0.8]}).verdict == UNDECIDED  # spread hides it
    assert decide(better, {"a": [0.9], "b": [0.1]}).verdict == UNDECIDED  # one seed
    assert decide(better, {"a": [0.9]}) is None
    lower = Comparison("FID", leaf("x"), "a", "b", higher=False)  # lower is better
    outcome = decide(lower, {"a": [10.0, 11.0, 12.0], "b": [50.0, 51.0, 52.0]})
    assert outcome.verdict == HOLDS and outcome.diff == pytest.approx(-40.0)


def run(model: str, by_size: list[float], fid: float = 50.0, gap: float = 0.1, joint: float = 0.2) -> dict[str, Any]:
    return {"model": model, "result": {
        "cross_coherence": {"by_size": {str(k + 1): v for k, v in enumerate(by_size)},
                            "table": {"svhn": {"mnist": by_size[0]}, "mnist": {"svhn": by_size[0], "text": by_size[0]}}},
        "fid": {"by_size": {"m0": {"1": fid, "2": fid + 2.0}}},
        "cosine_similarity_gap": {"mean": gap, "stderr": 0.01, "examples": 100}, "joint_coherence": joint}}


def test_scores_of_one_run() -> None:
    r = run("a", [0.1, 0.2], fid=40.0)["result"]
    assert conditional_fid(r) == pytest.approx(41.0)
    assert coherence_given("svhn")(r) == pytest.approx(0.1) and coherence_given("text")(r) == pytest.approx(0.1)
    assert leaf("cross_coherence.by_size.2")(r) == pytest.approx(0.2) and leaf("nope.x")(r) is None


def test_claims_on_constructed_seeds() -> None:
    runs = []
    for s in range(3):
        jitter = 0.002 * s
        runs += [
            run("crmvae", [0.6 + jitter, 0.7 + jitter, 0.8 + jitter, 0.85 + jitter], fid=60 + s, gap=0.3 + jitter),
            run("mvtcae", [0.5 + jitter, 0.6 + jitter, 0.9 + jitter, 0.95 + jitter], fid=62 + s, gap=0.1 + jitter),
            run("mvae", [0.2 + jitter, 0.2, 0.2 - jitter, 0.2], fid=59 + s),
        ]
    verdicts = {v.claim.label: v for v in check_claims(polymnist_claims(5), runs, ["crmvae", "mvtcae", "mvae"])}
    # (a) crmvae above mvtcae at k=1, 2 but significantly below at k=3, 4
    assert verdicts["(a)"].verdict == FAILS and "2/4 differences in the claimed direction" in verdicts["(a)"].effect
    assert verdicts["(b)"].verdict == NOT_MEASURED and "mopoe" in verdicts["(b)"].effect
    assert verdicts["(d')"].verdict == HOLDS  # 61.5 vs 60.5 mean: within 10 %
    assert verdicts["(e)"].verdict == HOLDS and "+0.2" in verdicts["(e)"].effect
    assert verdicts["(f)"].verdict == MEASURED and "crmvae 0.200 ± 0.000" in verdicts["(f)"].effect
    assert "effective classes" not in verdicts["(f)"].effect  # a score that no run has is left out
    runs[0]["result"]["joint_coherence_labels"] = {"effective_classes": 1.2}
    measured = check_claims(polymnist_claims(5)[-1:], runs, ["crmvae", "mvtcae"])[0].effect
    assert measured.endswith("effective classes of its agreeing samples: crmvae 1.200"), measured
    # (c) restricted to the models present
    mvae_lowest = Claim("(c)", "", tuple(Comparison(f"k={k}", leaf(f"cross_coherence.by_size.{k}"), m, "mvae")
                                         for m in ("crmvae", "mvtcae") for k in range(1, 5)))
    assert check_claims([mvae_lowest], runs, ["crmvae"])[0].verdict == HOLDS



def test_claims_about_crmvae_are_restated_for_each_of_its_variants() -> None:
    """A study with crmvae@recon_coef=half decides (a), (b), (d') and (e) again with the variant in
    CRMVAE's place; (c), (d) and (f), which are not about CRMVAE alone, are not restated."""
    half = "crmvae@recon_coef=half"
    models = ["crmvae", half, "mvtcae", "mvae@beta=2"]
    claims = study_claims("polymnist", models)
    labels = [c.label for c in claims]
    assert labels == [c.label for c in polymnist_claims(5)] + [
        "(a)@recon_coef=half", "(b)@recon_coef=half", "(d')@recon_coef=half", "(e)@recon_coef=half"]
    restated = {c.label: c for c in claims}["(a)@recon_coef=half"]
    assert {(x.better, x.worse) for x in restated.comparisons} == {(half, "mvtcae")}
    assert restated.brief == polymnist_claims(5)[0].brief and half in restated.statement
    runs = []
    for s in range(3):
        jitter = 0.002 * s
        runs += [run("crmvae", [0.2 + jitter] * 4, gap=0.1 + jitter), run(half, [0.6 + jitter] * 4, gap=0.3 + jitter),
                 run("mvtcae", [0.4 + jitter] * 4, gap=0.2 + jitter)]
    verdicts = {v.claim.label: v.verdict for v in check_claims(claims, runs, models)}
    assert verdicts["(a)"] == FAILS and verdicts["(a)@recon_coef=half"] == HOLDS
    assert verdicts["(e)"] == FAILS and verdicts["(e)@recon_coef=half"] == HOLDS
    assert study_claims("user", models) == []
    assert [c.label for c in study_claims("polymnist", ["crmvae", "mvtcae"])] == labels[:7]


def test_mnist_svhn_text_claims_on_constructed_seeds() -> None:
    """(g) by the coherence given SVHN and given text; the ablation (a) over its subset sizes 1 and 2; (e)."""
    runs = []
    for s in range(2):
        jitter = 0.002 * s
        runs += [run("crmvae", [0.6 + jitter, 0.7 + jitter], gap=0.3 + jitter),
                 run("mvtcae", [0.5 + jitter, 0.6 + jitter], gap=0.1 + jitter),
                 run("mopoe", [0.4 + jitter, 0.9 + jitter], gap=0.2 + jitter)]
    claims = mnist_svhn_text_claims()
    assert [c.label for c in claims] == ["(g)", "(a)", "(e)"]
    assert [c.label for c in claims[1].comparisons] == ["at k=1", "at k=2"]
    verdicts = {v.claim.label: v for v in check_claims(claims, runs, ["crmvae", "mvtcae", "mopoe"])}
    assert verdicts["(g)"].verdict == HOLDS and "4/4 differences in the claimed direction" in verdicts["(g)"].effect
    assert verdicts["(a)"].verdict == HOLDS and verdicts["(e)"].verdict == HOLDS
    runs[-1] = run("mopoe", [0.9, 0.9], gap=0.2)  # mopoe given svhn/text above crmvae in one seed: undecided
    assert check_claims(claims, runs, ["crmvae", "mvtcae", "mopoe"])[0].verdict == UNDECIDED


def test_the_weakest_comparison_is_the_one_with_the_least_evidence() -> None:
    # k=1: a small but steady lead (significant); k=2: a large but noisy one (not significant)
    runs = [run("crmvae", [0.30 + 0.001 * s, 0.6 + 0.2 * s]) for s in range(2)]
    runs += [run("mvtcae", [0.20 + 0.001 * s, 0.3]) for s in range(2)]
    claim = Claim("(a)", "", tuple(Comparison(f"at k={k}", leaf(f"cross_coherence.by_size.{k}"), "crmvae", "mvtcae")
                                   for k in (1, 2)))
    verdict = check_claims([claim], runs, ["crmvae", "mvtcae"])[0]
    assert verdict.verdict == UNDECIDED and "1 significant" in verdict.effect
    assert "weakest: crmvae - mvtcae at k=2 = +0.4" in verdict.effect


def test_claims_at_each_snapshot_show_the_budget_a_claim_needs() -> None:
    """(a) fails after 1 epoch (crmvae below mvtcae), holds after 3; FID is measured at 3 only."""
    from crmvae.evaluation.report import Report, claims_by_budget, render_markdown

    records = []
    for epochs, lead in ((1, -0.1), (3, 0.1)):
        for s in range(3):
            jitter = 0.002 * s
            for model, base in (("crmvae", 0.5 + lead), ("mvtcae", 0.5)):
                entry = run(model, [base + jitter] * 4, gap=0.1 + jitter)
                if epochs == 1:
                    del entry["result"]["fid"]
                records.append({**entry, "epochs": epochs, "seed": s})
    comparison = {"config": {"dataset": "polymnist", "models": ["crmvae", "mvtcae"]}, "records": records}
    budget = claims_by_budget(comparison)
    assert budget.epochs == [1, 3]
    rows = dict(budget.rows)
    assert rows["(a)"] == [FAILS, HOLDS] and rows["(e)"] == [UNDECIDED, UNDECIDED]  # equal gaps: no difference
    assert rows["(b)"] == [NOT_MEASURED, NOT_MEASURED]
    md = render_markdown(Report("t", [], [], claims=[("(a)", "s", "e", HOLDS)], claims_by_budget=budget), Path("."))
    assert "| claim | 1 epoch | 3 epochs |" in md and f"| (a) | {FAILS} | {HOLDS} |" in md
