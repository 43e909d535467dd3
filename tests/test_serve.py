"""The HTTP service against the tiny bundle: contract, robustness, auth, start-up failures, batching, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.request import Request, urlopen

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from kefu_router.bundle import BundleError  # noqa: E402
from kefu_router.cli import app as cli  # noqa: E402
from kefu_router.labels import HEADS  # noqa: E402
from kefu_router.playbooks import PlaybookError  # noqa: E402
from kefu_router.privacy import mask_pii  # noqa: E402
from kefu_router.serve.app import create_app  # noqa: E402
from kefu_router.serve.batcher import MicroBatcher, Overloaded  # noqa: E402
from kefu_router.serve.observability import JsonFormatter  # noqa: E402
from kefu_router.serve.settings import Settings  # noqa: E402

ANGRY = [
    {"role": "customer", "text": "我买的杯子收到就是碎的"},
    {"role": "agent", "text": "亲，非常抱歉，麻烦发一下照片"},
    {"role": "customer", "text": "什么破东西 我要投诉你们", "ts": "2024-06-18T10:00:00+08:00"},
]


def make_client(bundle, **overrides) -> TestClient:
    return TestClient(create_app(Settings(model=bundle, **overrides)))


@pytest.fixture(scope="module")
def client(tiny_bundle):
    with make_client(tiny_bundle, max_turns=8, max_messages=4, max_text_chars=100, max_body_bytes=100_000) as c:
        yield c


# --- contract -------------------------------------------------------------------------------------

def test_health_and_readiness_after_warm_up(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": "tiny-test"}


def test_classify_returns_labels_and_scores_per_head_for_each_message(client):
    body = {"messages": [{"text": "这条裙子有L码吗"}, {"text": "怎么还没到", "context": [{"role": "customer", "text": "我的快递"}]}]}
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 200
    data = r.json()
    assert data["model_version"] == "tiny-test" and len(data["results"]) == 2
    for result in data["results"]:
        for head in HEADS:
            assert head.name in result
        assert set(result["emotion"]["scores"]) == set(HEADS[0].labels)
        assert result["truncated"] is False


def test_route_returns_playbook_reasons_aggregate_and_one_prediction_per_customer_turn(client):
    r = client.post("/v1/route", json={"conversation_id": "c-1", "turns": ANGRY})
    assert r.status_code == 200
    data = r.json()
    assert data["conversation_id"] == "c-1"
    assert set(data["playbook"]) == {"id", "name", "queue", "priority", "sla_seconds", "guidance", "avoid", "opening"}
    assert isinstance(data["needs_human_review"], bool)
    assert data["reasons"][-1].startswith(f"rule {data['rule']} -> {data['playbook']['id']}")
    assert [p["turn"] for p in data["predictions"]] == [0, 2]
    assert data["aggregate"]["turns"] == 2


def test_route_uses_turn_text_to_keep_the_topic_through_acknowledgements(client):
    turns = [{"role": "customer", "text": "我要退货"}, {"role": "agent", "text": "好的亲"}, {"role": "customer", "text": "好的"}]
    assert client.post("/v1/route", json={"turns": turns}).json()["aggregate"]["fillers"] == [2]


def test_route_checks_fillers_on_the_cut_text_only(client, monkeypatch):
    """Issue 13: the filler check walked a 1M-character text on the event loop (120 ms a request)."""
    import kefu_router.routing

    seen = []
    is_filler = kefu_router.routing.is_filler
    monkeypatch.setattr(kefu_router.routing, "is_filler", lambda text: seen.append(len(text)) or is_filler(text))
    turns = [{"role": "customer", "text": "我要退货"}, {"role": "customer", "text": "好" * 20_000}]
    r = client.post("/v1/route", json={"turns": turns})
    assert r.status_code == 200 and r.json()["aggregate"]["fillers"] == [2]
    assert seen == [4, 100]  # 100: the client's max_text_chars


def test_route_answers_as_the_cli_does_for_the_same_conversation(client, tiny_bundle, tmp_path):
    """Both go through kefu_router.conversation: same messages, same predictions, same decision."""
    turns = [*ANGRY, {"role": "customer", "text": "好的"}, {"role": "agent", "text": "亲 马上给您处理"}, {"role": "customer", "text": "快点"}]
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps({"turns": turns}, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(cli, ["route", str(path), "-m", str(tiny_bundle)])
    assert result.exit_code == 0, result.output
    cli_out, http_out = json.loads(result.output), client.post("/v1/route", json={"turns": turns}).json()
    for key in ("playbook", "rule", "needs_human_review", "reasons", "aggregate", "model_version"):
        assert cli_out[key] == http_out[key], key
    assert [(p["turn"], p["emotion"], p["intent"]) for p in cli_out["predictions"]] == [
        (p["turn"], p["emotion"]["label"], p["intent"]["label"]) for p in http_out["predictions"]
    ]


def test_model_info_gives_version_labels_metrics_and_playbooks(client):
    data = client.get("/v1/model").json()
    assert data["version"] == "tiny-test"
    assert data["labels"]["emotion"]["labels"] == list(HEADS[0].labels)
    assert "emotion_macro_f1" in data["metrics"]
    assert "angry_escalation" in data["playbooks"]["ids"]


def test_metrics_count_requests_batches_labels_and_playbooks(client):
    client.post("/v1/route", json={"turns": ANGRY})
    text = client.get("/metrics").text
    for name in ("kefu_requests_total", "kefu_request_seconds_bucket", "kefu_batch_size_bucket",
                 "kefu_predicted_labels_total", "kefu_routed_total"):
        assert name in text
    assert 'kefu_requests_total{endpoint="/v1/route",status="200"}' in text


def test_openapi_has_chinese_examples(client):
    spec = client.get("/openapi.json").json()
    assert "什么破东西" in json.dumps(spec["components"]["schemas"]["RouteRequest"], ensure_ascii=False)


# --- robustness: every bad input gets a 4xx with a reason --------------------------------------------

@pytest.mark.parametrize(
    "path, body, where",
    [
        ("/v1/classify", {"messages": [{"text": ""}]}, ["body", "messages", 0, "text"]),
        ("/v1/classify", {"messages": [{"text": " \n\t "}]}, ["body", "messages", 0, "text"]),
        ("/v1/route", {"turns": [{"role": "customer", "text": "   "}]}, ["body", "turns", 0, "text"]),
        # only zero-width, format or control characters: as empty as whitespace (issue 13, item 9)
        ("/v1/classify", {"messages": [{"text": "\u200b\u200b"}]}, ["body", "messages", 0, "text"]),
        ("/v1/classify", {"messages": [{"text": "\x00\x01\x7f"}]}, ["body", "messages", 0, "text"]),
        ("/v1/classify", {"messages": [{"text": "\u200d\ufeff\u2060\u00ad"}]}, ["body", "messages", 0, "text"]),
        ("/v1/route", {"turns": [{"role": "customer", "text": "\u3000\u200e\u202e\U000e0020"}]}, ["body", "turns", 0, "text"]),
        ("/v1/route", {"turns": [{"role": "customer", "text": "在吗", "ts": "2024-06-18"}]}, ["body", "turns", 0, "ts"]),
        ("/v1/route", {"turns": [{"role": "customer", "text": "在吗", "ts": 1718676000000}]}, ["body", "turns", 0, "ts"]),
        ("/v1/classify", {"messages": [{"text": 123}]}, ["body", "messages", 0, "text"]),
        ("/v1/classify", {"messages": "这条裙子有L码吗"}, ["body", "messages"]),
        ("/v1/classify", {"messages": []}, ["body", "messages"]),
        ("/v1/route", {"turns": [{"role": "boss", "text": "你好"}]}, ["body", "turns", 0, "role"]),
        ("/v1/route", {"turns": [{"role": "customer", "text": "你好", "ts": {"day": 1}}]}, ["body", "turns", 0, "ts"]),
        ("/v1/route", {"turns": [{"role": "customer", "text": "你好", "mood": "bad"}]}, ["body", "turns", 0, "mood"]),
        ("/v1/route", {"turns": [{"role": "agent", "text": "您好"}]}, ["body", "turns"]),
        ("/v1/route", {"turns": [{"role": "customer", "text": "在吗"}] * 9}, ["body", "turns"]),
        ("/v1/classify", {"messages": [{"text": "在吗"}] * 5}, ["body", "messages"]),
        ("/v1/classify", {"messages": [{"text": "在吗", "context": [{"role": "agent", "text": "在"}] * 9}]},
         ["body", "messages", 0, "context"]),
        ("/v1/classify", [1, 2], ["body"]),
    ],
)
def test_invalid_requests_get_422_naming_the_field(client, path, body, where):
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert any(err["loc"] == where and err["msg"] for err in r.json()["detail"]), r.json()


def test_a_lone_surrogate_is_rejected_not_a_server_error(client):
    r = client.post("/v1/classify", content=b'{"messages": [{"text": "\\ud800"}]}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "surrogate" in r.text


def test_a_very_long_text_is_truncated_and_flagged(client):
    long_text = "这条裙子有L码吗" * 1500  # 12,000 characters
    r = client.post("/v1/classify", json={"messages": [{"text": long_text}, {"text": "在吗"}]})
    assert r.status_code == 200
    assert [m["truncated"] for m in r.json()["results"]] == [True, False]
    r = client.post("/v1/route", json={"turns": [{"role": "agent", "text": long_text}, {"role": "customer", "text": "在吗"}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["truncated"] is True


@pytest.mark.parametrize("body, reason", [
    (b'{"turns": [', "Expecting value"),
    (b"[" * 20_000 + b"]" * 20_000, "nesting too deep"),  # was 400 "error parsing the body"
    (b'{"turns": [{"role": "customer", "text": ' + b"1" * 5000 + b"}]}", "4300 digits"),  # likewise
])
def test_json_the_parser_cannot_take_gets_one_422_shape(client, body, reason):
    r = client.post("/v1/route", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"][0] == "body" and reason in error["msg"]


@pytest.mark.parametrize("encoding", ["gbk", "utf-16", "utf-16-le", "utf-32"])
def test_a_body_that_is_not_utf8_gets_400_saying_so(client, encoding):
    """UTF-16 and UTF-32 too: Python's json detects and reads them, but JSON over HTTP is UTF-8 (RFC 8259)."""
    body = '{"messages": [{"text": "在吗 退货"}]}'.encode(encoding)
    r = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "UTF-8" in r.json()["detail"]


