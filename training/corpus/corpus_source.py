"""The hand-written corpus source format, its checker and its converter to JSON Lines.

Writers and reviewers edit compact dialogue files (training/data/src/*.txt):

    ## jd-0001 | 服装 | 淘宝
    C: 在吗在吗 || neutral chitchat impatient
    A: 在的亲，请问有什么可以帮您？
    C: 这件外套是纯棉的吗 || neutral product_inquiry quality_sensitive
    C: 好的 || neutral product_inquiry #context_confirm

A customer line carries `text || emotion intent [traits...] [#tags...]`. Traits
listed on a line are the ones the buyer *shows* in that turn; customer type is a
trait of the buyer, so `to_rows` carries every shown trait forward to the
buyer's later turns in the same conversation. Tags (`#typo`, `#sarcasm`, ...)
mark style and hard cases for the data card; they are not model labels.
"""

from __future__ import annotations

import collections
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT, LabelError, check_labels

TAGS = (
    "typo",  # typos, homophones, slang, pinyin abbreviations, emoji or emoticons
    "placeholder",  # anonymised [订单x] / [数字x] / [姓名x] / [地址x] or a real-looking order number/address
    "context_confirm",  # only makes sense in context ("对", "是的", "地址没变")
    "polite_anger",
    "sarcasm",
    "negation",
    "anxious_no_anger",
    "praise_in_complaint",
    "two_intents",
    "hidden_price",
)
SHORT_MAX_CHARS = 8


@dataclass
class Turn:
    role: str
    text: str
    line: int
    emotion: str | None = None
    intent: str | None = None
    shown_traits: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass
class Conversation:
    conversation_id: str
    category: str
    platform: str
    source_file: str
    turns: list[Turn] = field(default_factory=list)


class SourceError(ValueError):
    pass


def parse(path: Path) -> list[Conversation]:
    """Parse one source file; raise SourceError listing every bad line (file:line: reason)."""
    conversations: list[Conversation] = []
    errors: list[str] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        where = f"{path.name}:{lineno}"
        if line.startswith("##"):
            parts = [p.strip() for p in line[2:].split("|")]
            if len(parts) != 3 or not all(parts):
                errors.append(f"{where}: header must be '## id | category | platform'")
                continue
            conversations.append(Conversation(parts[0], parts[1], parts[2], path.name))
            continue
        if not conversations:
            errors.append(f"{where}: turn before the first '## ' header")
            continue
        role_code, sep, rest = line.partition(":")
        if not sep or role_code not in ("C", "A"):
            errors.append(f"{where}: a turn starts with 'C:' (customer) or 'A:' (agent)")
            continue
        if role_code == "A":
            text = rest.strip()
            if not text:
                errors.append(f"{where}: empty agent turn")
            conversations[-1].turns.append(Turn("agent", text, lineno))
            continue
        text, sep, labels = rest.partition("||")
        text = text.strip()
        if not sep or not text:
            errors.append(f"{where}: customer turn must be 'C: text || emotion intent [traits] [#tags]'")
            continue
        words = labels.split()
        tags = tuple(w[1:] for w in words if w.startswith("#"))
        words = [w for w in words if not w.startswith("#")]
        if len(words) < 2:
            errors.append(f"{where}: need at least emotion and intent after '||'")
            continue
        bad_tags = [t for t in tags if t not in TAGS]
        if bad_tags:
            errors.append(f"{where}: unknown tag(s) {bad_tags}; known: {', '.join(TAGS)}")
            continue
        try:
            emotion, intent, traits = check_labels(words[0], words[1], words[2:])
        except LabelError as exc:
            errors.append(f"{where}: {exc}")
            continue
        conversations[-1].turns.append(Turn("customer", text, lineno, emotion, intent, traits, tags))
    seen: set[str] = set()
    for conv in conversations:
        if conv.conversation_id in seen:
            errors.append(f"{path.name}: duplicate conversation id {conv.conversation_id}")
        seen.add(conv.conversation_id)
        if not any(t.role == "customer" for t in conv.turns):
            errors.append(f"{path.name}: conversation {conv.conversation_id} has no customer turn")
    if errors:
        raise SourceError("\n".join(errors))
    return conversations


def to_rows(conversations: list[Conversation]) -> list[dict]:
    """One JSON-Lines row per turn (agent turns kept for context; they carry no labels)."""
    rows = []
    for conv in conversations:
        shown: set[str] = set()
        for i, turn in enumerate(conv.turns):
            row = {
                "id": f"{conv.conversation_id}-{i:02d}",
                "conversation_id": conv.conversation_id,
                "turn": i,
                "role": turn.role,
                "text": turn.text,
                "category": conv.category,
                "platform": conv.platform,
                "source": f"kefu-corpus/{conv.source_file}",
            }
            if turn.role == "customer":
                shown.update(turn.shown_traits)
                row.update(
                    emotion=turn.emotion,
                    intent=turn.intent,
                    customer_type=[t for t in CUSTOMER_TYPE.labels if t in shown],
                    tags=list(turn.tags),
                )
            rows.append(row)
    return rows


_STRIP = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Text up to punctuation, emoji and spacing: the near-duplicate key."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _STRIP.sub("", "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN"))


def stats(rows: list[dict]) -> dict:
    """Counts the corpus minimums and the data card are checked against."""
    customer = [r for r in rows if r["role"] == "customer"]
    n = len(customer) or 1
    keys = [normalise(r["text"]) for r in customer if len(r["text"]) > SHORT_MAX_CHARS]
    key_counts = collections.Counter(keys)
    return {
        "conversations": len({r["conversation_id"] for r in rows}),
        "customer_messages": len(customer),
        "categories": dict(collections.Counter(r["category"] for r in rows if r["turn"] == 0).most_common()),
        "emotion": {k: sum(r["emotion"] == k for r in customer) for k in EMOTION.labels},
        "intent": {k: sum(r["intent"] == k for r in customer) for k in INTENT.labels},
        "customer_type": {k: sum(k in r["customer_type"] for r in customer) for k in CUSTOMER_TYPE.labels},
        "short_share": round(sum(len(r["text"]) <= SHORT_MAX_CHARS for r in customer) / n, 3),
        "tags": {t: sum(t in r["tags"] for r in customer) for t in TAGS},
        "typo_share": round(sum("typo" in r["tags"] for r in customer) / n, 3),
        # Messages longer than SHORT_MAX_CHARS whose normalised text occurs more than once.
        "near_duplicate_share": round(sum(c - 1 for c in key_counts.values() if c > 1) / n, 4),
    }


def main(argv: list[str]) -> int:
    """`python -m kefu_router.training.corpus.corpus_source check FILE...`: parse and print counts."""
    if len(argv) < 2 or argv[0] != "check":
        print(__doc__)
        print("usage: python -m kefu_router.training.corpus.corpus_source check FILE [FILE...]")
        return 2
    conversations = []
    for name in argv[1:]:
        try:
            conversations += parse(Path(name))
        except SourceError as exc:
            print(exc)
            return 1
    import json

    print(json.dumps(stats(to_rows(conversations)), ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
