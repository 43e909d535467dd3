"""Quality figures and report, feedback export, and the store's CLI commands (SQLite; figures on hand-made rows)."""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest

pytest.importorskip("sqlalchemy")
from typer.testing import CliRunner  # noqa: E402

from kefu_router.cli import app as cli, parse_age  # noqa: E402
from kefu_router.quality.figures import agreement_by_head, psi, quality_figures, week_of  # noqa: E402
from kefu_router.store import Store  # noqa: E402

MONDAY = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
TRAINING = {"emotion": {"neutral": 70, "angry": 10, "anxious": 10, "satisfied": 10},
            "intent": {i: 10 for i in ("product_inquiry", "price_promotion", "order_payment", "logistics", "after_sales",
                                        "complaint", "chitchat", "other")},
            "customer_type": {"(none)": 50, "impatient": 50}}


def msg(emotion, final=None, *, at=MONDAY, version="v1", flagged=None, traits=()):
    return {"created_at": at, "model_version": version, "emotion": emotion, "intent": "logistics",
            "customer_type": list(traits), "needs_human_review": flagged,
            "final": None if final is None else {"emotion": final, "intent": None, "customer_type": None}}


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift():
    labels = ["a", "b"]
    assert psi({"a": 5, "b": 5}, {"a": 50, "b": 50}, labels) == pytest.approx(0)
    assert psi({"a": 9, "b": 1}, {"a": 5, "b": 5}, labels) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5), rel=1e-6)
    assert psi({"a": 10}, {"a": 5, "b": 5}, labels) > 1  # an empty bin is floored, not infinite


def test_agreement_review_flag_and_drift_by_version_and_week():
    rows = [
        msg("angry", "angry", flagged=True), msg("angry", "neutral", flagged=True),  # flagged: one corrected
        msg("neutral", "anxious", flagged=False), msg("neutral", "neutral", flagged=False),
        msg("neutral", at=MONDAY + timedelta(days=7)),  # not reviewed, next week
        msg("satisfied", "satisfied", version="v2"),
    ]
    decisions = [{"created_at": MONDAY, "model_version": "v1", "needs_human_review": flag, "playbook": "general",
                  "final_playbook": final} for flag, final in ((True, "human_review"), (False, None), (False, "general"))]
    f = quality_figures(rows, decisions, since=MONDAY, until=MONDAY + timedelta(days=14), training=TRAINING)
    v1 = f["versions"]["v1"]
    assert f["model_versions"] == ["v1", "v2"] and f["versions"]["v2"]["agreement"]["emotion"]["agreement"] == 1.0
    assert v1["agreement"]["emotion"] == {"n": 4, "agreed": 2, "agreement": 0.5, "weekly": [
        {"week": "2026-11-02", "n": 4, "agreed": 2, "agreement": 0.5}, {"week": "2026-11-09", "n": 0, "agreed": 0, "agreement": None}]}
    assert v1["agreement"]["intent"]["n"] == 0  # a head the agents left out is not counted
    assert v1["confusion"]["emotion"]["matrix"][1] == [1, 1, 0, 0]  # model angry -> final neutral, angry
    flag = v1["review_flag"]
    assert (flag["rate"], flag["precision"], flag["recall"]) == (round(1 / 3, 4), 0.5, 0.5)
    assert v1["playbook"] == {"n": 2, "agreed": 1, "agreement": 0.5}
    week1 = v1["drift"]["emotion"]["weekly"][0]
    assert week1["distribution"]["angry"] == 0.5 and week1["psi"] > 0.2 and week1["warning"]
    assert any("emotion drift in the week of 2026-11-02" in w for w in f["warnings"])
    no_reference = quality_figures(rows, decisions, since=MONDAY, until=MONDAY + timedelta(days=14), training=None)
    assert no_reference["versions"]["v1"]["drift"]["emotion"]["weekly"][0]["psi"] is None
    assert "drift not computed" in no_reference["warnings"][0]


def test_week_and_age_parsing():
    assert week_of(datetime(2026, 11, 8, 23, tzinfo=timezone.utc)) == "2026-11-02"
    assert parse_age("90d") == timedelta(days=90) and parse_age("12h") == timedelta(hours=12)
    for bad in ("90", "0d", "d", "-1d"):
        with pytest.raises(ValueError):
            parse_age(bad)


