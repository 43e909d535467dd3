"""Agents' feedback in the store -> corrections as training rows (`kefu-router feedback export`).

    summary = export_feedback(store, since, until, "corrections.parquet", chat_export="chats.jsonl")

Each message an agent gave final labels for in [since, until) becomes one `Correction`
(training/corrections.py): per head, the latest label an agent gave (Store's per-head merge); a head no
agent gave is left unlabelled (None, as for weak rows: masked in the loss), never filled with the model's
own label (docs/serving.md: a head left out is not reviewed). `merge_corrections` then places it in its conversation, gives it the
turns before it as context, and sets aside (and counts) what would leak into the frozen dev/test
splits, exactly as for a corrections CSV. The text comes from:

- `chat_export`: the customer's own chat export, JSON Lines with conversation_id, turn, role, text
  (notebooks/data/chat_log_sample.jsonl is one); customer and agent turns give the context. When the
  log holds an HMAC of the text (KEFU_ROUTER_TEXT_HMAC_KEY) and `text_key` is given, a message whose
  exported text does not hash to it is not exported (the export changed, or names another message);
- else the log's own masked text (KEFU_ROUTER_STORE_TEXT): context is then the customer's earlier
  logged turns only (agent turns are not logged).

A correction without text, without a conversation id and turn, or failing the HMAC check is listed
in `unmatched`, never dropped silently. Rows are written in the corpus format (shared/spec/labels.md)
as Parquet (.parquet) or JSON Lines (.jsonl), which `load_examples` and `train --data` read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from kefu_router.labels import LabelError
from kefu_router.training.data import check_partial_labels
from kefu_router.training.corrections import Correction, MergeResult, held_out_data, merge_corrections, write_rows


class ExportError(ValueError):
    """An unreadable chat export or an unsupported output type."""


@dataclass
class ExportSummary:
    output: Path
    corrected: int  # messages with final labels in the window
    merge: MergeResult = field(default_factory=MergeResult)
    text_source: str = ""

    def as_dict(self) -> dict:
        return {"output": str(self.output), "corrected_messages": self.corrected, "train_rows": len(self.merge.train_rows),
                "set_aside": len(self.merge.set_aside), "unmatched": len(self.merge.unmatched), "text": self.text_source}


def read_chat_export(path: str | Path) -> list[dict]:
    """Rows {conversation_id, turn, role, text} of a JSON Lines chat export; ExportError names a bad line."""
    path, rows = Path(path), []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read chat export {path}: {exc}") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            row = {"conversation_id": str(raw["conversation_id"]), "turn": int(raw["turn"]),
                   "role": raw.get("role") or "customer", "text": str(raw["text"])}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{path}:{lineno}: expected JSON with conversation_id, turn, role, text ({exc})") from None
        rows.append(row)
    return rows


def corrections_from(rows: list[dict]) -> tuple[list[Correction], list[str]]:
    """Store rows (Store.corrected_messages) -> Corrections, and `reason` lines for rows that cannot be placed."""
    out, bad = [], []
    for r in rows:
        where = f"prediction {r['id']}"
        if r["conversation_id"] is None or r["turn"] is None:
            bad.append(f"{where}: logged without conversation_id and turn; cannot be placed in a conversation")
            continue
        final = r["final"]
        given = {h: final.get(h) for h in ("emotion", "intent", "customer_type") if final.get(h) is not None}
        if not given:
            bad.append(f"{where}: feedback gave no label (a playbook only)")
            continue
        try:
            emotion, intent, traits = check_partial_labels(given.get("emotion"), given.get("intent"), given.get("customer_type"))
        except LabelError as exc:
            bad.append(f"{where}: {exc}")
            continue
        out.append(Correction(where, r["conversation_id"], r["turn"], emotion, intent, traits))
    return out, bad


def export_feedback(store, since: datetime, until: datetime, output: str | Path, *,
                    chat_export: Optional[str | Path] = None, text_key: Optional[bytes] = None,
                    corpus: Optional[str | Path] = None, splits_file: Optional[str | Path] = None) -> ExportSummary:
    """Write the corrections of [since, until) as corpus rows to `output` (.parquet or .jsonl); see the module docstring.

    Raises ExportError (bad chat export or output type) and kefu_router.store.StoreUnavailable.
    """
    from kefu_router.store import text_hmac

    output = Path(output)
    if output.suffix.lower() not in (".parquet", ".jsonl"):
        raise ExportError(f"{output}: write .parquet or .jsonl")
    rows = store.corrected_messages(since, until)
    corrections, unplaced = corrections_from(rows)
    if chat_export is not None:
        log_rows = read_chat_export(chat_export)
        source = f"chat export {chat_export}"
        if text_key is not None:
            texts = {(r["conversation_id"], r["turn"]): r["text"] for r in log_rows}
            hmacs = {(r["conversation_id"], r["turn"]): r["text_hmac"] for r in rows if r.get("text_hmac")}
            kept = []
            for c in corrections:
                stored, text = hmacs.get((c.conversation_id, c.turn)), texts.get((c.conversation_id, c.turn))
                if stored and text is not None and text_hmac(text_key, text) != stored:
                    unplaced.append(f"{c.where}: turn {c.turn} of {c.conversation_id} in the chat export is not the "
                                    "text the model read (HMAC differs)")
                else:
                    kept.append(c)
            corrections = kept
            source += ", checked against the logged HMAC"
    else:
        log_rows = store.conversation_texts(sorted({c.conversation_id for c in corrections}))
        source = "the log's masked text (customer turns only; pass --chat-export for agent turns)"
    held_out, frozen = held_out_data(corpus, splits_file)
    merged = merge_corrections(corrections, log_rows, held_out, frozen)
    merged.unmatched = unplaced + merged.unmatched
    for row in merged.train_rows:
        row["source"] = "feedback"
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".jsonl":
        write_rows(merged.train_rows, output)
    else:
        pq.write_table(pa.Table.from_pylist(merged.train_rows, schema=ROW_SCHEMA), output)
    return ExportSummary(output, len(rows), merged, source)


ROW_SCHEMA = pa.schema([
    ("id", pa.string()), ("conversation_id", pa.string()), ("turn", pa.int64()), ("role", pa.string()),
    ("text", pa.string()), ("context", pa.list_(pa.struct([("role", pa.string()), ("text", pa.string())]))),
    ("emotion", pa.string()), ("intent", pa.string()), ("customer_type", pa.list_(pa.string())),
    ("split", pa.string()), ("source", pa.string()),
])
