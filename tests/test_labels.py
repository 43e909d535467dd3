"""The label schema matches shared/spec/labels.md and validates rows strictly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT, LabelError, check_labels, schema_dict, schema_digest

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "labels.md"


def spec_tables() -> list[list[tuple[str, str]]]:
    """(id, 中文) rows of each label table in the spec, in order."""
    tables, current = [], []
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([a-z_]+)`\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            current.append((m.group(1), m.group(2)))
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


@pytest.mark.skipif(not SPEC.exists(), reason="shared/spec/labels.md not beside the checkout")
def test_schema_matches_the_spec_ids_names_and_order():
    tables = spec_tables()
    assert len(tables) == len(HEADS)
    for head, table in zip(HEADS, tables):
        assert head.labels == tuple(i for i, _ in table)
        assert head.zh == tuple(z for _, z in table)


def test_only_customer_type_is_multi_label():
    assert [h.name for h in HEADS if h.multi_label] == [CUSTOMER_TYPE.name]


def test_digest_changes_when_ids_change():
    schema = schema_dict()
    schema["intent"]["labels"] = schema["intent"]["labels"][::-1]
    assert schema_digest(schema) != schema_digest()


def test_check_labels_normalises_traits_to_schema_order():
    _, _, traits = check_labels("angry", "logistics", ["chatty", "impatient", "chatty"])
    assert traits == ("impatient", "chatty")
    assert check_labels("neutral", "other", "novice;hesitant")[2] == ("novice", "hesitant")
    assert check_labels("neutral", "other", None)[2] == ()


@pytest.mark.parametrize(
    "emotion,intent,traits,reason",
    [
        ("furious", "logistics", [], "unknown emotion"),
        ("angry", "shipping", [], "unknown intent"),
        ("angry", "logistics", ["vip"], "unknown customer_type"),
        (3, "logistics", [], "must be a string"),
        ("angry", "logistics", 7, "must be a list"),
    ],
)
def test_check_labels_rejects_with_reason(emotion, intent, traits, reason):
    with pytest.raises(LabelError, match=reason):
        check_labels(emotion, intent, traits)