@pytest.fixture(scope="module")
def filled_store(tiny_bundle, tmp_path_factory):
    """A SQLite store filled through the API: routed conversations and agents' feedback, one with stored text."""
    from fastapi.testclient import TestClient

    from kefu_router.serve.app import create_app
    from kefu_router.serve.settings import Settings

    db = tmp_path_factory.mktemp("store") / "kefu.db"
    chats = []
    turns = [{"role": "customer", "text": "我的快递到哪了"}, {"role": "agent", "text": "亲 在路上了"},
             {"role": "customer", "text": "怎么还没到 明天就要用啊"}]
    with TestClient(create_app(Settings(model=tiny_bundle, db=str(db), store_text=True, text_hmac_key="k",
                                        log_interval_ms=20))) as c:
        for n, cid in enumerate(["fresh-1", "fresh-2", "p2-0095"]):  # p2-0095 is a frozen test conversation
            answer = c.post("/v1/route", json={"conversation_id": cid, "turns": turns}).json()
            chats += [{"conversation_id": cid, "turn": i, **t} for i, t in enumerate(turns)]
            for p in answer["predictions"]:
                assert c.post("/v1/feedback", json={"prediction_id": p["prediction_id"], "emotion": "anxious",
                                                    "agent_id": "a", "idempotency_key": f"{cid}-{p['turn']}"}).status_code == 201
        quality = c.get("/v1/quality").json()
        c.app.state.service.prediction_log.flush(5)
    export = tmp_path_factory.mktemp("export") / "chats.jsonl"
    export.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chats), encoding="utf-8")
    return db, export, quality


def test_the_quality_endpoint_gives_the_report_figures(filled_store):
    _, _, quality = filled_store
    figures = quality["versions"]["tiny-test"]
    assert figures["messages"] == 6 and figures["reviewed"] == 6
    assert figures["agreement"]["emotion"]["n"] == 6 and figures["agreement"]["intent"]["n"] == 0
    assert quality["training_distribution"]["available"]  # export wrote the tiny bundle's label counts


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.external = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        if tag in ("script", "link") or (tag == "img" and not attrs["src"].startswith("data:")):
            self.external.append(tag)


def test_quality_report_is_one_html_file_with_its_pngs_inside(filled_store, tiny_bundle, tmp_path):
    db, _, _ = filled_store
    out = tmp_path / "quality.html"
    result = CliRunner().invoke(cli, ["quality", "report", "--db", str(db), "--since", "28d", "-m", str(tiny_bundle),
                                      "-o", str(out), "--json", str(tmp_path / "q.json")])
    assert result.exit_code == 0, result.output
    assert "tiny-test: 6 messages, 6 reviewed" in result.output
    page = Images()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.external == [] and len(page.sources) == 4  # agreement, confusion (one version), review flag, drift
    for src in page.sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "q.json").read_text())["model_versions"] == ["tiny-test"]


def test_feedback_export_writes_corpus_rows_and_sets_aside_frozen_conversations(filled_store, tmp_path):
    from kefu_router.training.data import load_examples

    db, chats, _ = filled_store
    out = tmp_path / "corrections.parquet"
    result = CliRunner().invoke(cli, ["feedback", "export", "--db", str(db), "--since", "1d", "-o", str(out),
                                      "--chat-export", str(chats)], env={"KEFU_ROUTER_TEXT_HMAC_KEY": "k"})
    assert result.exit_code == 0, result.output
    assert "4 corrections become train rows; 2 set aside" in result.output
    assert "p2-0095 is in the frozen test split" in result.output
    examples, report = load_examples(out)
    # fresh-1 and fresh-2 are the same chat: load_examples keeps one copy of each message
    assert report.skipped == [] and report.rows == 4 and report.duplicates_dropped == 2
    second = next(ex for ex in examples if ex.id == "fresh-1-02")
    assert second.context == (("customer", "我的快递到哪了"), ("agent", "亲 在路上了")) and second.emotion == "anxious"
    # heads no agent gave stay unlabelled (masked in training), never the model's own label
    assert second.intent is None and second.customer_type is None


