"""Batch tagging of historical chats: stream a file in chunks, tag each customer turn, route its conversation.

Context is built as in training (kefu_router.training.data): a customer turn is
tagged with the turns before it in its conversation, customer and agent alike,
cut to the bundle's `max_context_turns` by `kefu_router.text.encode`. With a role
column, agent turns are context only: they are written out with empty tags.
Without a conversation column every row stands alone. Rows that cannot be tagged
are rejected with their line and reason and add no context.

Routing: each customer turn's playbook is the route of its conversation so far
(every customer turn up to and including it), computed incrementally: an open
conversation carries the router's running state (kefu_router.routing.
ConversationState, O(window) in size), so a turn costs O(window) however long
the conversation, and its playbook equals `Router.route` over all the
conversation's customer turns so far.

Streaming assumption: the rows of a conversation appear in order in the file
(interleaving with other conversations is fine). The most recently active
`max_open_conversations` conversations keep their recent turns and their routing
state; a conversation evicted from that window starts afresh if it shows up again. With
an order column, a row that arrives after a later turn of its conversation is
slotted in before it for context and counted as `out_of_order`.

Resume: each chunk is committed with its output rows, its rejects and a snapshot
of the open conversations (kefu_router.tagging_parts). After a crash,
`resume=True` skips the input rows the last commit counts and goes on from its
snapshot, so no row is written twice or lost and the tags equal those of an
uninterrupted run.

Left out: sorting the input (sort it first, or use kefu_router.spark) and
re-reading context that is older than the open-conversation window.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import pickle
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa

from kefu_router import tagging_parts as parts
from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT, ROLES
from kefu_router.charsets import AUTO
from kefu_router.tagging_io import Record, TaggingError, file_format, open_reader
from kefu_router.text import Message

if TYPE_CHECKING:
    from kefu_router.routing import ConversationState, Verdict

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_MAX_OPEN_CONVERSATIONS = 10_000
LINE_COLUMN = "tag_line"
SCORE_COLUMNS = tuple(f"tag_score_{h.name}_{label}" for h in HEADS for label in h.labels)
TAG_TYPES: dict[str, pa.DataType] = {
    "tag_emotion": pa.string(), "tag_emotion_score": pa.float64(),
    "tag_intent": pa.string(), "tag_intent_score": pa.float64(),
    "tag_customer_type": pa.list_(pa.string()),
    **{c: pa.float64() for c in SCORE_COLUMNS},
    "tag_playbook": pa.string(), "tag_needs_review": pa.bool_(), "tag_model_version": pa.string(),
}
TAG_COLUMNS = tuple(TAG_TYPES)
EMPTY_TAGS = dict.fromkeys(TAG_COLUMNS)


@dataclass(frozen=True)
class ColumnNames:
    text: str = "text"
    conversation: str | None = None
    role: str | None = None
    order: str | None = None

    def given(self) -> list[str]:
        return [c for c in (self.text, self.conversation, self.role, self.order) if c]


class RowError(ValueError):
    """A row that cannot be tagged; `code` is the reason's short name used in the summary."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _missing(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, float) and value != value)  # NaN from pandas


