"""`Store`: the prediction log and feedback tables in a SQLite file or a PostgreSQL database.

    store = Store("runs/kefu_router.db")                       # a SQLite file, created when missing
    store = Store("postgresql+psycopg://kefu:pw@db/kefu")      # or any SQLAlchemy URL
    store.migrate()                                           # Alembic: create or upgrade the tables
    store.insert_predictions(rows)                            # what PredictionLog does in its thread

Every method is synchronous (call it from a thread, never from the event loop) and raises
`StoreUnavailable` when the database cannot be reached or refuses the work (locked, disk full,
connection refused), with the driver's reason; the service answers 503 with it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import create_engine, delete, event, func, insert, or_, select
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kefu_router.normalize import normalize_text
from kefu_router.store.tables import Feedback, Prediction

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FEEDBACK_HEADS = ("emotion", "intent", "customer_type", "playbook")


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or cannot take the write now (the service answers 503 with this reason)."""


class UnknownPrediction(LookupError):
    """No logged prediction has this id, or no message prediction this conversation id and turn (404)."""


class FeedbackRejected(ValueError):
    """Feedback that cannot apply to the prediction it names; `field` is the request field at fault (422)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field


class IdempotencyConflict(ValueError):
    """The idempotency key was already used for a different request (409)."""


def database_url(value: str) -> URL:
    """The SQLAlchemy URL for KEFU_ROUTER_DB: a URL as given (postgresql:// becomes postgresql+psycopg://), else a SQLite file path.

    Raises ValueError for a URL SQLAlchemy cannot parse.
    """
    value = str(value).strip()
    if "://" not in value:
        return URL.create("sqlite", database=str(Path(value).expanduser().resolve()))
    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def text_hmac(key: bytes, text: str) -> str:
    """HMAC-SHA256 (hex, 64 characters) of `normalize_text(text)`: equal for texts the model reads alike."""
    return hmac.new(key, normalize_text(text).encode("utf-8"), hashlib.sha256).hexdigest()


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {first}"[:300]


def _utc(value: Optional[datetime]) -> Optional[datetime]:
    """Every time in the store is UTC (SQLite gives naive datetimes back; a naive input is taken as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@dataclass(frozen=True)
class FeedbackResult:
    id: int
    prediction_id: Optional[str]
    decision_id: Optional[str]
    created_at: datetime
    replayed: bool


class Store:
    def __init__(self, url: str | URL, *, connect_timeout_s: float = 5.0):
        self.url = url if isinstance(url, URL) else database_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            problem = None
            if self.url.database and self.url.database != ":memory:":
                try:
                    Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # like any store that cannot be opened: StoreUnavailable on use (503), not here
                    problem = f"cannot create the folder of {self.url.database}: {exc.strerror or exc}"
            self.engine: Engine = create_engine(self.url, connect_args={"timeout": connect_timeout_s})
            event.listen(self.engine, "connect", functools.partial(_sqlite_pragmas, problem=problem))
        else:
            args = {"connect_timeout": max(1, int(connect_timeout_s))} if self.dialect == "postgresql" else {}
            self.engine = create_engine(self.url, pool_pre_ping=True, connect_args=args)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._insert_plan: Optional[tuple[str, bool, list]] = None  # insert_predictions' statement, compiled once

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)})"

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(_reason(exc)) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(_reason(exc)) from None
            raise

    # --- schema ---------------------------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Create or upgrade the tables with the packaged Alembic migrations; raises StoreUnavailable."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        for attempt in range(3):  # several workers starting at once: the loser of a DDL race retries
            try:
                with self.engine.begin() as connection:
                    config.attributes["connection"] = connection
                    command.upgrade(config, revision)
                return
            except (OperationalError, InterfaceError) as exc:
                if attempt == 2 or "already exists" not in str(exc) and "locked" not in str(exc):
                    raise StoreUnavailable(_reason(exc)) from None
            except DBAPIError as exc:  # e.g. PostgreSQL's UniqueViolation on a concurrent CREATE TABLE
                if attempt == 2:
                    raise StoreUnavailable(_reason(exc)) from None
            time.sleep(0.2 * (attempt + 1))

    def revision(self) -> Optional[str]:
        """The database's Alembic revision (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(_reason(exc)) from None

    def close(self) -> None:
        self.engine.dispose()

    # --- prediction log -----------------------------------------------------------------------------------

    def insert_predictions(self, rows: list[dict]) -> None:
        """Insert prediction rows (dicts of tables.Prediction columns; a missing key is NULL) in one transaction.

        One executemany of the INSERT compiled once for this dialect, with each column's own bind processor
        (JSON, DateTime) applied here: the values Core would send, without compiling the statement and building
        a parameter dict per row again in every batch (this runs in the log's thread, but holds the GIL that the
        event loop needs: about half the Python time per row of `connection.execute(insert(table), rows)`).
        """
        if not rows:
            return
        sql, keyed, plan = self._insert_plan or self._plan_insert()
        if keyed:  # named parameters (psycopg): one dict per row
            params = [{key: proc(row.get(key)) if proc else row.get(key) for key, proc in plan} for row in rows]
        else:  # positional (sqlite3): one tuple per row
            params = [tuple([proc(row.get(key)) if proc else row.get(key) for key, proc in plan]) for row in rows]
        try:
            with self.engine.begin() as connection:
                connection.exec_driver_sql(sql, params)
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(_reason(exc)) from None

    def _plan_insert(self) -> tuple[str, bool, list]:
        table, dialect = Prediction.__table__, self.engine.dialect
        compiled = insert(table).compile(dialect=dialect, column_keys=[c.key for c in table.columns])
        processors = {c.key: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns}
        order = list(compiled.positiontup) if compiled.positional else [c.key for c in table.columns]
        self._insert_plan = (compiled.string, not compiled.positional, [(key, processors[key]) for key in order])
        return self._insert_plan

    def get(self, prediction_id: str) -> Optional[Prediction]:
        with self._session() as session:
            return session.get(Prediction, prediction_id)

    def message_at(self, conversation_id: str, turn: int) -> Optional[Prediction]:
        """The latest message prediction of this conversation's turn."""
        with self._session() as session:
            return session.scalars(
                select(Prediction).where(Prediction.kind == "message", Prediction.conversation_id == conversation_id,
                                         Prediction.turn == turn).order_by(Prediction.created_at.desc()).limit(1)
            ).first()

    # --- feedback -----------------------------------------------------------------------------------------

    def add_feedback(self, *, idempotency_key: str, agent_id: str, prediction_id: Optional[str] = None,
                     conversation_id: Optional[str] = None, turn: Optional[int] = None,
                     emotion: Optional[str] = None, intent: Optional[str] = None,
                     customer_type: Optional[list[str]] = None, playbook: Optional[str] = None) -> FeedbackResult:
        """Commit one agent's feedback, or return the row an earlier request with this key committed.

        The target is `prediction_id`, else the latest message prediction at `conversation_id` + `turn`.
        Labels go to a message prediction; a playbook goes to a routing decision (the message's own, for a
        message predicted by /v1/route). Label ids must already be checked (the API's request model does).
        Raises UnknownPrediction (404), FeedbackRejected (422), IdempotencyConflict (409), StoreUnavailable (503).
        """
        request = {"prediction_id": prediction_id, "conversation_id": conversation_id, "turn": turn, "agent_id": agent_id,
                   "emotion": emotion, "intent": intent, "customer_type": customer_type, "playbook": playbook}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        try:
            return self._add_feedback(idempotency_key, digest, request)
        except IntegrityError:  # a concurrent request with the same key committed first
            return self._add_feedback(idempotency_key, digest, request)

    def _add_feedback(self, key: str, digest: str, request: dict) -> FeedbackResult:
        with self._session() as session:
            earlier = session.scalars(select(Feedback).where(Feedback.idempotency_key == key)).first()
            if earlier is not None:
                if earlier.request_digest != digest:
                    raise IdempotencyConflict(f"idempotency key {key!r} was already used for a different feedback request")
                return FeedbackResult(earlier.id, earlier.prediction_id, earlier.decision_id, _utc(earlier.created_at), True)
            target = self._target(session, request)
            labels = any(request[k] is not None for k in ("emotion", "intent", "customer_type"))
            if labels and target.kind != "message":
                raise FeedbackRejected("prediction_id", f"{target.id} is a routing decision; labels go to a message's prediction_id")
            decision = None
            if request["playbook"] is not None:
                decision = target if target.kind == "route" else (
                    session.get(Prediction, target.decision_id) if target.decision_id else None)
                if decision is None:
                    raise FeedbackRejected("playbook", f"prediction {target.id} came from /v1/classify, not from a routing "
                                                       "decision; send the playbook with a /v1/route prediction_id")
            row = Feedback(
                idempotency_key=key, request_digest=digest, created_at=datetime.now(timezone.utc),
                agent_id=request["agent_id"], prediction_id=target.id if labels else None,
                decision_id=decision.id if decision is not None else None, emotion=request["emotion"],
                intent=request["intent"], customer_type=request["customer_type"], playbook=request["playbook"],
            )
            session.add(row)
            session.flush()
            return FeedbackResult(row.id, row.prediction_id, row.decision_id, row.created_at, False)

    @staticmethod
    def _target(session: Session, request: dict) -> Prediction:
        if request["prediction_id"] is not None:
            target = session.get(Prediction, request["prediction_id"])
            if target is None:
                raise UnknownPrediction(f"no logged prediction has id {request['prediction_id']!r}")
            return target
        target = session.scalars(
            select(Prediction).where(Prediction.kind == "message", Prediction.conversation_id == request["conversation_id"],
                                     Prediction.turn == request["turn"]).order_by(Prediction.created_at.desc()).limit(1)
        ).first()
        if target is None:
            raise UnknownPrediction(f"no logged message prediction for conversation {request['conversation_id']!r} "
                                    f"turn {request['turn']}")
        return target

    # --- reading and retention ----------------------------------------------------------------------------

    def messages(self, since: datetime, until: datetime) -> list[dict]:
        """Message predictions made in [since, until), oldest first, with the latest label feedback on each.

        Each dict: the Prediction columns, plus `final` (None, or {emotion, intent, customer_type, agent_id,
        created_at}: per head the latest feedback that gave it, None for a head no feedback gave).
        """
        rows, finals = self._logged_with_feedback("message", since, until, Feedback.prediction_id)
        return [{**_as_dict(r), "final": finals.get(r.id)} for r in rows]

    def decisions(self, since: datetime, until: datetime) -> list[dict]:
        """Routing decisions made in [since, until), with the agent's latest playbook as `final_playbook` (or None)."""
        rows, finals = self._logged_with_feedback("route", since, until, Feedback.decision_id)
        return [{**_as_dict(r), "final_playbook": (finals.get(r.id) or {}).get("playbook")} for r in rows]

    def _logged_with_feedback(self, kind: str, since: datetime, until: datetime, key):
        """Logged rows of `kind` made in [since, until), oldest first, and the latest feedback per row id (by `key`)."""
        since, until = _utc(since), _utc(until)
        with self._session() as session:
            rows = session.scalars(select(Prediction).where(
                Prediction.kind == kind, Prediction.created_at >= since, Prediction.created_at < until,
            ).order_by(Prediction.created_at)).all()
            return rows, self._latest_feedback(session, [r.id for r in rows], key)

    def corrected_messages(self, since: datetime, until: datetime) -> list[dict]:
        """Message predictions whose latest label feedback was given in [since, until) (the export's rows)."""
        since, until = _utc(since), _utc(until)
        with self._session() as session:
            ids = session.scalars(select(Feedback.prediction_id).where(
                Feedback.prediction_id.is_not(None), Feedback.created_at >= since, Feedback.created_at < until,
            ).distinct()).all()
            rows = [session.get(Prediction, i) for i in ids]
            finals = self._latest_feedback(session, ids, Feedback.prediction_id)
        out = [{**_as_dict(r), "final": finals[r.id]} for r in rows if r is not None]
        return [r for r in out if since <= r["final"]["created_at"] < until]

    def conversation_texts(self, conversation_ids: list[str]) -> list[dict]:
        """Stored (masked) customer texts of these conversations: {conversation_id, turn, role, text}, latest per turn."""
        out: dict[tuple, dict] = {}
        with self._session() as session:
            for start in range(0, len(conversation_ids), 500):
                chunk = conversation_ids[start:start + 500]
                for r in session.scalars(select(Prediction).where(
                        Prediction.kind == "message", Prediction.conversation_id.in_(chunk),
                        Prediction.turn.is_not(None), Prediction.text_masked.is_not(None)).order_by(Prediction.created_at)):
                    out[(r.conversation_id, r.turn)] = {"conversation_id": r.conversation_id, "turn": r.turn,
                                                        "role": "customer", "text": r.text_masked}
        return list(out.values())

    @staticmethod
    def _latest_feedback(session: Session, ids: list[str], column) -> dict[str, dict]:
        """The final labels per row id, merged per head: each of emotion, intent, customer_type and playbook is
        the latest feedback that gave that head (None when no feedback gave it: not reviewed); `agent_id` and
        `created_at` are those of the latest feedback row. The one place this merge is computed (the export,
        the quality report and the console all read it)."""
        finals: dict[str, dict] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for fb in session.scalars(select(Feedback).where(column.in_(chunk)).order_by(Feedback.created_at, Feedback.id)):
                final = finals.setdefault(getattr(fb, column.key), dict.fromkeys(FEEDBACK_HEADS))
                for head in FEEDBACK_HEADS:  # a head this row left out keeps the earlier row's value
                    if getattr(fb, head) is not None:
                        final[head] = getattr(fb, head)
                final["agent_id"], final["created_at"] = fb.agent_id, _utc(fb.created_at)
        return finals

    def prune(self, before: datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Delete predictions and feedback created before `before` (feedback on a deleted prediction goes too);
        with dry_run, count what would be deleted and delete nothing."""
        before = _utc(before)
        with self._session() as session:
            old = select(Prediction.id).where(Prediction.created_at < before)
            feedback_old = or_(Feedback.created_at < before, Feedback.prediction_id.in_(old), Feedback.decision_id.in_(old))
            if dry_run:
                return {"predictions": session.scalar(select(func.count()).select_from(Prediction)
                                                      .where(Prediction.created_at < before)),
                        "feedback": session.scalar(select(func.count()).select_from(Feedback).where(feedback_old))}
            feedback = session.execute(delete(Feedback).where(feedback_old)).rowcount
            predictions = session.execute(delete(Prediction).where(Prediction.created_at < before)).rowcount
        return {"predictions": predictions, "feedback": feedback}

    def counts(self) -> dict[str, int]:
        with self._session() as session:
            return {"predictions": session.scalar(select(func.count()).select_from(Prediction)),
                    "feedback": session.scalar(select(func.count()).select_from(Feedback))}


def _as_dict(row: Prediction) -> dict:
    out = {c.key: getattr(row, c.key) for c in Prediction.__table__.columns}
    out["created_at"] = _utc(out["created_at"])
    return out


def _sqlite_pragmas(connection, _record, problem: Optional[str] = None) -> None:
    """Per connection: the pragmas. A folder that could not be created, or a file that is not a SQLite database,
    is raised as sqlite3.OperationalError, which every Store method reports as StoreUnavailable (503)."""
    import sqlite3

    if problem is not None:
        raise sqlite3.OperationalError(problem)
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer thread
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise sqlite3.OperationalError(f"not a SQLite database: {exc}") from None
    finally:
        cursor.close()
