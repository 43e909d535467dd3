"""Behaviour tests (field cases): loading, scoring per kind, and the bundled model's floors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kefu_router.predictor import Predictor
from kefu_router.training.behaviour import OWN_CASES, Case, load_cases, run_cases

SHARED_CASES = Path(__file__).resolve().parents[2] / "shared" / "cases" / "field_cases.jsonl"


def test_the_projects_own_cases_cover_every_kind_of_the_shared_ones_ten_times():
    own = load_cases(OWN_CASES)
    kinds = {c.kind for c in own}
    assert len({c.id for c in own}) == len(own)
    assert all(sum(c.kind == k for c in own) >= 10 for k in kinds) and len(kinds) >= 16
    if SHARED_CASES.is_file():
        shared = load_cases(SHARED_CASES)
        assert {c.kind for c in shared} <= kinds and not {c.id for c in shared} & {c.id for c in own}


@pytest.mark.parametrize("line, reason", [
    ('{"id": "x", "kind": "k", "text": "好的", "expected": {"emotion": "calm", "intent": "other"}}', "calm"),
    ('{"id": "x", "kind": "k", "turns": [{"role": "customer", "text": "在吗"}, {"role": "agent", "text": "在"}], '
     '"expected": {"emotion": "neutral", "intent": "chitchat"}}', "customer"),
    ('{"id": "x", "kind": "k"}', "text"),
    ("not json", "Expecting value"),
])
def test_a_bad_case_is_reported_with_its_line(tmp_path, line, reason):
    path = tmp_path / "cases.jsonl"
    path.write_text('{"id": "ok", "kind": "k", "text": "在吗", "expected": {"emotion": "neutral", "intent": "chitchat"}}\n' + line + "\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match=rf"cases.jsonl:2: .*{reason}"):
        load_cases(path)


def test_pass_rates_are_counted_per_kind(tiny_bundle):
    predictor = Predictor(tiny_bundle)
    got = predictor.predict(["在吗"])[0]
    right = Case("a", "k1", (("customer", "在吗"),), got["emotion"]["label"], got["intent"]["label"], ())
    wrong_intent = next(i for i in ("other", "chitchat") if i != got["intent"]["label"])
    wrong = Case("b", "k1", (("customer", "在吗"),), got["emotion"]["label"], wrong_intent, ())
    report = run_cases(predictor, [right, wrong])
    assert report["k1"]["cases"] == 2 and report["k1"]["passed"] == 1 and report["k1"]["pass_rate"] == 0.5
    assert report["k1"]["failures"] == [{"id": "b", "got": [got["emotion"]["label"], got["intent"]["label"]],
                                         "expected": [got["emotion"]["label"], wrong_intent]}]
    assert report["_overall"]["cases"] == 2 and json.dumps(report)
