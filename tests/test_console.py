"""The review console's HTML routes through TestClient (tiny bundle, SQLite store in tmp): bad input, auth, feedback."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
from fastapi.testclient import TestClient  # noqa: E402

from kefu_router.serve.app import create_app  # noqa: E402
from kefu_router.serve.settings import Settings  # noqa: E402
from kefu_router.store.tables import Feedback  # noqa: E402

ANGRY = json.loads((Path(__file__).parent.parent / "examples" / "angry_buyer.json").read_text(encoding="utf-8"))


def client(bundle, tmp_path, **overrides) -> TestClient:
    return TestClient(create_app(Settings(model=bundle, db=str(tmp_path / "c.db"), log_interval_ms=20, **overrides)))


def paste(c: TestClient, text: str, **kwargs):
    return c.post("/console", data={"conversation": text}, **kwargs)


def test_the_conversation_view_routes_a_pasted_conversation_like_the_api(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path) as c:
        page = c.get("/console")
        assert page.status_code == 200 and 'for="conversation"' in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        api = c.post("/v1/route", json=ANGRY).json()
        lines = "\n".join(f"{'买家' if t['role'] == 'customer' else '客服'}：{t['text']}" for t in ANGRY["turns"])
        for pasted in (json.dumps(ANGRY, ensure_ascii=False), lines):
            r = paste(c, pasted)
            assert r.status_code == 200, r.text
            assert f"<code>{api['playbook']['id']}</code>" in r.text and f"<code>{api['rule']}</code>" in r.text
            assert api["playbook"]["opening"] in r.text and api["playbook"]["avoid"][0]["phrase"] in r.text
            assert r.text.count('class="dot ') == 3  # one point per buyer turn on the emotion trajectory
            assert ("需要人工复核" if api["needs_human_review"] else "无需人工复核") in r.text
            for p in api["predictions"]:
                assert f"<code>{p['emotion']['label']}</code> <span class=\"score\">{p['emotion']['score']:.2f}" in r.text
        assert "没有写入预测日志" in r.text
        assert c.app.state.service.prediction_log.flush(5.0)
        assert c.app.state.service.store.counts()["predictions"] == 1 + 3  # the /v1/route call only


@pytest.mark.parametrize("pasted, status, says", [
    ("", 422, "是空的"),
    ("   \n\n", 422, "是空的"),
    ("买家：在吗\n店长：您好", 422, "第 2 行</strong>：未知角色「店长」"),
    ("在吗", 422, "第 1 行</strong>：缺少角色"),
    ('{"turns": [{"role": "boss", "text": "在吗"}]}', 422, "第 1 轮 (turns[0].role)"),
    ('{"turns": [{"role": "agent", "text": "您好"}]}', 422, "没有买家消息"),
    ('{"turns": [{"role": "customer", "text": "\u200b "}]}', 422, "text is empty or only whitespace"),
    ('{"turns": [', 422, "不是有效的 JSON"),
    ('{"turns": [], "extra": 1}', 422, "extra"),
])
def test_bad_input_gets_a_clear_message_on_the_page_never_a_500(tiny_bundle, tmp_path, pasted, status, says):
    with client(tiny_bundle, tmp_path) as c:
        r = paste(c, pasted)
        assert r.status_code == status and 'role="alert"' in r.text and says in r.text, r.text[-1500:]
        assert "text/html" in r.headers["content-type"]


def test_ten_thousand_characters_are_cut_as_the_api_cuts_them_and_the_page_says_so(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path) as c:
        r = paste(c, "客服：您好\n买家：" + "啊" * 10_000)
        assert r.status_code == 200 and "第 2 轮超过 2000 字" in r.text and "已截断" in r.text
        assert paste(c, "买家：在吗", headers={"content-type": "text/plain"}).status_code == 415


def test_too_many_turns_are_refused_with_the_limit(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path, max_turns=3) as c:
        r = paste(c, "\n".join(["买家：在吗"] * 4))
        assert r.status_code == 422 and "at most 3" in r.text


def test_the_console_can_be_switched_off(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path, console=False) as c:
        assert c.get("/console").status_code == 404 and c.get("/console/review").status_code == 404


def test_with_an_api_key_every_console_url_needs_it_and_the_browser_is_asked_for_it(tiny_bundle, tmp_path):
    basic = lambda user, key: {"authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}  # noqa: E731
    with client(tiny_bundle, tmp_path, api_key="s3cret") as c:
        for url in ("/console", "/console/review", "/console/static/console.js", "/console/conversation?id=x"):
            r = c.get(url)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic"), url
        assert c.get("/console", headers=basic("sup-1", "wrong")).status_code == 401
        assert c.get("/console", headers={"x-api-key": "s3cret"}).status_code == 200
        review = c.get("/console/review", headers=basic("sup-1", "s3cret"))
        assert review.status_code == 200 and 'value="sup-1"' in review.text  # the Basic user is the default reviewer


def test_the_review_queue_lists_flagged_and_uncertain_predictions_and_takes_feedback(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path, store_text=True) as c:
        routed = c.post("/v1/route", json=ANGRY).json()
        everything = c.get("/console/review?below=1")  # a tiny random model is never sure: every message is queued
        assert everything.status_code == 200 and everything.text.count('<article class="item') == 3
        assert "什么破店 再不发我就投诉到12315" in everything.text and "在吗 我的快递三天了还没发货" in everything.text
        assert "没有存原文" not in everything.text
        last = routed["predictions"][-1]
        body = {"prediction_id": last["prediction_id"], "emotion": "neutral", "customer_type": [],
                "playbook": "human_review", "agent_id": "sup-1", "idempotency_key": "console-1"}
        r = c.post("/console/feedback", json=body)
        assert r.status_code == 201 and r.json()["decision_id"] == routed["prediction_id"]
        assert c.post("/console/feedback", json=body).json()["replayed"] is True
        assert c.post("/console/feedback", json={**body, "emotion": "angry"}).status_code == 409
        after = c.get("/console/review?below=1")
        assert after.text.count('<article class="item') == 2 and 'id="reviewed">1<' in after.text and 'id="remaining">2<' in after.text
        assert c.get("/console/review?below=1&reviewed=1").text.count('<article class="item') == 3
        queue = routed["playbook"]["queue"]
        assert c.get(f"/console/review?below=1&queue={queue}").text.count('<article class="item') == 2
        other = next(p.queue for p in c.app.state.service.router.playbooks.playbooks.values() if p.queue != queue)
        assert '<article class="item' not in c.get(f"/console/review?below=1&queue={other}").text
        assert c.get("/console/review?below=1&model=no-such-model").text.count('<article class="item') == 0
        with c.app.state.service.store._session() as session:
            row = session.query(Feedback).one()
        assert (row.prediction_id, row.decision_id, row.emotion, row.intent, row.customer_type, row.playbook, row.agent_id) == (
            last["prediction_id"], routed["prediction_id"], "neutral", None, [], "human_review", "sup-1")


def test_without_stored_text_the_queue_says_so(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path) as c:
        c.post("/v1/route", json=ANGRY)
        r = c.get("/console/review?below=1")
        assert r.status_code == 200 and "没有存原文" in r.text and "未存储原文" in r.text and "投诉到12315" not in r.text


@pytest.mark.parametrize("query, says", [
    ("queue=nowhere", "未知队列"), ("head=mood", "未知 &#39;mood&#39;"), ("below=2", "0 到 1"), ("below=abc", "0 到 1"),
    ("date=2024-13-01", "YYYY-MM-DD"), ("date=9999-12-31", "out of range"), ("date=0001-01-01", "out of range"),
])
def test_bad_review_filters_get_422_and_say_why(tiny_bundle, tmp_path, query, says):
    with client(tiny_bundle, tmp_path) as c:
        r = c.get(f"/console/review?{query}")
        assert r.status_code == 422 and says in r.text


def test_console_feedback_takes_only_same_origin_json_and_checks_labels_like_the_api(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path) as c:
        pid = c.post("/v1/route", json=ANGRY).json()["predictions"][0]["prediction_id"]
        body = {"prediction_id": pid, "emotion": "angry", "agent_id": "a", "idempotency_key": "k"}
        assert c.post("/console/feedback", data={"emotion": "angry"}).status_code == 415
        assert c.post("/console/feedback", json=body, headers={"origin": "https://evil.example"}).status_code == 403
        assert c.post("/console/feedback", json=body, headers={"sec-fetch-site": "cross-site"}).status_code == 403
        bad = c.post("/console/feedback", json={**body, "emotion": "furious"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "emotion"]
        assert c.post("/console/feedback", content=b"{", headers={"content-type": "application/json"}).status_code == 422
        assert c.post("/console/feedback", json={**body, "prediction_id": "f" * 32}).status_code == 404
        ok = c.post("/console/feedback", json=body, headers={"origin": str(c.base_url)})
        assert ok.status_code == 201
        # behind a proxy that rewrites Host, the browser's own Sec-Fetch-Site still says same-origin
        proxied = c.post("/console/feedback", json={**body, "idempotency_key": "k2"},
                         headers={"origin": "https://kefu.example.com", "sec-fetch-site": "same-origin"})
        assert proxied.status_code == 201


def test_rows_logged_with_labels_this_schema_lacks_are_shown_not_a_500(tiny_bundle, tmp_path):
    from datetime import datetime, timezone

    with client(tiny_bundle, tmp_path) as c:
        store = c.app.state.service.store
        now = datetime.now(timezone.utc)
        store.insert_predictions([
            {"id": "d" * 32, "kind": "route", "created_at": now, "model_version": "old", "conversation_id": "old-1",
             "playbook": "retired_playbook", "rule": "retired_rule", "needs_human_review": True},
            {"id": "e" * 32, "kind": "message", "created_at": now, "model_version": "old", "conversation_id": "old-1",
             "turn": 0, "decision_id": "d" * 32, "emotion": "furious", "intent": "complaint", "customer_type": ["vip"],
             "scores": {"emotion": {"furious": 0.9}, "intent": {"complaint": 0.8}, "customer_type": {"vip": 0.7}},
             "needs_human_review": True},
        ])
        queue = c.get("/console/review")
        assert queue.status_code == 200 and 'data-id="' + "e" * 32 in queue.text
        r = c.get("/console/conversation?id=old-1")
        assert r.status_code == 422 and "furious" in r.text


def test_a_logged_conversation_opens_by_decision_message_or_conversation_id(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path, store_text=True) as c:
        routed = c.post("/v1/route", json=ANGRY).json()
        assert c.app.state.service.prediction_log.flush(5.0)
        for key in (routed["prediction_id"], routed["predictions"][1]["prediction_id"], ANGRY["conversation_id"]):
            r = c.get("/console/conversation", params={"id": key})
            assert r.status_code == 200 and f"<code>{routed['playbook']['id']}</code>" in r.text
            assert "查了半天了 到底发不发" in r.text and "第 3 轮" in r.text
        missing = c.get("/console/conversation", params={"id": "nope"})
        assert missing.status_code == 404 and "没有" in missing.text
        assert c.get("/console/conversation").status_code == 422


def test_nul_in_console_query_parameters_gets_a_clear_422(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path) as c:
        r = c.get("/console/conversation?id=a%00b")
        assert r.status_code == 422 and "NUL" in r.text
        r = c.get("/console/review?model=a%00b")
        assert r.status_code == 422 and "NUL" in r.text


def test_without_the_prediction_log_the_queue_says_why(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path, prediction_log=False) as c:
        r = c.get("/console/review")
        assert r.status_code == 503 and "KEFU_ROUTER_PREDICTION_LOG=false" in r.text
        assert c.get("/console/conversation?id=x").status_code == 503
        assert paste(c, "买家：在吗").status_code == 200  # trial routing needs no database


def test_static_files_are_served_from_the_package_and_nothing_else(tiny_bundle, tmp_path):
    with client(tiny_bundle, tmp_path) as c:
        js = c.get("/console/static/console.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript") and "keydown" in js.text
        assert c.get("/console/static/console.css").status_code == 200
        assert c.get("/console/static/..%2Fconsole.py").status_code == 404
        assert c.get("/console/static/base.html").status_code == 404
