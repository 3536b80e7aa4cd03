"""Study records: settings comparison."""

from __future__ import annotations

from crmvae.evaluation.records import differing_keys


def test_a_setting_added_later_matches_at_its_default() -> None:
    old = {"train": {"lr": 1e-3}}
    assert differing_keys({"train": {"lr": 1e-3, "clip": None}}, old, {"train": {"clip": None}}) == []
    assert differing_keys({"train": {"lr": 1e-3, "clip": 1.0}}, old, {"train": {"clip": None}}) == ["train.clip"]
    assert differing_keys({"train": {"lr": 1e-3, "clip": None}}, old) == ["train.clip"]  # no default known
    assert differing_keys({"train": {"lr": 1e-3}}, {"train": {"lr": 1e-3, "clip": None}}, {"train": {"clip": None}}) \
        == ["train.clip"]  # the record has a setting this version lacks