def _as_str(value: object, what: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RowError("undecodable", f"{what} is not valid UTF-8 ({exc.reason})") from None
    return value if isinstance(value, str) else str(value)


def parse_row(row: dict, cols: ColumnNames) -> tuple[str, str | None, str, object]:
    """(text, conversation id, role, order key) of a row, or RowError. Roles as in training: empty means customer."""
    text = row.get(cols.text)
    if isinstance(text, bytes):
        text = _as_str(text, "text")
    if _missing(text) or (isinstance(text, str) and not text.strip()):
        raise RowError("no_text", "missing text" if _missing(text) else "text is blank")
    if not isinstance(text, str):
        raise RowError("not_text", f"text must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError("undecodable", "text holds unpaired surrogate escapes") from None
    conversation = row.get(cols.conversation) if cols.conversation else None
    conversation = None if _missing(conversation) else _as_str(conversation, "conversation id")
    role = row.get(cols.role) if cols.role else None
    role = "customer" if _missing(role) else _as_str(role, "role").strip()
    if role not in ROLES:
        raise RowError("bad_role", f"unknown role {role!r}; expected {' or '.join(ROLES)}")
    order = order_key(row.get(cols.order)) if cols.order else None
    return text.strip(), conversation, role, order


def order_key(value: object) -> tuple[int, object] | None:
    """A turn's order value as a key that compares with any other key: (0, number) or (1, date/time).

    Numbers and numeric strings are numbers; datetimes and ISO 8601 strings are date/times (with an
    offset: converted to naive UTC). None when missing. RowError("bad_order") for anything else,
    so a bad value rejects its own row only, never the turns that follow it.
    """
    if _missing(value):
        return None
    if isinstance(value, (str, bytes)):
        text = _as_str(value, "order").strip()
        for parse in (int, float, datetime.fromisoformat):
            try:
                value = parse(text)
                break
            except ValueError:
                continue
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return (0, value)
    if isinstance(value, date):
        moment = value if isinstance(value, datetime) else datetime.combine(value, datetime.min.time())
        return (1, moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment)
    raise RowError("bad_order", f"order value {value!r:.40} is not a number or an ISO 8601 date/time")


@dataclass
class _Conversation:
    route: ConversationState  # the router's running state over its customer turns so far
    turns: list = field(default_factory=list)  # (order key, role, text), oldest first


class Tagger:
    """Tags rows in order with a Predictor and a Router, carrying open conversations between calls."""

    def __init__(self, predictor, router, columns: ColumnNames = ColumnNames(), max_open_conversations: int = DEFAULT_MAX_OPEN_CONVERSATIONS):
        self.predictor, self.router, self.columns = predictor, router, columns
        self.max_turns = predictor.bundle.max_context_turns
        self.max_open = max_open_conversations
        self.open: OrderedDict[str, _Conversation] = OrderedDict()
        self.out_of_order = 0

    def tag(self, rows: Iterable[dict]) -> list[dict | RowError]:
        """Per row, in order: its tag columns (all None for an agent turn) or the RowError that rejects it."""
        results: list[dict | RowError] = []
        pending: list[tuple[int, _Conversation | None, Message]] = []
        for row in rows:
            try:
                text, conv_id, role, order = parse_row(row, self.columns)
                conv = self._conversation(conv_id)
                at = self._slot(conv, order) if conv else 0
            except RowError as exc:
                results.append(exc)
                continue
            if role == "customer":
                context = [(r, t) for _, r, t in conv.turns[:at]] if conv else ()
                pending.append((len(results), conv, Message.of(text, context)))
            if conv:
                conv.turns.insert(at, (order, role, text))
                del conv.turns[: -self.max_turns or None]
            results.append(EMPTY_TAGS)
        predictions = self.predictor.predict([m for _, _, m in pending])
        for (index, conv, message), pred in zip(pending, predictions):
            state = conv.route if conv else self.router.state()
            verdict = self.router.verdict(state.add(_for_router(pred, message.text)))
            results[index] = _tags(pred, verdict, self.predictor.version)
        while len(self.open) > self.max_open:  # evict only between calls: rows above may share a conversation
            self.open.popitem(last=False)
        return results

    def _conversation(self, conv_id: str | None) -> _Conversation | None:
        if conv_id is None:
            return None
        conv = self.open.get(conv_id)
        if conv is None:
            conv = self.open[conv_id] = _Conversation(self.router.state())
        else:
            self.open.move_to_end(conv_id)
        return conv

    def _slot(self, conv: _Conversation, order: tuple | None) -> int:
        """Where the turn goes: at the end, or before the later turns that came first (keys from `order_key`)."""
        at = len(conv.turns)
        while at and order is not None and conv.turns[at - 1][0] is not None and conv.turns[at - 1][0] > order:
            at -= 1
        self.out_of_order += at < len(conv.turns)
        return at

    def state(self) -> bytes:
        return pickle.dumps((self.open, self.out_of_order), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, state: bytes) -> None:
        self.open, self.out_of_order = pickle.loads(state)


def _for_router(pred: dict, text: str) -> dict:
    """The fields the router reads; the text lets it recognise fillers such as 好的 or 在吗."""
    top = lambda head: {"label": pred[head]["label"], "score": pred[head]["score"]}
    traits = [{"label": t["label"], "score": t["score"]} for t in pred[CUSTOMER_TYPE.name]]
    return {EMOTION.name: top(EMOTION.name), INTENT.name: top(INTENT.name), CUSTOMER_TYPE.name: traits, "text": text}


def _tags(pred: dict, verdict: Verdict, version: str) -> dict:
    out = {
        "tag_emotion": pred["emotion"]["label"], "tag_emotion_score": pred["emotion"]["score"],
        "tag_intent": pred["intent"]["label"], "tag_intent_score": pred["intent"]["score"],
        "tag_customer_type": [t["label"] for t in pred["customer_type"]],
    }
    for head in HEADS:
        scores = pred[f"{head.name}_scores"] if head.multi_label else pred[head.name]["scores"]
        out.update((f"tag_score_{head.name}_{label}", scores[label]) for label in head.labels)
    out.update(tag_playbook=verdict.playbook, tag_needs_review=verdict.needs_human_review, tag_model_version=version)
    return out


# ---------- files: chunks in, parts out (see kefu_router.tagging_parts) ----------


@dataclass
class TagSummary:
    """Counts of one tagging job (across resumes) and the speed of this invocation."""

    output: str
    rejects: str
    encoding: str | None = None  # of the input text (None for Parquet)
    rows: int = 0
    tagged: int = 0
    context_only: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    out_of_order: int = 0
    resumed_at_row: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def reject_rate(self) -> float:
        """Share of input rows rejected, 0..1 (0 for an empty input)."""
        return self.rejected / self.rows if self.rows else 0.0


def default_rejects_path(output: Path) -> Path:
    return output.with_name(output.name[: -len(output.suffix)] + ".rejects.jsonl")


def tag_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    columns: ColumnNames = ColumnNames(),
    model: str | os.PathLike | None = None,
    predictor=None,
    router=None,
    no_text: bool = False,
    batch_size: int = 64,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_open_conversations: int = DEFAULT_MAX_OPEN_CONVERSATIONS,
    resume: bool = False,
    overwrite: bool = False,
    rejects_path: str | os.PathLike | None = None,
    progress: bool | None = None,
    encoding: str | None = AUTO,
) -> TagSummary:
    """Tag INPUT into OUTPUT (formats by extension) and write rejected rows to a JSON Lines file.

    `encoding` decodes JSON Lines and CSV input ("auto": detected, kefu_router.charsets).
    `progress=None` shows the tqdm bar only on a terminal. Raises TaggingError for
    bad options or input and BundleError for a bad model, before any row is written.
    """
    from tqdm import tqdm

    from kefu_router.predictor import Predictor
    from kefu_router.routing import Router

    if chunk_size < 1 or batch_size < 1 or max_open_conversations < 1:
        raise TaggingError("--chunk-size, --batch-size and max_open_conversations must be positive")
    source, out = Path(input_path), Path(output_path)
    rejects = Path(rejects_path) if rejects_path else default_rejects_path(out)
    out_format = file_format(out)
    reader = open_reader(source, encoding)
    _check_columns(reader, columns)
    if source.resolve() in (out.resolve(), rejects.resolve()):
        raise TaggingError(f"output {out} and rejects {rejects} must not be the input file")
    predictor = predictor or Predictor(model, batch_size=batch_size)
    job = {
        "input": str(source.resolve()), "input_size": source.stat().st_size, "input_mtime_ns": source.stat().st_mtime_ns,
        "columns": asdict(columns), "encoding": reader.encoding, "no_text": no_text, "output_format": out_format, "rejects": str(rejects.resolve()),
        "model_version": predictor.version, "max_open_conversations": max_open_conversations,
    }
    folder = out.with_name(out.name + ".parts")
    manifest = parts.open_job(folder, out, job, resume, overwrite)
    tagger = Tagger(predictor, router or Router(review_below=predictor.bundle.review_below), columns, max_open_conversations)
    if manifest["state"]:
        tagger.restore((folder / manifest["state"]).read_bytes())
        log.info("resuming %s after row %d (%d chunks done)", source, manifest["rows_done"], manifest["chunks_done"])
    counts = Counter(manifest["counts"])
    started, start_row = time.perf_counter(), manifest["rows_done"]
    drop = columns.text if no_text else None
    types = {**dict(zip(reader.schema.names, reader.schema.types) if reader.schema else ()), LINE_COLUMN: pa.int64(), **TAG_TYPES}
    records = reader.records(skip=start_row)
    with tqdm(total=reader.estimated_rows, initial=start_row, unit="rows", smoothing=0.05, disable=None if progress is None else not progress) as bar:
        while chunk := list(islice(records, chunk_size)):
            rows, rejected = _tag_chunk(tagger, chunk, drop, check_clash=reader.columns is None)
            tagged = sum(r["tag_emotion"] is not None for r in rows)
            counts.update({"rows": len(chunk), "tagged": tagged, "context_only": len(rows) - tagged})
            counts.update("rejected:" + r["reason"] for r in rejected)
            manifest["counts"] = dict(counts)
            out_columns = _output_columns(reader.columns, (k for row in rows for k in row), drop)
            parts.commit_chunk(folder, manifest, out_format, rows, out_columns, types, rejected, tagger.state(), len(chunk))
            bar.update(len(chunk))
    parts.finish(folder, manifest, out, rejects, out_format, _output_columns(reader.columns, manifest["columns"], drop), types)
    seconds = time.perf_counter() - started
    by_reason = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("rejected:")}
    return TagSummary(
        output=str(out), rejects=str(rejects), encoding=reader.encoding, rows=counts["rows"], tagged=counts["tagged"], context_only=counts["context_only"],
        rejected=sum(by_reason.values()), rejected_by_reason=by_reason, out_of_order=tagger.out_of_order,
        resumed_at_row=start_row, seconds=round(seconds, 3), rows_per_second=round((counts["rows"] - start_row) / max(seconds, 1e-9), 1),
    )