def test_a_utf8_body_with_a_bom_is_read(client):
    body = '{"messages": [{"text": "在吗"}]}'.encode("utf-8-sig")
    assert client.post("/v1/classify", content=body, headers={"content-type": "application/json"}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None])
def test_a_body_that_is_not_declared_json_gets_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/classify", content='{"messages": [{"text": "在吗"}]}'.encode(), headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_json_content_types_are_read_as_json(client):
    body = '{"messages": [{"text": "在吗"}]}'.encode()
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json", "Application/JSON"):
        assert client.post("/v1/classify", content=body, headers={"content-type": content_type}).status_code == 200


def test_health_and_readiness_answer_head(client):
    assert client.head("/healthz").status_code == 200 and client.head("/readyz").status_code == 200


def test_openapi_states_the_limits_it_enforces(client):
    """maxItems, minLength, not-blank pattern and maxLength in the schema, matching the client's settings."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    messages = schemas["ClassifyRequest"]["properties"]["messages"]
    turns = schemas["RouteRequest"]["properties"]["turns"]
    assert (messages["minItems"], messages["maxItems"], turns["minItems"], turns["maxItems"]) == (1, 4, 1, 8)
    assert schemas["MessageIn"]["properties"]["context"]["maxItems"] == 8
    assert turns["contains"] == {"type": "object", "properties": {"role": {"const": "customer"}}, "required": ["role"]}
    for text in (schemas["MessageIn"]["properties"]["text"], schemas["Turn"]["properties"]["text"]):
        assert text["minLength"] == 1 and text["maxLength"] == 100_000
        pattern = re.compile(text["pattern"])
        assert not any(pattern.search(t) for t in ("", " \t\n", "\u200b\ufeff", "\x00")) and pattern.search(" 在 ")


def test_a_huge_body_gets_413_from_its_content_length(client):
    r = client.post("/v1/classify", content=b" " * 150_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 100000 bytes" in r.json()["detail"]


def test_a_huge_streamed_body_without_content_length_gets_413(client):
    chunks = (b'{"messages": [{"text": "' + b"a" * 30_000 + b'"}]}' for _ in range(4))
    r = client.post("/v1/classify", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_paths_and_methods_are_4xx(client):
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/route").status_code == 405


# --- auth -----------------------------------------------------------------------------------------

def test_the_api_key_is_checked_before_the_body_is_read(tiny_bundle):
    with make_client(tiny_bundle, api_key="s3cret") as c:
        for body, content_type in ((b'{"messages": [', "application/json"), (b"\xff\xfe{", "application/json"),
                                   (b"text=1", "application/x-www-form-urlencoded")):
            assert c.post("/v1/classify", content=body, headers={"content-type": content_type}).status_code == 401


def test_api_key_is_required_on_v1_when_set_and_health_stays_open(tiny_bundle):
    with make_client(tiny_bundle, api_key="s3cret") as c:
        body = {"messages": [{"text": "在吗"}]}
        assert c.post("/v1/classify", json=body).status_code == 401
        assert c.post("/v1/classify", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/v1/classify", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/v1/classify", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/model").status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_without_an_api_key_setting_v1_is_open(client):
    assert client.get("/v1/model").status_code == 200


# --- start-up failures ----------------------------------------------------------------------------

def test_a_missing_bundle_stops_start_up(tmp_path):
    with pytest.raises(BundleError, match="model bundle not found"):
        with make_client(tmp_path / "nope"):
            pass


def test_a_corrupt_bundle_stops_start_up(bundle_copy):
    (bundle_copy / "model.int8.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(BundleError, match="cannot load model bundle"):
        with make_client(bundle_copy):
            pass


def test_a_bad_playbooks_file_stops_start_up(tiny_bundle, tmp_path):
    bad = tmp_path / "playbooks.yaml"
    bad.write_text("version: 1\nplaybooks: []\nrules: []\n", encoding="utf-8")
    with pytest.raises(PlaybookError, match="playbooks"):
        with make_client(tiny_bundle, playbooks=bad):
            pass


@pytest.mark.parametrize("breakage, message", [
    ("missing", "model bundle not found"),
    ("corrupt", "cannot load model bundle"),
    ("no-metadata", "is incomplete: missing metadata.json"),
])
def test_serve_command_fails_with_a_clear_message_on_a_bad_bundle(bundle_copy, breakage, message):
    target = bundle_copy
    if breakage == "missing":
        target = bundle_copy / "absent"
    elif breakage == "corrupt":
        (bundle_copy / "model.int8.onnx").write_bytes(b"\x00garbage")
    else:
        (bundle_copy / "metadata.json").unlink()
    result = CliRunner().invoke(cli, ["serve", "--model", str(target)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and message in result.output and "Traceback" not in result.output


@pytest.fixture
def restore_logging():
    """`serve` configures the process's logging (a root handler on the stderr of the moment, level INFO). Left in
    place, that handler outlives pytest's captured stderr, and the next INFO record (py4j's at interpreter exit)
    ends the run with a '--- Logging error ---' traceback."""
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_serve_command_runs_the_predictor_its_settings_describe(tiny_bundle, monkeypatch, restore_logging):
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: served.update(app=app, **kwargs))
    monkeypatch.setenv("KEFU_ROUTER_SPINNING", "false")
    monkeypatch.setenv("KEFU_ROUTER_THREADS", "1")
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_bundle), "--port", "8123"])
    assert result.exit_code == 0, result.output
    predictor = served["app"].state.service.predictor
    options = predictor.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1
    assert predictor.batch_size == 16 and served["port"] == 8123


def test_several_workers_serve_one_port_and_metrics_add_up_all_of_them(tiny_bundle, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TMPDIR": str(tmp_path), "KEFU_ROUTER_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "kefu_router", "serve", "--model", str(tiny_bundle),
                               "--port", str(port), "--workers", "2"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                urlopen(f"{base}/readyz", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "workers not ready within 90 s"
                time.sleep(0.3)
        assert list(tmp_path.glob("kefu-router-metrics-*"))  # Prometheus multiprocess files
        body = json.dumps({"turns": ANGRY}).encode()
        for _ in range(20):  # a new connection each: the kernel spreads them over the workers
            request = Request(f"{base}/v1/route", data=body, headers={"Content-Type": "application/json"})
            assert json.load(urlopen(request, timeout=30))["playbook"]["id"]
        metrics = urlopen(f"{base}/metrics", timeout=10).read().decode()
        routed = [line for line in metrics.splitlines()
                  if line.startswith("kefu_requests_total{") and '"/v1/route"' in line and '"200"' in line]
        assert len(routed) == 1 and float(routed[0].split()[-1]) == 20.0, routed
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not list(tmp_path.glob("kefu-router-metrics-*"))


# --- micro-batching -------------------------------------------------------------------------------

def run_jobs(batcher: MicroBatcher, jobs: list[list[str]]) -> list[list]:
    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict(job, timeout=30) for job in jobs))
        finally:
            await batcher.stop()
    return asyncio.run(main())


def test_concurrent_requests_share_one_model_call_and_get_their_own_results():
    calls = []
    batcher = MicroBatcher(lambda msgs: calls.append(list(msgs)) or [m.upper() for m in msgs],
                           max_batch_size=5, max_wait_ms=30_000)
    results = run_jobs(batcher, [["a"], ["b", "c"], ["d"], ["e"]])
    assert calls == [["a", "b", "c", "d", "e"]]
    assert results == [["A"], ["B", "C"], ["D"], ["E"]]


def test_with_batching_off_every_request_gets_its_own_model_call():
    calls = []
    batcher = MicroBatcher(lambda msgs: calls.append(list(msgs)) or list(msgs), batching=False)
    run_jobs(batcher, [["a"], ["b", "c"], ["d"]])
    assert calls == [["a"], ["b", "c"], ["d"]]


def test_a_batch_never_grows_past_max_batch_size_by_adding_requests():
    calls = []
    batcher = MicroBatcher(lambda msgs: calls.append(len(msgs)) or list(msgs), max_batch_size=2, max_wait_ms=30_000)
    run_jobs(batcher, [["a"], ["b"], ["c"], ["d"]])
    assert calls == [2, 2]


def test_a_failing_model_call_fails_its_requests_and_the_worker_keeps_going():
    def predict(msgs):
        if "bad" in msgs:
            raise RuntimeError("boom")
        return list(msgs)

    async def main():
        batcher = MicroBatcher(predict, batching=False)
        batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.predict(["bad"], timeout=30)
        ok = await batcher.predict(["fine"], timeout=30)
        await batcher.stop()
        return ok

    assert asyncio.run(main()) == ["fine"]


def test_a_request_that_fails_its_batch_fails_alone_and_the_others_are_answered():
    calls = []

    def predict(msgs):
        calls.append(list(msgs))
        if "bad" in msgs:
            raise RuntimeError("boom")
        return [m.upper() for m in msgs]

    async def main():
        batcher = MicroBatcher(predict, max_batch_size=4, max_wait_ms=30_000)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict(job, timeout=30) for job in (["a"], ["bad", "b"], ["c", "d"])),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    a, bad, cd = asyncio.run(main())
    assert a == ["A"] and cd == ["C", "D"] and isinstance(bad, RuntimeError)
    assert calls[0] == ["a", "bad", "b", "c", "d"] and sorted(calls[1:]) == [["a"], ["bad", "b"], ["c", "d"]]


def test_one_message_the_model_cannot_take_does_not_fail_the_requests_batched_with_it(tiny_bundle):
    """Issue 13: one 700-character message plus 10 concurrent short requests in one batch all got 500."""
    from kefu_router.predictor import Predictor

    predictor = Predictor(tiny_bundle)
    model_predict = predictor.predict

    def predict(messages):  # stands in for a model whose position embeddings a long input overruns
        if any(len(m.text) >= 700 for m in messages):
            raise RuntimeError("indices element out of data bounds")
        return model_predict(messages)

    predictor.predict = predict
    app = create_app(Settings(model=tiny_bundle, max_batch_size=11, max_wait_ms=1000), predictor=predictor)
    bodies = [{"messages": [{"text": "在吗" * 350}]}] + [{"messages": [{"text": "什么时候发货"}]}] * 10
    with TestClient(app, raise_server_exceptions=False) as c, ThreadPoolExecutor(len(bodies)) as pool:
        statuses = list(pool.map(lambda body: c.post("/v1/classify", json=body).status_code, bodies))
    assert statuses == [500] + [200] * 10


def test_a_full_queue_answers_overloaded_instead_of_waiting():
    async def main():
        batcher = MicroBatcher(lambda msgs: list(msgs), max_queue=2)
        batcher.start()
        try:
            with pytest.raises(Overloaded, match="more than 2 messages"):
                await batcher.predict(["a", "b", "c"], timeout=30)
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_overload_is_a_503_with_retry_after(tiny_bundle):
    with make_client(tiny_bundle, max_queue=1) as c:
        r = c.post("/v1/classify", json={"messages": [{"text": "在吗"}, {"text": "好的"}]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_classify_gives_the_same_answer_with_batching_on_and_off(tiny_bundle):
    body = {"messages": [{"text": "这条裙子有L码吗"}, {"text": "什么破东西"}]}
    answers = []
    for batching in (True, False):
        with make_client(tiny_bundle, batching=batching) as c:
            answer = c.post("/v1/classify", json=body).json()
            ids = [r.pop("prediction_id") for r in answer["results"]]  # unique per prediction, by design
            assert len(set(ids)) == 2
            answers.append(answer)
    assert answers[0] == answers[1]


# --- logs and privacy -----------------------------------------------------------------------------

def test_request_logs_are_structured_and_carry_no_message_text(client, caplog):
    secret = "我电话13812345678 收件人张三丰"
    with caplog.at_level(logging.INFO, logger="kefu_router.serve.access"):
        client.post("/v1/route", json={"turns": [{"role": "customer", "text": secret}]})
    records = [r for r in caplog.records if r.name == "kefu_router.serve.access"]
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["path"] == "/v1/route" and line["status"] == 200 and "playbook" in line
    assert "13812345678" not in json.dumps(line, ensure_ascii=False) and "张三丰" not in json.dumps(line, ensure_ascii=False)


def test_masked_text_logging_hides_pii(tiny_bundle, caplog):
    with make_client(tiny_bundle, log_masked_text=True) as c, caplog.at_level(logging.INFO, logger="kefu_router.serve.access"):
        c.post("/v1/classify", json={"messages": [{"text": "我电话13812345678 收件人张三丰"}]})
    record = [r for r in caplog.records if r.name == "kefu_router.serve.access"][-1]
    assert record.texts_masked == ["我电话[电话] 收件人[姓名]"]


@pytest.mark.parametrize("text, hidden, placeholder", [
    ("联系我 13812345678", "13812345678", "[电话]"),
    ("+86 138-1234-5678", "1234", "[电话]"),
    ("座机0571-88888888", "88888888", "[电话]"),
    ("订单号：2024061812345678 还没发货", "2024061812345678", "[单号]"),
    ("运单号SF1234567890123", "SF1234567890123", "[单号]"),
    ("地址：北京市朝阳区建国路88号院3号楼201室", "建国路", "[地址]"),
    ("寄到浙江省杭州市西湖区文三路100号", "文三路", "[地址]"),
    ("收件人张三丰", "张三丰", "[姓名]"),
    ("我叫李雷", "李雷", "[姓名]"),
    ("王先生您好", "王先生", "*先生"),
    ("邮箱abc@qq.com", "abc@qq.com", "[邮箱]"),
    ("身份证11010519491231002X", "11010519491231002X", "[身份证]"),
    ("我电话一三八一二三四五六七八", "一三八一二三四五六七八", "[电话]"),
    ("电话：幺三八 幺二三四 五六七八", "五六七八", "[电话]"),
    ("壹叁捌壹贰叁肆伍陆柒捌", "壹叁捌", "[电话]"),
    ("１３８１２３４５６７８", "１２３４", "[电话]"),
    ("座机零五七一 八八八八八八八八", "八八八八", "[电话]"),
    ("加我微信 wxid_abc123", "wxid_abc123", "[微信]"),
    ("微信号：zhang_san88", "zhang_san88", "[微信]"),
    ("vx: abc12345", "abc12345", "[微信]"),
    ("加V zhangsan99", "zhangsan99", "[微信]"),
    ("我的QQ是12345678", "12345678", "[QQ]"),
    ("扣扣：一二三四五六七", "一二三四五六七", "[QQ]"),
    ("qq号 123456", "123456", "[QQ]"),
])
def test_mask_pii_hides_phones_order_ids_addresses_and_names(text, hidden, placeholder):
    masked = mask_pii(text)
    assert hidden not in masked and placeholder in masked


def test_mask_pii_leaves_ordinary_questions_alone():
    for text in ("这条裙子有L码吗", "能便宜点吗 别家更便宜", "怎么还没到 明天就要用啊", "可以用微信支付吗", "三四天能到吗"):
        assert mask_pii(text) == text


# Runs that made a pattern backtrack over the rest of the text from every position (quadratic time):
# the e-mail's local part over a...a, the gaps between a cue and its value over spaces, and neighbours.
BACKTRACK_UNITS = ["a", "1", "a.", "-", "a@", "a@a.", "@a", " ", "1 ", "1-", "一", "１", "汉", "路", "号", "1号", "市区一",
                   "地址 ", "订单号 ", "收件人 ", "QQ ", "微信 ", "vx ", "北京市朝阳区1"]


def _time_ratio(f, short, long, repeats: int = 7) -> float:
    """Best CPU time of `f(long)` over that of `f(short)`, measured alternately (this thread's CPU time: other
    processes on a busy machine do not count)."""
    best = {short: float("inf"), long: float("inf")}
    for _ in range(repeats):
        for arg in (short, long):
            started = time.thread_time()
            f(arg)
            best[arg] = min(best[arg], time.thread_time() - started)
    return best[long] / best[short]


def test_mask_pii_time_grows_linearly_with_the_text():
    """Twice the text takes at most about twice the time (3x allowed for noise), for every repeated unit."""
    slow = {}
    for unit in BACKTRACK_UNITS:
        short, long = unit * (10_000 // len(unit)), unit * (20_000 // len(unit))
        ratio = _time_ratio(mask_pii, short, long)
        if ratio > 3:  # a busy machine can still slow one measurement; quadratic time is slow every time
            ratio = min(ratio, _time_ratio(mask_pii, short, long))
        if ratio > 3:
            slow[unit] = round(ratio, 1)
    assert slow == {}


def test_masked_logging_masks_only_the_text_the_model_read(tiny_bundle, caplog):
    """The log gets the cut text (max_text_chars: its head and tail), so masking a huge message costs no more than
    a short one; the phone number in the kept tail is masked."""
    text = "b" * 30 + "a" * 50_000 + "13812345678"
    with make_client(tiny_bundle, log_masked_text=True, max_text_chars=100, max_body_bytes=100_000) as c, \
            caplog.at_level(logging.INFO, logger="kefu_router.serve.access"):
        assert c.post("/v1/classify", json={"messages": [{"text": text}]}).status_code == 200
        assert c.post("/v1/route", json={"turns": [{"role": "customer", "text": text}]}).status_code == 200
    records = [r for r in caplog.records if r.name == "kefu_router.serve.access"][-2:]
    assert [r.texts_masked for r in records] == [["b" * 25 + "a" * 64 + "[电话]"]] * 2


# --- schemathesis: the service keeps the contract its OpenAPI schema states --------------------------

def test_generated_requests_pass_every_schemathesis_check(tiny_bundle):
    """Valid and invalid requests for every operation (bounded examples, fixed seed), every built-in check on:
    no 5xx, status codes, content types, headers and bodies as documented, schema-valid requests accepted
    (positive_data_acceptance), schema-invalid ones rejected, the API key not ignored."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import CHECKS, load_all_checks
    from schemathesis.generation import GenerationMode

    load_all_checks()
    checks = [check for check in CHECKS.get_all() if callable(check) and not isinstance(check, type)]
    app = create_app(Settings(model=tiny_bundle, max_turns=4, max_messages=4, max_text_chars=50,
                              max_body_bytes=20_000, api_key="k"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        has_body = operation.method.upper() == "POST"  # the others take no input that could be made invalid
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_body else (GenerationMode.POSITIVE,):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def call(case):
                case.call_and_validate(headers={"X-API-Key": "k"}, checks=checks)

            try:
                call()
            except Exception as exc:  # hypothesis has shrunk it to a small failing request
                failures.append(f"{operation.label} {mode.value}: {exc}")
    assert failures == [], "\n\n".join(failures)


def test_the_schema_declares_the_api_key_only_when_one_is_set(tiny_bundle):
    for key, declared in ((None, False), ("k", True)):
        spec = create_app(Settings(model=tiny_bundle, api_key=key)).openapi()
        assert ("securitySchemes" in spec.get("components", {})) is declared
        assert ("security" in spec["paths"]["/v1/route"]["post"]) is declared
