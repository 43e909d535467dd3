"""Agents' label corrections -> extra training rows, without leaking into dev/test.

A corrections CSV names messages of a chat log by `conversation_id` + `turn` and
gives their corrected `emotion`, `intent` and `customer_type` (trait ids separated
by `;`, empty for none). Other columns (agent, note, ...) are ignored.

- `load_corrections` checks every row against the label schema (kefu_router.labels);
  a bad row is reported as `file:line: reason` and skipped, never dropped silently.
- `merge_corrections` finds each corrected message in the chat log and gives it the
  turns before it as context (customer and agent, as training/data.py does). It sets
  aside a correction whose conversation is in the frozen dev/test splits
  (training/data/splits.tsv) or whose message + context exactly duplicates a dev/test
  message; the others become `split: train` rows that `load_examples` reads.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from kefu_router.labels import LabelError, check_labels
from kefu_router.training.data import Example, load_examples

REQUIRED_COLUMNS = ("conversation_id", "turn", "emotion", "intent", "customer_type")
HELD_OUT_SPLITS = ("dev", "test")


class CorrectionError(ValueError):
    """A corrections file that cannot be read at all (missing, not UTF-8, columns missing)."""


@dataclass(frozen=True)
class Correction:
    where: str  # "file:line", for reports
    conversation_id: str
    turn: int
    emotion: str | None  # None: not labelled (feedback that left this head out), masked in training
    intent: str | None
    customer_type: tuple[str, ...] | None


def load_corrections(path: str | Path) -> tuple[list[Correction], list[str]]:
    """Valid corrections in file order, and one `file:line: reason` per bad row (skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the BOM that Excel writes
    except FileNotFoundError:
        raise CorrectionError(f"corrections file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise CorrectionError(f"{path}: not UTF-8 text ({exc})") from None
    reader = csv.DictReader(text.splitlines(keepends=True))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CorrectionError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED_COLUMNS)})")
    corrections, bad, seen = [], [], {}
    line = 1  # the header
    for row in reader:
        start, line = line + 1, reader.line_num  # a quoted cell may span lines: report where the row starts
        where = f"{path}:{start}"
        try:
            item = _parse_row(row, where)
        except (ValueError, LabelError) as exc:
            bad.append(f"{where}: {exc}")
            continue
        key = (item.conversation_id, item.turn)
        if key in seen:
            bad.append(f"{where}: {item.conversation_id} turn {item.turn} is already corrected at {seen[key]}; kept the first")
            continue
        seen[key] = where
        corrections.append(item)
    return corrections, bad


def _parse_row(row: dict, where: str) -> Correction:
    if None in row:
        raise ValueError("more cells than columns (an unquoted comma?)")
    cells = {k: (row.get(k) or "").strip() for k in REQUIRED_COLUMNS}
    if not cells["conversation_id"]:
        raise ValueError("missing conversation_id")
    if not cells["turn"].isdigit():
        raise ValueError(f"turn must be a whole number, got {cells['turn']!r}")
    emotion, intent, traits = check_labels(cells["emotion"], cells["intent"], cells["customer_type"])
    return Correction(where, cells["conversation_id"], int(cells["turn"]), emotion, intent, traits)


@dataclass
class MergeResult:
    train_rows: list[dict] = field(default_factory=list)  # rows for load_examples, split=train
    set_aside: list[tuple[Correction, str]] = field(default_factory=list)  # would leak into dev/test
    unmatched: list[str] = field(default_factory=list)  # `file:line: reason`: not a customer turn of the log

    def summary(self) -> str:
        return (
            f"{len(self.train_rows)} corrections become train rows; {len(self.set_aside)} set aside "
            f"(dev/test leak guard); {len(self.unmatched)} do not match a customer message of the chat log"
        )


def held_out_data(corpus: str | Path | None = None, splits_file: str | Path | None = None) -> tuple[list[Example], dict[str, str]]:
    """The corpus's dev/test examples and the frozen conversation splits (defaults: training/data/)."""
    from kefu_router.training.corpus.build_corpus import CORPUS, SPLITS_FILE, read_frozen

    examples, _ = load_examples(corpus or CORPUS)
    return [ex for ex in examples if ex.split in HELD_OUT_SPLITS], read_frozen(Path(splits_file or SPLITS_FILE))


def merge_corrections(
    corrections: Iterable[Correction],
    log_rows: Iterable[Mapping],
    held_out: Iterable[Example],
    frozen_splits: Mapping[str, str],
) -> MergeResult:
    """Corrections as train rows with context from `log_rows` (conversation_id, turn, role, text)."""
    conversations: dict[str, dict[int, tuple[str, str]]] = {}
    for row in log_rows:
        text = str(row.get("text") or "").strip()
        if text:
            role = row.get("role") or "customer"  # empty role means customer, as in training
            conversations.setdefault(str(row["conversation_id"]), {})[int(row["turn"])] = (role, text)
    duplicates = {(ex.text, ex.context): ex for ex in held_out if ex.split in HELD_OUT_SPLITS}
    result = MergeResult()
    for c in corrections:
        turns = conversations.get(c.conversation_id)
        if turns is None or c.turn not in turns:
            what = f"conversation {c.conversation_id!r}" if turns is None else f"turn {c.turn} in {c.conversation_id}"
            result.unmatched.append(f"{c.where}: no {what} in the chat log")
            continue
        role, text = turns[c.turn]
        if role != "customer":
            result.unmatched.append(f"{c.where}: turn {c.turn} of {c.conversation_id} is an agent turn; only customer turns take labels")
            continue
        context = tuple(turns[t] for t in sorted(turns) if t < c.turn)
        split = frozen_splits.get(c.conversation_id)
        twin = duplicates.get((text, context))
        if split in HELD_OUT_SPLITS:
            result.set_aside.append((c, f"conversation {c.conversation_id} is in the frozen {split} split"))
        elif twin is not None:
            result.set_aside.append((c, f"message and context duplicate {twin.split} message {twin.id}"))
        else:
            result.train_rows.append({
                "id": f"{c.conversation_id}-{c.turn:02d}", "conversation_id": c.conversation_id, "turn": c.turn,
                "role": "customer", "text": text, "context": [{"role": r, "text": t} for r, t in context],
                "emotion": c.emotion, "intent": c.intent, "customer_type": None if c.customer_type is None else list(c.customer_type),
                "split": "train", "source": "corrections",
            })
    return result


def write_rows(rows: Iterable[dict], path: str | Path) -> Path:
    """Rows as JSON Lines (the format `load_examples` and the training config read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
