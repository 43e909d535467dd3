"""The prediction log and POST /v1/feedback through the HTTP API (tiny bundle, SQLite store in tmp)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from fastapi.testclient import TestClient  # noqa: E402

from kefu_router.serve.app import create_app  # noqa: E402
from kefu_router.serve.settings import Settings  # noqa: E402
from kefu_router.store import Store, StoreUnavailable, text_hmac  # noqa: E402

TURNS = [
    {"role": "customer", "text": "我买的杯子收到就是碎的 电话13812345678"},
    {"role": "agent", "text": "亲，非常抱歉，麻烦发一下照片"},
    {"role": "customer", "text": "什么破东西 我要投诉你们"},
]


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "log.db")


def client(bundle, db, **overrides) -> TestClient:
    return TestClient(create_app(Settings(model=bundle, db=db, log_interval_ms=20, **overrides)))


def written(c: TestClient) -> Store:
    svc = c.app.state.service
    assert svc.prediction_log.flush(5.0)
    return svc.store


def test_every_answer_carries_prediction_ids_and_each_prediction_is_logged_without_text(tiny_bundle, db):
    with client(tiny_bundle, db) as c:
        routed = c.post("/v1/route", json={"conversation_id": "c-1", "turns": TURNS}).json()
        classified = c.post("/v1/classify", json={"messages": [{"text": "在吗", "conversation_id": "c-2", "turn": 0},
                                                               {"text": "有L码吗"}]}).json()
        store = written(c)
        ids = [routed["prediction_id"], *(p["prediction_id"] for p in routed["predictions"]),
               *(r["prediction_id"] for r in classified["results"])]
        assert len(set(ids)) == 5
        decision = store.get(routed["prediction_id"])
        assert (decision.kind, decision.conversation_id, decision.playbook, decision.rule, decision.needs_human_review,
                decision.model_version) == ("route", "c-1", routed["playbook"]["id"], routed["rule"],
                                            routed["needs_human_review"], "tiny-test")
        second = store.get(routed["predictions"][1]["prediction_id"])
        answer = routed["predictions"][1]
        assert (second.turn, second.decision_id, second.emotion, second.intent, second.needs_human_review) == (
            2, decision.id, answer["emotion"]["label"], answer["intent"]["label"], routed["needs_human_review"])
        assert second.customer_type == [t["label"] for t in answer["customer_type"]]
        assert second.scores["intent"] == answer["intent"]["scores"]
        first_classified = store.get(classified["results"][0]["prediction_id"])
        assert (first_classified.conversation_id, first_classified.turn, first_classified.decision_id) == ("c-2", 0, None)
        assert all(store.get(i).text_masked is None and store.get(i).text_hmac is None for i in ids)


def test_text_is_stored_only_when_configured_masked_and_with_the_hmac_of_its_normal_form(tiny_bundle, db):
    with client(tiny_bundle, db, store_text=True, text_hmac_key="k3y") as c:
        routed = c.post("/v1/route", json={"conversation_id": "c-1", "turns": TURNS}).json()
        row = written(c).get(routed["predictions"][0]["prediction_id"])
    assert row.text_masked == "我买的杯子收到就是碎的 电话[电话]"
    assert row.text_hmac == text_hmac(b"k3y", TURNS[0]["text"])


def test_feedback_is_committed_once_per_idempotency_key(tiny_bundle, db):
    with client(tiny_bundle, db) as c:
        routed = c.post("/v1/route", json={"conversation_id": "c-1", "turns": TURNS}).json()
        # no flush first: feedback on a prediction still queued for writing waits for it instead of a 404
        body = {"prediction_id": routed["predictions"][1]["prediction_id"], "emotion": "angry", "intent": "complaint",
                "customer_type": ["impatient", "impatient"], "agent_id": "agent-7", "idempotency_key": "fb-1"}
        first = c.post("/v1/feedback", json=body)
        assert first.status_code == 201 and first.json()["replayed"] is False
        retry = c.post("/v1/feedback", json=body)
        assert retry.status_code == 201 and retry.json()["feedback_id"] == first.json()["feedback_id"] and retry.json()["replayed"]
        reuse = c.post("/v1/feedback", json={**body, "emotion": "neutral"})
        assert reuse.status_code == 409 and "fb-1" in reuse.json()["detail"]
        by_turn = c.post("/v1/feedback", json={"conversation_id": "c-1", "turn": 2, "playbook": "human_review",
                                                "agent_id": "agent-7", "idempotency_key": "fb-2"})
        assert by_turn.status_code == 201 and by_turn.json()["decision_id"] == routed["prediction_id"]
        store = written(c)
        assert store.counts()["feedback"] == 2
        final = store.messages(store.get(routed["prediction_id"]).created_at, store.get(routed["prediction_id"]).created_at.replace(year=2100))
        assert [r["final"]["customer_type"] for r in final if r["final"]] == [["impatient"]]


@pytest.mark.parametrize("change, field", [
    ({"emotion": "furious"}, ["body", "emotion"]),
    ({"intent": "refund"}, ["body", "intent"]),
    ({"customer_type": ["vip"]}, ["body", "customer_type", 0]),
    ({"playbook": "no_such_playbook"}, ["body", "playbook"]),
    ({"emotion": None, "intent": None}, ["body"]),  # nothing to record
    ({"prediction_id": None}, ["body"]),  # no message named
    ({"agent_id": ""}, ["body", "agent_id"]),
])
def test_feedback_with_unknown_labels_gets_422_naming_the_field(tiny_bundle, db, change, field):
    body = {"prediction_id": "a" * 32, "emotion": "angry", "intent": "complaint", "agent_id": "a", "idempotency_key": "k"}
    with client(tiny_bundle, db) as c:
        r = c.post("/v1/feedback", json={k: v for k, v in {**body, **change}.items() if v is not None})
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [field]
        assert written(c).counts()["feedback"] == 0


@pytest.mark.parametrize("field", ["agent_id", "idempotency_key", "conversation_id"])
def test_nul_in_a_stored_string_gets_422_naming_the_field(tiny_bundle, db, field):
    with client(tiny_bundle, db) as c:
        body = {"conversation_id": "c-1", "turn": 0, "emotion": "angry", "agent_id": "a", "idempotency_key": "k"}
        r = c.post("/v1/feedback", json={**body, field: "a\x00b"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field and "NUL" in r.text


def test_nul_in_a_logged_conversation_id_gets_422_and_costs_no_other_row(tiny_bundle, db):
    with client(tiny_bundle, db) as c:
        r = c.post("/v1/route", json={"conversation_id": "x\x00", "turns": TURNS})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "conversation_id"
        r = c.post("/v1/classify", json={"messages": [{"text": "在吗", "conversation_id": "x\x00"}]})
        assert r.status_code == 422 and "conversation_id" in r.json()["detail"][0]["loc"]


def test_feedback_on_an_unknown_prediction_gets_404(tiny_bundle, db):
    with client(tiny_bundle, db) as c:
        r = c.post("/v1/feedback", json={"prediction_id": "b" * 32, "emotion": "angry", "agent_id": "a", "idempotency_key": "k"})
        assert r.status_code == 404 and "b" * 32 in r.json()["detail"]
        r = c.post("/v1/feedback", json={"conversation_id": "nope", "turn": 3, "emotion": "angry", "agent_id": "a", "idempotency_key": "k2"})
        assert r.status_code == 404 and "turn 3" in r.json()["detail"]


def test_labels_for_a_routing_decision_get_422_on_prediction_id(tiny_bundle, db):
    with client(tiny_bundle, db) as c:
        routed = c.post("/v1/route", json={"turns": TURNS}).json()
        r = c.post("/v1/feedback", json={"prediction_id": routed["prediction_id"], "emotion": "angry", "agent_id": "a",
                                         "idempotency_key": "k"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prediction_id"]


def test_a_database_that_goes_down_gets_503_predictions_go_on_and_no_accepted_row_is_lost(tiny_bundle, db, monkeypatch):
    with client(tiny_bundle, db) as c:
        store = written(c)
        routed = c.post("/v1/route", json={"conversation_id": "c-1", "turns": TURNS}).json()
        assert c.app.state.service.prediction_log.flush(5.0)

        def down(*args, **kwargs):
            raise StoreUnavailable("OperationalError: could not connect to server")

        monkeypatch.setattr(store, "insert_predictions", down)
        monkeypatch.setattr(store, "add_feedback", down)
        served = [c.post("/v1/route", json={"conversation_id": f"c-{i}", "turns": TURNS}) for i in range(3)]
        assert [r.status_code for r in served] == [200] * 3
        body = {"prediction_id": routed["predictions"][0]["prediction_id"], "emotion": "angry", "agent_id": "a",
                "idempotency_key": "while-down"}
        r = c.post("/v1/feedback", json=body)
        assert r.status_code == 503 and "could not connect" in r.json()["detail"] and r.headers["retry-after"]
        metrics = c.get("/metrics").text
        assert "kefu_store_up 0.0" in metrics
        monkeypatch.undo()  # the database is back
        monkeypatch.setenv("KEFU_ROUTER_DB", db)
        assert c.post("/v1/feedback", json=body).status_code == 201
        assert c.app.state.service.prediction_log.flush(15.0)
        assert store.counts() == {"predictions": 4 * 3, "feedback": 1}  # 3 answers logged while down, none lost
        assert c.app.state.service.prediction_log.dropped == 0


@pytest.mark.parametrize("where, says", [("folder", "unable to open"), ("garbage", "not a SQLite database")])
def test_a_sqlite_store_that_cannot_be_opened_serves_predictions_and_answers_503_with_the_reason(tiny_bundle, tmp_path,
                                                                                              where, says):
    if where == "garbage":
        db = tmp_path / "g.db"
        db.write_text("garbage\n")
    else:
        db = "/proc/nope/store.db"  # its folder cannot be created
    with client(tiny_bundle, str(db)) as c:
        assert c.post("/v1/classify", json={"messages": [{"text": "在吗"}]}).status_code == 200
        r = c.post("/v1/feedback", json={"conversation_id": "c", "turn": 0, "emotion": "angry", "agent_id": "a",
                                         "idempotency_key": "k"})
        assert r.status_code == 503 and says in r.json()["detail"]
        r = c.get("/v1/quality")
        assert r.status_code == 503 and says in r.json()["detail"]
        for url in ("/console/review", "/console/conversation?id=c"):
            r = c.get(url)
            assert r.status_code == 503 and "store unavailable" in r.text


def test_an_unreachable_database_at_start_up_still_serves_predictions(tiny_bundle):
    with client(tiny_bundle, "postgresql+psycopg://kefu@127.0.0.1:1/kefu") as c:
        assert c.get("/readyz").status_code == 200
        assert c.post("/v1/classify", json={"messages": [{"text": "在吗"}]}).status_code == 200
        r = c.post("/v1/feedback", json={"prediction_id": "c" * 32, "emotion": "angry", "agent_id": "a", "idempotency_key": "k"})
        assert r.status_code == 503 and "feedback store unavailable" in r.json()["detail"]


def test_with_the_prediction_log_off_no_database_is_opened_and_feedback_says_why(tiny_bundle, db):
    from pathlib import Path

    with client(tiny_bundle, db, prediction_log=False) as c:
        result = c.post("/v1/classify", json={"messages": [{"text": "在吗"}]}).json()["results"][0]
        assert len(result["prediction_id"]) == 32
        r = c.post("/v1/feedback", json={"prediction_id": result["prediction_id"], "emotion": "angry", "agent_id": "a",
                                         "idempotency_key": "k"})
        assert r.status_code == 503 and "PREDICTION_LOG" in r.json()["detail"]
    assert not Path(db).exists()


def test_logs_never_carry_the_text(tiny_bundle, db, caplog):
    secret = "我叫张三丰 电话13812345678"
    with caplog.at_level(logging.DEBUG), client(tiny_bundle, db, store_text=True, text_hmac_key="k") as c:
        routed = c.post("/v1/route", json={"conversation_id": "c-1", "turns": [{"role": "customer", "text": secret}]}).json()
        c.post("/v1/feedback", json={"prediction_id": routed["predictions"][0]["prediction_id"], "emotion": "angry",
                                     "agent_id": "a", "idempotency_key": "k"})
        written(c)
    assert caplog.records and not any("13812345678" in r.getMessage() or "13812345678" in str(r.__dict__) for r in caplog.records)