def _check_columns(reader, columns: ColumnNames) -> None:
    if reader.columns is None:  # JSON Lines: a row without the text field is rejected on its own
        return
    problem = column_problem(list(reader.columns), columns, reserved=LINE_COLUMN)
    if problem:
        raise TaggingError(f"{reader.path}: {problem}")


def column_problem(available: list[str], columns: ColumnNames, reserved: str) -> str | None:
    """Why these input columns cannot be tagged (a named column missing, or an output name taken), or None."""
    missing = [c for c in columns.given() if c not in available]
    if missing:
        return f"no column {', '.join(map(repr, missing))} (columns: {', '.join(available)})"
    clash = [c for c in available if c in TAG_TYPES or c == reserved]
    if clash:
        return f"input already has output column(s) {', '.join(clash)}; rename or drop them"
    return None


def _tag_chunk(tagger: Tagger, chunk: list[Record], drop: str | None, check_clash: bool) -> tuple[list[dict], list[dict]]:
    """Output rows and reject records of one chunk, in input order."""
    readable = [r for r in chunk if r.error is None]
    if check_clash:
        for record in readable:
            if LINE_COLUMN in record.row or not EMPTY_TAGS.keys().isdisjoint(record.row):
                raise TaggingError(f"line {record.line}: the row already has output fields (tag_*); rename or drop them")
    results = iter(tagger.tag(r.row for r in readable))
    rows, rejected = [], []
    for record in chunk:
        result = RowError(*record.error) if record.error else next(results)
        if isinstance(result, RowError):
            reject = {"line": record.line, "reason": result.code, "message": str(result)}
            if record.row is not None:
                reject["row"] = {k: v for k, v in record.row.items() if k != drop}
            elif drop is None:
                reject["raw"] = record.raw
            rejected.append(reject)
        else:
            rows.append({**{k: v for k, v in record.row.items() if k != drop}, LINE_COLUMN: record.line, **result})
    return rows, rejected


def _output_columns(input_columns: list[str] | None, seen: Iterable[str], drop: str | None) -> list[str]:
    """Input columns (for JSON Lines: the fields seen, in order of appearance), then the tag columns."""
    names = input_columns if input_columns is not None else dict.fromkeys(seen)
    return [c for c in names if c != drop and c not in TAG_TYPES and c != LINE_COLUMN] + [LINE_COLUMN, *TAG_COLUMNS]