def test_feedback_export_merges_heads_across_feedback_rows_and_leaves_the_rest_unlabelled(tiny_bundle, tmp_path):
    from fastapi.testclient import TestClient

    from kefu_router.serve.app import create_app
    from kefu_router.serve.settings import Settings
    from kefu_router.training.data import label_arrays, load_examples

    db = tmp_path / "m.db"
    with TestClient(create_app(Settings(model=tiny_bundle, db=str(db), store_text=True, log_interval_ms=20))) as c:
        answer = c.post("/v1/route", json={"conversation_id": "m-1", "turns": [{"role": "customer", "text": "我的快递到哪了"}]}).json()
        prediction = answer["predictions"][0]["prediction_id"]
        c.app.state.service.prediction_log.flush(5)
        for key, labels in (("k1", {"intent": "complaint"}), ("k2", {"emotion": "angry"})):
            assert c.post("/v1/feedback", json={"prediction_id": prediction, "agent_id": "a", "idempotency_key": key,
                                                **labels}).status_code == 201
    out = tmp_path / "m.jsonl"
    result = CliRunner().invoke(cli, ["feedback", "export", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text(encoding="utf-8"))
    assert (row["emotion"], row["intent"], row["customer_type"]) == ("angry", "complaint", None)
    examples, _ = load_examples(out)
    assert label_arrays(examples)["customer_type_mask"].tolist() == [0.0]


def test_feedback_export_refuses_a_chat_export_that_is_not_the_text_the_model_read(filled_store, tmp_path):
    db, chats, _ = filled_store
    edited = tmp_path / "edited.jsonl"
    edited.write_text(chats.read_text(encoding="utf-8").replace("我的快递到哪了", "我的快递呢"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["feedback", "export", "--db", str(db), "-o", str(tmp_path / "c.jsonl"),
                                      "--chat-export", str(edited)], env={"KEFU_ROUTER_TEXT_HMAC_KEY": "k"})
    assert result.exit_code == 0, result.output
    assert result.output.count("HMAC differs") == 3  # turn 0 of each conversation


def test_feedback_export_from_the_logs_masked_text(filled_store, tmp_path):
    db, _, _ = filled_store
    out = tmp_path / "c.jsonl"
    result = CliRunner().invoke(cli, ["feedback", "export", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and {r["source"] for r in rows} == {"feedback"}
    assert [c["role"] for c in next(r for r in rows if r["turn"] == 2)["context"]] == ["customer"]


def test_db_prune_deletes_what_is_older_and_store_commands_fail_clearly(tmp_path):
    db = tmp_path / "p.db"
    store = Store(db)
    store.migrate()
    store.insert_predictions([{"id": "a" * 32, "kind": "message", "created_at": datetime.now(timezone.utc) - timedelta(days=91),
                               "model_version": "v"}, {"id": "b" * 32, "kind": "message",
                                                       "created_at": datetime.now(timezone.utc), "model_version": "v"}])
    dry = CliRunner().invoke(cli, ["db", "prune", "--older-than", "90d", "--dry-run", "--db", str(db)])
    assert dry.exit_code == 0 and json.loads(dry.output)["would_delete"] == {"predictions": 1, "feedback": 0}
    assert store.counts()["predictions"] == 2  # a dry run deletes nothing
    for age, says in (("6m", "ambiguous"), ("99999999d", "year 1"), ("9999999999d", "too long"), ("1000000d", "year 1")):
        refused = CliRunner().invoke(cli, ["db", "prune", "--older-than", age, "--db", str(db)])
        assert refused.exit_code == 1 and says in refused.output and len(refused.output.splitlines()) == 1, refused.output
    assert store.counts()["predictions"] == 2
    result = CliRunner().invoke(cli, ["db", "prune", "--older-than", "90d", "--db", str(db)])
    assert result.exit_code == 0 and json.loads(result.output)["deleted"] == {"predictions": 1, "feedback": 0}
    assert store.counts()["predictions"] == 1
    bad = CliRunner().invoke(cli, ["db", "prune", "--older-than", "soon", "--db", str(db)])
    assert bad.exit_code == 1 and "not an age" in bad.output
    for command in (["db", "migrate"], ["db", "prune", "--older-than", "90d"], ["quality", "report", "-o", str(tmp_path / "q.html")],
                    ["feedback", "export", "-o", str(tmp_path / "f.jsonl")]):
        for where in ("/proc/nope/store.db", str(tmp_path / "garbage.db")):
            (tmp_path / "garbage.db").write_text("garbage\n")
            result = CliRunner().invoke(cli, [*command, "--db", where])
            assert result.exit_code == 1 and "Traceback" not in result.output and len(result.output.splitlines()) == 1, (
                command, where, result.output)
    down = CliRunner().invoke(cli, ["db", "migrate", "--db", "postgresql://kefu@127.0.0.1:1/x"])
    assert down.exit_code == 1 and down.output.startswith("error: cannot open the store") and "Traceback" not in down.output
