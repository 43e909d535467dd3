"""kefu_router.store against SQLite and PostgreSQL: migrations, the prediction log, feedback, retention."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")
from kefu_router.store import Store, StoreUnavailable, UnknownPrediction, database_url, text_hmac  # noqa: E402
from kefu_router.store.database import FeedbackRejected, IdempotencyConflict  # noqa: E402
from kefu_router.store.writer import PredictionLog  # noqa: E402

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def message(pid: str, *, at=NOW, conversation="c-1", turn=0, decision=None, emotion="neutral", **extra) -> dict:
    return {"id": pid, "kind": "message", "created_at": at, "model_version": "v1", "conversation_id": conversation,
            "turn": turn, "decision_id": decision, "emotion": emotion, "intent": "logistics", "customer_type": ["impatient"],
            "scores": {"emotion": {"neutral": 0.9}}, "needs_human_review": None if decision is None else True, **extra}


def decision(pid: str, *, at=NOW, conversation="c-1") -> dict:
    return {"id": pid, "kind": "route", "created_at": at, "model_version": "v1", "conversation_id": conversation,
            "playbook": "logistics_tracking", "rule": "r1", "needs_human_review": True}


def pid(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


def test_migrations_create_the_tables_the_models_describe_and_run_twice(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from kefu_router.store.tables import Base

    store.migrate()  # a second start changes nothing
    assert store.revision() == "0001"
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert store.counts() == {"predictions": 0, "feedback": 0}


def test_a_sqlite_path_becomes_a_file_created_with_its_folder(tmp_path):
    store = Store(tmp_path / "new" / "folder" / "log.db")
    store.migrate()
    assert (tmp_path / "new" / "folder" / "log.db").is_file()
    assert database_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="not a database URL"):
        database_url("postgresql://u:p@h:notaport/db")


def test_predictions_are_found_by_id_and_by_conversation_turn_latest_first(store):
    store.insert_predictions([decision(pid(1)), message(pid(2), decision=pid(1)),
                              message(pid(3), at=NOW + timedelta(minutes=1), emotion="angry")])
    assert store.get(pid(2)).decision_id == pid(1)
    assert store.message_at("c-1", 0).id == pid(3)  # the later prediction of the same turn
    assert store.get(pid(9)) is None and store.message_at("c-1", 5) is None


def test_insert_predictions_stores_what_a_core_insert_stores(store):
    """The precompiled executemany (bind processors applied by hand) writes the same column values as SQLAlchemy Core."""
    from sqlalchemy import insert, select, text

    from kefu_router.store.tables import Prediction

    table = Prediction.__table__
    later = NOW + timedelta(microseconds=123457)
    rows = [decision(pid(1), at=later), message(pid(2), at=later, decision=pid(1), text_masked="在吗 [电话]", text_hmac="ab" * 32),
            message(pid(3), conversation=None, turn=None, customer_type=[], scores={"intent": {"logistics": 0.125, "other": 1e-07}})]
    store.insert_predictions([dict(r) for r in rows])
    with store.engine.begin() as connection:
        connection.execute(insert(table), [{c.key: r.get(c.key) for c in table.columns} | {"id": r["id"].replace("0", "f")}
                                           for r in rows])
        cast = ", ".join(f"CAST({c.name} AS TEXT)" if c.key in ("customer_type", "scores") else c.name for c in table.columns if c.key != "id")
        stored = {r[0]: r[1:] for r in connection.execute(text(f"SELECT id, {cast} FROM predictions"))}  # the raw column values
        by_orm = {p.id: p for p in connection.execute(select(Prediction)).all()}
    assert len(stored) == 6 and len(by_orm) == 6
    for r in rows:
        assert stored[r["id"]] == stored[r["id"].replace("0", "f")], r["id"]
    assert store.get(pid(2)).created_at.replace(tzinfo=timezone.utc) == later and store.get(pid(3)).customer_type == []
    assert store.get(pid(3)).scores == {"intent": {"logistics": 0.125, "other": 1e-07}} and store.get(pid(1)).scores is None


def test_feedback_targets_messages_for_labels_and_decisions_for_playbooks(store):
    store.insert_predictions([decision(pid(1)), message(pid(2), decision=pid(1)), message(pid(3), conversation="c-2")])
    labels = store.add_feedback(idempotency_key="k1", agent_id="a", prediction_id=pid(2), emotion="angry")
    assert (labels.prediction_id, labels.decision_id, labels.replayed) == (pid(2), None, False)
    by_turn = store.add_feedback(idempotency_key="k2", agent_id="a", conversation_id="c-1", turn=0, playbook="general")
    assert (by_turn.prediction_id, by_turn.decision_id) == (None, pid(1))
    with pytest.raises(FeedbackRejected) as rejected:
        store.add_feedback(idempotency_key="k3", agent_id="a", prediction_id=pid(1), intent="complaint")
    assert rejected.value.field == "prediction_id"
    with pytest.raises(FeedbackRejected) as rejected:
        store.add_feedback(idempotency_key="k4", agent_id="a", prediction_id=pid(3), playbook="general")
    assert rejected.value.field == "playbook"
    with pytest.raises(UnknownPrediction):
        store.add_feedback(idempotency_key="k5", agent_id="a", prediction_id=pid(7), emotion="angry")
    with pytest.raises(UnknownPrediction, match="turn 4"):
        store.add_feedback(idempotency_key="k6", agent_id="a", conversation_id="c-1", turn=4, emotion="angry")
    assert store.counts()["feedback"] == 2  # the refused ones left nothing


def test_a_retry_with_the_same_key_changes_nothing_and_a_reuse_is_a_conflict(store):
    store.insert_predictions([message(pid(2))])
    first = store.add_feedback(idempotency_key="k", agent_id="a", prediction_id=pid(2), emotion="angry")
    again = store.add_feedback(idempotency_key="k", agent_id="a", prediction_id=pid(2), emotion="angry")
    assert (again.id, again.replayed, first.replayed) == (first.id, True, False)
    with pytest.raises(IdempotencyConflict):
        store.add_feedback(idempotency_key="k", agent_id="a", prediction_id=pid(2), emotion="anxious")
    assert store.counts()["feedback"] == 1


def test_concurrent_requests_with_one_key_commit_one_row(store):
    store.insert_predictions([message(pid(2))])
    barrier = threading.Barrier(8)

    def send(_):
        barrier.wait()
        return store.add_feedback(idempotency_key="same", agent_id="a", prediction_id=pid(2), emotion="angry")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert len({r.id for r in results}) == 1 and sum(not r.replayed for r in results) == 1
    assert store.counts()["feedback"] == 1


def test_the_latest_feedback_is_final_and_windows_are_half_open(store):
    store.insert_predictions([decision(pid(1)), message(pid(2), decision=pid(1)),
                              message(pid(3), at=NOW - timedelta(days=10), turn=2)])
    store.add_feedback(idempotency_key="k1", agent_id="a", prediction_id=pid(2), emotion="angry")
    store.add_feedback(idempotency_key="k2", agent_id="b", prediction_id=pid(2), emotion="anxious", intent="complaint")
    store.add_feedback(idempotency_key="k3", agent_id="b", prediction_id=pid(2), playbook="human_review")
    rows = store.messages(NOW - timedelta(days=1), NOW + timedelta(seconds=1))
    assert [r["id"] for r in rows] == [pid(2)]
    assert rows[0]["final"]["emotion"] == "anxious" and rows[0]["final"]["agent_id"] == "b"
    assert rows[0]["created_at"] == NOW  # UTC, aware, on both databases
    assert store.messages(NOW - timedelta(days=1), NOW) == []  # until is exclusive
    assert store.decisions(NOW - timedelta(days=1), NOW + timedelta(seconds=1))[0]["final_playbook"] == "human_review"
    future = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert [r["id"] for r in store.corrected_messages(future - timedelta(days=2), future)] == [pid(2)]
    assert store.corrected_messages(future, future + timedelta(days=1)) == []


def test_final_labels_merge_per_head_the_latest_feedback_that_gave_it(store):
    store.insert_predictions([decision(pid(1)), message(pid(2), decision=pid(1))])
    store.add_feedback(idempotency_key="k1", agent_id="a", prediction_id=pid(2), intent="complaint", customer_type=[])
    store.add_feedback(idempotency_key="k2", agent_id="b", prediction_id=pid(2), emotion="angry")
    store.add_feedback(idempotency_key="k3", agent_id="c", prediction_id=pid(2), intent="price_promotion")
    final = store.messages(NOW - timedelta(days=1), NOW + timedelta(seconds=1))[0]["final"]
    # a later emotion-only correction keeps the earlier intent; an empty trait list is a given (reviewed) head
    assert (final["emotion"], final["intent"], final["customer_type"], final["agent_id"]) == (
        "angry", "price_promotion", [], "c")
    store.insert_predictions([message(pid(3), turn=1)])
    store.add_feedback(idempotency_key="k4", agent_id="a", prediction_id=pid(3), emotion="angry")
    only = store.messages(NOW - timedelta(days=1), NOW + timedelta(seconds=1))[1]["final"]
    assert only["intent"] is None and only["customer_type"] is None  # never reviewed: not the model's label


def test_prune_deletes_old_predictions_with_their_feedback(store):
    store.insert_predictions([message(pid(1), at=NOW - timedelta(days=100)), message(pid(2), turn=1)])
    store.add_feedback(idempotency_key="old", agent_id="a", prediction_id=pid(1), emotion="angry")
    store.add_feedback(idempotency_key="new", agent_id="a", prediction_id=pid(2), emotion="angry")
    assert store.prune(NOW - timedelta(days=90), dry_run=True) == {"predictions": 1, "feedback": 1}
    assert store.counts() == {"predictions": 2, "feedback": 2}
    assert store.prune(NOW - timedelta(days=90)) == {"predictions": 1, "feedback": 1}
    assert store.get(pid(1)) is None and store.get(pid(2)) is not None and store.counts()["feedback"] == 1


def test_the_log_writes_in_batches_off_the_caller_with_hmac_and_masked_text_only(store):
    writer = PredictionLog(store, text_key=b"secret", store_text=True, batch_size=3, interval_s=0.05)
    writer.start()
    rows = [message(pid(i), turn=i, text=f"我的电话是13812345678 第{i}单") for i in range(7)]
    writer.put(rows)
    assert writer.flush(5.0)
    writer.stop()
    assert store.counts()["predictions"] == 7
    row = store.get(pid(3))
    assert row.text_masked == "我的电话是[电话] 第3单"
    assert row.text_hmac == text_hmac(b"secret", "我的电话是13812345678 第3单") != text_hmac(b"other", "我的电话是13812345678 第3单")
    assert text_hmac(b"k", "退貨！！！！") == text_hmac(b"k", "退货!!!")  # normalised first (kefu_router.normalize)


def test_without_text_settings_no_text_reaches_the_database(store):
    writer = PredictionLog(store, batch_size=10, interval_s=0.05)
    writer.start()
    writer.put([message(pid(1))])
    assert writer.flush(5.0)
    writer.stop()
    row = store.get(pid(1))
    assert row.text_masked is None and row.text_hmac is None


class FlakyStore:
    """Refuses `failures` writes (the database is down), then takes them."""

    def __init__(self, failures: int):
        self.failures, self.written = failures, []

    def insert_predictions(self, rows):
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("OperationalError: connection refused")
        self.written.extend(r["id"] for r in rows)


def test_rows_wait_while_the_database_is_down_and_are_written_in_order_when_it_is_back():
    flaky = FlakyStore(failures=2)
    writer = PredictionLog(flaky, batch_size=2, interval_s=0.01)
    writer.start()
    writer.put([{"id": i} for i in range(5)])
    assert not writer.flush(0.2) or flaky.failures == 0
    assert writer.flush(10.0)
    assert flaky.written == list(range(5)) and writer.healthy and writer.dropped == 0
    writer.stop()


def test_beyond_max_pending_the_oldest_rows_are_dropped_and_counted():
    flaky = FlakyStore(failures=10**6)
    dropped = []
    writer = PredictionLog(flaky, max_pending=3, on_drop=dropped.append, stop_timeout_s=0.1)
    writer.put([{"id": i} for i in range(5)])
    assert writer.pending == 3 and writer.dropped == 2 and dropped == [2]
    assert [r["id"] for r in writer._pending] == [2, 3, 4]


def test_a_row_the_database_refuses_costs_only_itself_not_its_batch(store):
    dropped = []
    writer = PredictionLog(store, batch_size=10, interval_s=0.05, on_drop=dropped.append)
    bad = message(pid(9), conversation="x\x00", turn=9)  # PostgreSQL refuses NUL in text
    bad["scores"] = object()  # and no database takes this: refused on SQLite too
    writer.start()
    writer.put([message(pid(1), turn=1), bad, message(pid(2), turn=2)])
    assert writer.flush(5.0)
    writer.stop()
    assert store.get(pid(1)) is not None and store.get(pid(2)) is not None and store.get(pid(9)) is None
    assert writer.dropped == 1 and dropped == [1]


def test_nul_in_text_is_not_stored_and_does_not_cost_the_row(store):
    writer = PredictionLog(store, store_text=True, batch_size=10, interval_s=0.05)
    writer.start()
    writer.put([message(pid(1), text="在吗\x00 快递呢"), message(pid(2), turn=1, text="好")])
    assert writer.flush(5.0)
    writer.stop()
    assert store.get(pid(1)).text_masked == "在吗 快递呢" and writer.dropped == 0


def test_an_unreachable_postgresql_is_reported_as_unavailable():
    store = Store("postgresql+psycopg://kefu@127.0.0.1:1/kefu", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable, match="OperationalError"):
        store.migrate()
    with pytest.raises(StoreUnavailable):
        store.get(pid(1))
