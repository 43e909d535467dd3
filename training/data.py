"""Labelled data: load, validate, build context, de-duplicate and split.

Rows follow shared/spec/labels.md (JSON Lines, CSV or Parquet). Every row is
validated; a bad row is reported as `file:line: reason` and fails the run
unless the caller opts into skipping bad rows, in which case they are counted.
Agent turns need no labels: they are context for the customer turns after them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from kefu_router.labels import ROLES, LabelError, check_labels

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """Bad rows in a data file; the message lists each as file:line: reason."""


@dataclass(frozen=True)
class Example:
    id: str
    conversation_id: str
    text: str
    context: tuple[tuple[str, str], ...]
    emotion: str | None  # None only for weak rows that carry no label for this head
    intent: str | None
    customer_type: tuple[str, ...] | None
    split: str | None = None
    source: str = "gold"  # the row's `source` column: a corpus file, a real source (jddc_uss...) or weak:<name>


@dataclass
class LoadReport:
    path: str
    rows: int = 0
    examples: int = 0
    skipped: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0
    conflicting: list[str] = field(default_factory=list)  # ids of dropped duplicates whose labels differ

    def summary(self) -> str:
        conflicts = f" ({len(self.conflicting)} with other labels than the copy kept)" if self.conflicting else ""
        return (
            f"{self.path}: {self.rows} rows -> {self.examples} labelled messages; "
            f"{len(self.skipped)} bad rows skipped, {self.duplicates_dropped} exact duplicates dropped{conflicts}"
        )


def _read_raw(path: Path) -> list[tuple[int, object]]:
    """(line number, raw row) pairs. JSON Lines is parsed line by line so a broken line is located."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        with path.open(encoding="utf-8", errors="strict") as fh:
            try:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        rows.append((lineno, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        rows.append((lineno, DataError(f"invalid JSON ({exc.msg})")))
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not UTF-8 text ({exc})") from None
        return rows
    if suffix in (".csv", ".parquet"):
        kind = suffix[1:]
        try:
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as exc:  # pyarrow/pandas errors for a broken file
            raise DataError(f"{path}: cannot read {kind} file ({exc})") from None
        first_line = 2 if kind == "csv" else 1  # CSV line 1 is the header; Parquet counts rows from 1
        return [(first_line + i, row) for i, row in enumerate(ds)]
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv or .parquet")


def _parse_context(value: object) -> tuple[tuple[str, str], ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        value = json.loads(value)
    turns = []
    for turn in value:
        role, text = turn["role"], turn["text"]
        if role not in ROLES or not isinstance(text, str):
            raise ValueError("context turns need role customer|agent and a text string")
        turns.append((role, text))
    return tuple(turns)


def _check_row(raw: object) -> dict:
    """A validated row or ValueError with the reason."""
    if isinstance(raw, DataError):
        raise raw
    if not isinstance(raw, dict):
        raise ValueError(f"row must be an object, got {type(raw).__name__}")
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing text" if text in (None, "") or isinstance(text, str) else f"text must be a string, got {type(text).__name__}")
    role = raw.get("role") or "customer"
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected customer or agent")
    turn = raw.get("turn")
    if turn not in (None, "") and not (isinstance(turn, int) or str(turn).isdigit()):
        raise ValueError(f"turn must be an integer, got {turn!r}")
    split = raw.get("split") or None
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    row = {
        "id": str(raw.get("id") or ""),
        "conversation_id": str(raw.get("conversation_id") or ""),
        "turn": int(turn) if turn not in (None, "") else None,
        "role": role,
        "text": text.strip(),
        "split": split,
        "source": str(raw.get("source") or "gold"),
    }
    try:
        row["context"] = _parse_context(raw.get("context"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad context ({exc})") from None
    if role == "customer":
        if row["source"] in PARTIAL_SOURCES or row["source"].startswith("weak:"):
            row["labels"] = check_partial_labels(raw.get("emotion"), raw.get("intent"), raw.get("customer_type"))
        else:
            row["labels"] = check_labels(raw.get("emotion"), raw.get("intent"), raw.get("customer_type"))
    return row


PARTIAL_SOURCES = ("feedback",)  # rows that may leave a head unlabelled (null or absent), as weak rows do


def check_partial_labels(emotion: object, intent: object, customer_type: object) -> tuple:
    """check_labels for a row that may leave heads unlabelled: a None head stays None (masked in the loss,
    see label_arrays); at least one head must be given."""
    if emotion is None and intent is None and customer_type is None:
        raise LabelError("no label: at least one of emotion, intent, customer_type is needed")
    from kefu_router.labels import EMOTION, INTENT

    e, i, t = check_labels(emotion if emotion is not None else EMOTION.labels[0],
                           intent if intent is not None else INTENT.labels[0], customer_type or [])
    return (e if emotion is not None else None, i if intent is not None else None, t if customer_type is not None else None)


def load_examples(path: str | Path, skip_bad: bool = False) -> tuple[list[Example], LoadReport]:
    """Labelled customer messages with their context, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    return examples_from_rows(_read_raw(path), str(path), skip_bad)


def examples_from_rows(raw_rows: list[tuple[int, object]], origin: str, skip_bad: bool = False) -> tuple[list[Example], LoadReport]:
    """Validate (line number, raw row) pairs of one origin, build context, drop exact duplicates."""
    report = LoadReport(origin)
    rows, errors = [], []
    for lineno, raw in raw_rows:
        report.rows += 1
        try:
            row = _check_row(raw)
        except (ValueError, LabelError) as exc:
            errors.append(f"{origin}:{lineno}: {exc}")
            continue
        row["line"] = lineno
        rows.append(row)
    if errors and not skip_bad:
        shown = "\n".join(errors[:50]) + (f"\n... and {len(errors) - 50} more" if len(errors) > 50 else "")
        raise DataError(f"{len(errors)} bad row(s) (pass --skip-bad-rows to skip and count them):\n{shown}")
    report.skipped = errors
    examples = _with_context(rows)
    examples, report.duplicates_dropped = deduplicate(examples, report.conflicting)
    report.examples = len(examples)
    return examples, report


def _with_context(rows: list[dict]) -> list[Example]:
    by_conversation: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["conversation_id"]:
            by_conversation[row["conversation_id"]].append(row)
    for turns in by_conversation.values():  # `turn` orders a conversation; file order breaks ties
        turns.sort(key=lambda r: (r["turn"] if r["turn"] is not None else -1, r["line"]))
    examples = []
    for row in rows:
        if row["role"] != "customer":
            continue
        context = row["context"]
        if not context and row["conversation_id"]:
            turns = by_conversation[row["conversation_id"]]
            before = turns[: turns.index(row)]
            context = tuple((r["role"], r["text"]) for r in before)
        emotion, intent, traits = row["labels"]
        examples.append(
            Example(
                id=row["id"] or f"line{row['line']}",
                conversation_id=row["conversation_id"] or f"line{row['line']}",
                text=row["text"],
                context=context,
                emotion=emotion,
                intent=intent,
                customer_type=traits,
                split=row["split"],
                source=row["source"],
            )
        )
    return examples


def deduplicate(examples: list[Example], conflicting: list[str] | None = None) -> tuple[list[Example], int]:
    """Drop exact duplicates: the same message with the same context (first kept). The ids of dropped
    copies whose labels differ from the kept one are appended to `conflicting`, so they are reported."""
    kept: dict[tuple, Example] = {}
    for ex in examples:
        first = kept.setdefault((ex.text, ex.context), ex)
        if first is not ex and conflicting is not None and (first.emotion, first.intent, first.customer_type) != (ex.emotion, ex.intent, ex.customer_type):
            conflicting.append(ex.id)
    return list(kept.values()), len(examples) - len(kept)


def split_examples(
    examples: list[Example], dev_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 13
) -> dict[str, list[Example]]:
    """Use the rows' own `split` when every row has one; otherwise split by conversation.

    The split is grouped by conversation_id (no conversation crosses splits) and
    stratified on emotion|intent via scikit-learn's StratifiedGroupKFold.
    """
    if examples and all(ex.split for ex in examples):
        return {s: [ex for ex in examples if ex.split == s] for s in SPLITS}
    from sklearn.model_selection import StratifiedGroupKFold

    def take_fold(items: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
        groups = [ex.conversation_id for ex in items]
        n_splits = max(2, min(round(1 / fraction), len(set(groups))))
        strata = [f"{ex.emotion}|{ex.intent}" for ex in items]
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        rest_idx, fold_idx = next(splitter.split(np.zeros(len(items)), strata, groups))
        return [items[i] for i in rest_idx], [items[i] for i in fold_idx]

    import warnings

    with warnings.catch_warnings():  # tiny data sets have classes rarer than the fold count
        warnings.simplefilter("ignore", UserWarning)
        rest, test = take_fold(examples, test_fraction)
        train, dev = take_fold(rest, dev_fraction / (1 - test_fraction))
    return {"train": train, "dev": dev, "test": test}


def of_sources(examples: list[Example], sources: list[str] | tuple[str, ...]) -> list[Example]:
    """The examples whose `source` is one of `sources` (all of them when `sources` is empty)."""
    return [ex for ex in examples if ex.source in sources] if sources else list(examples)


def fingerprint(examples: list[Example]) -> str:
    """A short digest of the exact training data (text, context and labels)."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: (e.conversation_id, e.id)):
        h.update(json.dumps([ex.id, ex.text, ex.context, ex.emotion, ex.intent, ex.customer_type], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


MISSING = -100  # the ignore_index of torch's cross-entropy


def label_arrays(examples: list[Example]) -> dict[str, np.ndarray]:
    """Targets as arrays: class ids for emotion and intent, a 0/1 matrix for customer_type.

    A head a weak row does not label gets MISSING (softmax heads) or a 0 in `customer_type_mask`.
    """
    from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT

    traits = np.zeros((len(examples), CUSTOMER_TYPE.size), dtype=np.int64)
    for i, ex in enumerate(examples):
        for t in ex.customer_type or ():
            traits[i, CUSTOMER_TYPE.label2id[t]] = 1
    return {
        EMOTION.name: np.array([EMOTION.label2id[ex.emotion] if ex.emotion else MISSING for ex in examples], dtype=np.int64),
        INTENT.name: np.array([INTENT.label2id[ex.intent] if ex.intent else MISSING for ex in examples], dtype=np.int64),
        CUSTOMER_TYPE.name: traits,
        "customer_type_mask": np.array([ex.customer_type is not None for ex in examples], dtype=np.float32),
    }


def to_messages(examples: list[Example]):
    from kefu_router.text import Message

    return [Message(ex.text, ex.context) for ex in examples]
