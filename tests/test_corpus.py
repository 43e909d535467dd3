"""The committed corpus: valid against the schema, leak-free splits, the promised minimums,
and in sync with its hand-written sources."""

from __future__ import annotations

import collections
import json

import pytest

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT
from kefu_router.training.corpus.build_corpus import CORPUS, DATA_DIR
from kefu_router.training.corpus.corpus_source import parse, stats, to_rows
from kefu_router.training.data import load_examples

MIN_MESSAGES, MIN_CONVERSATIONS = 6000, 1200
MIN_PER_EMOTION, MIN_PER_INTENT, MIN_PER_TRAIT = 400, 400, 250
MIN_CATEGORIES, MIN_SHORT_SHARE, MIN_TYPO_SHARE, MAX_NEAR_DUPLICATES = 15, 0.25, 0.10, 0.01


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def test_corpus_validates_against_the_schema():
    pytest.importorskip("datasets")
    examples, report = load_examples(CORPUS)  # raises DataError on any bad row
    assert not report.skipped and len(examples) >= MIN_MESSAGES


def test_no_conversation_crosses_splits(rows):
    split_of = collections.defaultdict(set)
    for r in rows:
        split_of[r["conversation_id"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {s for v in split_of.values() for s in v} == {"train", "dev", "test"}


def test_splits_are_the_frozen_ones(rows):
    from kefu_router.training.corpus.build_corpus import read_frozen

    frozen = read_frozen()
    assert {r["conversation_id"]: r["split"] for r in rows} == frozen


def test_minimums_hold(rows):
    s = stats(rows)
    assert s["customer_messages"] >= MIN_MESSAGES and s["conversations"] >= MIN_CONVERSATIONS
    assert all(s["emotion"][e] >= MIN_PER_EMOTION for e in EMOTION.labels), s["emotion"]
    assert all(s["intent"][i] >= MIN_PER_INTENT for i in INTENT.labels), s["intent"]
    assert all(s["customer_type"][t] >= MIN_PER_TRAIT for t in CUSTOMER_TYPE.labels), s["customer_type"]
    assert len(s["categories"]) >= MIN_CATEGORIES
    assert s["short_share"] >= MIN_SHORT_SHARE and s["typo_share"] >= MIN_TYPO_SHARE
    assert s["near_duplicate_share"] < MAX_NEAR_DUPLICATES


def test_every_split_has_every_label(rows):
    for split in ("train", "dev", "test"):
        customer = [r for r in rows if r["split"] == split and r["role"] == "customer"]
        assert {r["emotion"] for r in customer} == set(EMOTION.labels), split
        assert {r["intent"] for r in customer} == set(INTENT.labels), split


def test_corpus_file_matches_its_sources(rows):
    """kefu_corpus.jsonl is generated: rebuild it after editing training/data/src."""
    conversations = [c for path in sorted((DATA_DIR / "src").glob("*.txt")) for c in parse(path)]
    expected = to_rows(conversations)
    assert [{k: v for k, v in r.items() if k != "split"} for r in rows] == expected



def test_data_card_is_generated_from_the_current_corpus():
    """DATACARD.md numbers come from `python -m kefu_router.training.corpus.datacard`: regenerate after any change."""
    from kefu_router.training.corpus.datacard import render

    assert (DATA_DIR / "DATACARD.md").read_text(encoding="utf-8") == render()
