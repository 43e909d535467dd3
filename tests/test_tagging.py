"""Batch tagging: formats, context as in training (across chunks), roles, rejects, privacy, resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kefu_router.labels import CUSTOMER_TYPE, HEADS
from kefu_router.predictor import format_prediction
from kefu_router.routing import Router
from kefu_router.tagging import LINE_COLUMN, TAG_COLUMNS, ColumnNames, Tagger, TaggingError, tag_file
from kefu_router.text import Message
from tests.conftest import MINI_DATA

CONV = ColumnNames("text", "conversation_id", "role", "turn")
MINI_ROWS = [json.loads(line) for line in MINI_DATA.read_text(encoding="utf-8").splitlines()]


def interleaved(rows: list[dict]) -> list[dict]:
    """Round-robin over conversations: each keeps its turn order, but they are mixed in the file."""
    by_conv: dict[str, list[dict]] = {}
    for row in rows:
        by_conv.setdefault(row["conversation_id"], []).append(row)
    queues, out = list(by_conv.values()), []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def write_rows(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows({k: (";".join(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    return path


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    return pq.read_table(path).to_pylist()


class RecordingPredictor:
    """Delegates to the real predictor and keeps every message it was asked about."""

    def __init__(self, inner):
        self.inner, self.bundle, self.version, self.seen = inner, inner.bundle, inner.version, []

    def predict(self, messages):
        self.seen.extend(messages)
        return self.inner.predict(messages)


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    from kefu_router.predictor import Predictor

    return Predictor(tiny_bundle)


class ScriptedPredictor:
    """No model: each text's prediction is drawn from its hash, so emotions, intents and traits vary (anger included)."""

    version = "scripted"
    bundle = SimpleNamespace(max_context_turns=6)

    def predict(self, messages):
        out = []
        for m in messages:
            rng = np.random.default_rng(zlib.crc32(m.text.encode("utf-8")))
            probs = {h.name: rng.random(h.size) if h.multi_label else rng.dirichlet(np.full(h.size, 0.3)) for h in HEADS}
            out.append(format_prediction(probs, np.full(CUSTOMER_TYPE.size, 0.8)))
        return out


def long_chats(rng: random.Random) -> list[dict]:
    """Interleaved conversations of 1 to 250 customer turns with agent turns and fillers."""
    rows = []
    for c, n in enumerate([1, 2, 5, 12, 40, 250]):
        turn = 0
        for k in range(n):
            text = rng.choice(["好的", "对", "在吗", "嗯嗯"]) if rng.random() < 0.3 else f"第{rng.randrange(60)}个问题"
            rows.append({"conversation_id": f"c{c}", "turn": turn, "role": "customer", "text": text})
            turn += 1
            if rng.random() < 0.4:
                rows.append({"conversation_id": f"c{c}", "turn": turn, "role": "agent", "text": "亲 稍等"})
                turn += 1
    return interleaved(rows)


def test_each_turns_playbook_is_the_route_of_its_conversation_so_far_across_chunks_and_resumes():
    router, scripted = Router(), ScriptedPredictor()
    rows = long_chats(random.Random(3))
    tagger, results = Tagger(scripted, router, CONV), []
    for start in range(0, len(rows), 7):
        results += tagger.tag(rows[start : start + 7])
        resumed = Tagger(scripted, router, CONV)
        resumed.restore(tagger.state())  # as --resume does after a kill between chunks
        tagger = resumed
    history: dict[str, list[dict]] = {}
    escalated = 0
    for row, tags in zip(rows, results):
        if row["role"] == "agent":
            assert tags["tag_playbook"] is None
            continue
        pred = scripted.predict([Message(row["text"])])[0]
        history.setdefault(row["conversation_id"], []).append({**pred, "text": row["text"]})
        want = router.route(history[row["conversation_id"]])  # every customer turn so far, 250 of them at most
        assert (tags["tag_playbook"], tags["tag_needs_review"]) == (want.playbook.id, want.needs_human_review)
        escalated += want.playbook.id == "angry_escalation"
    assert escalated and len(history["c5"]) == 250


def test_a_5000_turn_conversation_is_tagged_in_linear_routing_work(monkeypatch):
    """Each prediction is read by the router once and the carried state does not grow: no re-routing of the history."""
    from kefu_router import routing

    reads = []
    real = routing._parse
    monkeypatch.setattr(routing, "_parse", lambda p, i: reads.append(i) or real(p, i))
    monkeypatch.setattr(Router, "route", lambda *a: pytest.fail("the tagger must not route the whole history again"))
    rows = [{"conversation_id": "c", "turn": i, "role": "customer", "text": "好的" if i % 4 == 3 else f"第{i % 97:02d}个问题"} for i in range(5000)]
    tagger, sizes = Tagger(ScriptedPredictor(), Router(), CONV), []
    for start in range(0, 5000, 500):
        assert all(r["tag_playbook"] for r in tagger.tag(rows[start : start + 500]))
        sizes.append(len(tagger.state()))
    assert reads == list(range(5000))
    assert max(sizes) <= sizes[0] + 64


def test_context_is_built_as_in_training_across_chunk_boundaries(tmp_path, predictor):
    """Interleaved conversations, chunks of 3 rows: every customer turn sees the context training builds."""
    from kefu_router.training.data import load_examples

    source = write_rows(tmp_path / "chats.jsonl", interleaved(MINI_ROWS))
    recorder = RecordingPredictor(predictor)
    summary = tag_file(source, tmp_path / "out.jsonl", columns=CONV, predictor=recorder, chunk_size=3)
    examples, _ = load_examples(source)
    max_turns = predictor.bundle.max_context_turns
    assert [(m.text, m.context) for m in recorder.seen] == [(e.text, e.context[-max_turns:]) for e in examples]
    assert sum(len(m.context) > 1 for m in recorder.seen) >= 10  # the check above is not vacuous
    assert summary.tagged == len(examples) and summary.context_only == 13 and summary.rejected == 0


def test_role_col_tags_customer_turns_only_and_keeps_agent_turns_as_context(tmp_path, predictor):
    source = write_rows(tmp_path / "chats.jsonl", MINI_ROWS)
    tag_file(source, tmp_path / "out.jsonl", columns=CONV, predictor=predictor)
    out = read_rows(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [r["id"] for r in MINI_ROWS]
    for row in out:
        tagged = row["tag_emotion"] is not None
        assert tagged == (row["role"] == "customer"), row["id"]
        assert (row["tag_playbook"] is not None) == tagged
    recorder = RecordingPredictor(predictor)
    tag_file(source, tmp_path / "all.jsonl", columns=ColumnNames("text", "conversation_id"), predictor=recorder)
    assert len(recorder.seen) == len(MINI_ROWS)  # without --role-col every row is a message to tag
    assert ("agent", "在的亲") not in recorder.seen[0].context and ("customer", "在的亲") in recorder.seen[2].context


def test_evicted_conversation_starts_afresh(tmp_path, predictor):
    """With room for one open conversation, only a run of rows of the same conversation shares context."""
    rows = interleaved(MINI_ROWS)
    recorder = RecordingPredictor(predictor)
    tag_file(write_rows(tmp_path / "chats.jsonl", rows), tmp_path / "out.jsonl", columns=CONV, predictor=recorder,
             chunk_size=1, max_open_conversations=1)
    follows_own_turn = [i > 0 and rows[i - 1]["conversation_id"] == r["conversation_id"] for i, r in enumerate(rows) if r["role"] == "customer"]
    assert [bool(m.context) for m in recorder.seen] == follows_own_turn
    assert any(follows_own_turn) and not all(follows_own_turn)


def test_out_of_order_turn_gets_the_turns_before_it_as_context(tmp_path, predictor):
    rows = [
        {"c": "x", "n": 1, "text": "在吗"},
        {"c": "x", "n": 3, "text": "快递到哪了"},
        {"c": "x", "n": 2, "text": "我想问下物流"},
    ]
    recorder = RecordingPredictor(predictor)
    summary = tag_file(write_rows(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", columns=ColumnNames("text", "c", None, "n"), predictor=recorder)
    assert recorder.seen[2].context == (("customer", "在吗"),)
    assert summary.out_of_order == 1


@pytest.mark.parametrize("src,dst", [(".jsonl", ".jsonl"), (".csv", ".csv"), (".parquet", ".parquet"), (".jsonl", ".parquet"), (".parquet", ".csv"), (".csv", ".jsonl")])
def test_formats_round_trip_every_row_with_the_same_tags(tmp_path, predictor, src, dst):
    rows = [{k: v for k, v in r.items() if k in ("id", "conversation_id", "turn", "role", "text")} for r in MINI_ROWS]
    reference = tmp_path / "reference.jsonl"
    tag_file(write_rows(tmp_path / "ref.jsonl", rows), reference, columns=CONV, predictor=predictor, chunk_size=10)
    out = tmp_path / f"out{dst}"
    tag_file(write_rows(tmp_path / f"in{src}", rows), out, columns=CONV, predictor=predictor, chunk_size=10)
    got, want = read_rows(out), read_rows(reference)
    assert list(got[0]) == ["id", "conversation_id", "turn", "role", "text", LINE_COLUMN, *TAG_COLUMNS]
    assert [str(r["id"]) for r in got] == [r["id"] for r in rows]
    for g, w in zip(got, want):
        assert str(g["tag_playbook"] or "") == str(w["tag_playbook"] or "")
        assert str(g["tag_score_emotion_angry"] or "") == str(w["tag_score_emotion_angry"] or "")
        assert str(g["text"]) == w["text"]
    if dst == ".parquet":
        schema = pq.read_schema(out)
        assert schema.field("tag_customer_type").type == pa.list_(pa.string()) and schema.field("tag_needs_review").type == pa.bool_()


def test_json_rows_with_different_fields_share_one_csv_header(tmp_path, predictor):
    rows = [{"id": 1, "text": "在吗"}, {"id": 2, "text": "发货了吗", "shop": "A店"}, {"text": "好的", "tags": ["x", "y"]}]
    tag_file(write_rows(tmp_path / "in.jsonl", rows), tmp_path / "out.csv", predictor=predictor, chunk_size=1)
    out = read_rows(tmp_path / "out.csv")
    assert list(out[0])[:4] == ["id", "text", "shop", "tags"]
    assert [(r["id"], r["shop"], r["tags"]) for r in out] == [("1", "", ""), ("2", "A店", ""), ("", "", "x;y")]


def test_rejects_have_line_and_reason_and_nothing_is_dropped(tmp_path, predictor):
    lines = [
        json.dumps({"id": "ok1", "text": "在吗"}, ensure_ascii=False),
        json.dumps({"id": "empty", "text": "  "}),
        json.dumps({"id": "none"}),
        json.dumps({"id": "int", "text": 42}),
        '{"id": "broken", "text": "半截',
        "[1, 2]",
        json.dumps({"id": "role", "text": "你好", "role": "bot"}, ensure_ascii=False),
        "",
        json.dumps({"id": "ok2", "text": "发货了吗"}, ensure_ascii=False),
    ]
    data = "\n".join(lines).encode() + b'\n{"id": "bytes", "text": "\xff\xfe"}\n'
    source = tmp_path / "in.jsonl"
    source.write_bytes(data)
    summary = tag_file(source, tmp_path / "out.jsonl", columns=ColumnNames("text", None, "role"), predictor=predictor)
    rejects = read_rows(tmp_path / "out.rejects.jsonl")
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "no_text"), (3, "no_text"), (4, "not_text"), (5, "bad_json"), (6, "not_object"), (7, "bad_role"), (10, "undecodable")
    ]
    assert rejects[2]["row"] == {"id": "int", "text": 42} and "半截" in rejects[3]["raw"]
    # json's own wording ends in "at" ("Unterminated string starting at"): no "at at column" (issue 13, item 10)
    assert rejects[3]["message"] == "invalid JSON (Invalid control character at: column 29)"
    assert summary.rejected_by_reason == {"bad_json": 1, "bad_role": 1, "no_text": 2, "not_object": 1, "not_text": 1, "undecodable": 1}
    out = read_rows(tmp_path / "out.jsonl")
    assert [r[LINE_COLUMN] for r in out] == [1, 9]
    assert summary.rows == len(out) + len(rejects) == 9


def test_csv_rejects_undecodable_cells_and_malformed_rows_at_their_line(tmp_path, predictor):
    source = tmp_path / "in.csv"
    source.write_bytes(b'id,text\n1,\xe5\x9c\xa8\xe5\x90\x97\n2,"two\nlines"\n3,bad,extra\n4,\xff\n5,\n6,ok\n')
    summary = tag_file(source, tmp_path / "out.csv", predictor=predictor, chunk_size=2)
    rejects = read_rows(tmp_path / "out.rejects.jsonl")
    assert [(r["line"], r["reason"]) for r in rejects] == [(4, "bad_csv_row"), (5, "undecodable"), (6, "no_text")]
    assert [r["id"] for r in read_rows(tmp_path / "out.csv")] == ["1", "2", "6"]
    assert summary.rows == 6 and summary.tagged == 3


def test_no_text_keeps_raw_text_out_of_output_and_rejects(tmp_path, predictor):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "我的手机号13812345678"}\n{"id": 2, "text": 5}\n{"id": 3, "text": "坏掉\n', encoding="utf-8")
    tag_file(source, tmp_path / "out.parquet", predictor=predictor, no_text=True)
    out = read_rows(tmp_path / "out.parquet")
    assert "text" not in out[0] and out[0]["tag_emotion"]
    written = (tmp_path / "out.rejects.jsonl").read_text(encoding="utf-8")
    assert not any("13812345678" in str(v) for row in out for v in row.values())
    assert '"text"' not in written and "坏掉" not in written and written.count("\n") == 2


def test_bad_options_are_clear_errors_before_anything_is_written(tmp_path, predictor):
    source = write_rows(tmp_path / "in.csv", [{"msg": "在吗"}])
    with pytest.raises(TaggingError, match="no column 'text'"):
        tag_file(source, tmp_path / "out.jsonl", predictor=predictor)
    with pytest.raises(TaggingError, match="unsupported file type"):
        tag_file(source, tmp_path / "out.txt", predictor=predictor)
    tag_file(source, tmp_path / "out.jsonl", columns=ColumnNames("msg"), predictor=predictor)
    with pytest.raises(TaggingError, match="exists; pass --overwrite"):
        tag_file(source, tmp_path / "out.jsonl", columns=ColumnNames("msg"), predictor=predictor)
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_cli_tag_prints_summary_and_reports_errors_without_traceback(tmp_path, tiny_bundle):
    from typer.testing import CliRunner

    from kefu_router.cli import app

    source = write_rows(tmp_path / "in.jsonl", MINI_ROWS)
    args = ["tag", str(source), "-o", str(tmp_path / "out.csv"), "-m", str(tiny_bundle), "--conversation-col", "conversation_id", "--role-col", "role", "--order-col", "turn", "--chunk-size", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["tagged"] == 36
    result = CliRunner().invoke(app, ["tag", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "y.jsonl"), "-m", str(tiny_bundle)])
    assert result.exit_code == 1 and "error: input file not found" in result.output and "Traceback" not in result.output


# ---------- resume ----------

SLOW_RUN = """
import sys, time
from kefu_router.predictor import Predictor
real = Predictor.predict
Predictor.predict = lambda self, messages: (time.sleep(0.15), real(self, messages))[1]
from kefu_router.cli import app
app(sys.argv[1:])
"""


def many_rows(copies: int) -> list[dict]:
    rows = []
    for k in range(copies):
        rows += [{**r, "id": f"{r['id']}#{k}", "conversation_id": f"{r['conversation_id']}#{k}"} for r in MINI_ROWS]
    rows = interleaved(rows)
    rows[17] = {**rows[17], "text": ""}  # a reject, to count across the resume
    return rows


def assert_each_input_line_once(out: Path, rejects: Path, n_rows: int, first_line: int = 1) -> None:
    lines = [int(r[LINE_COLUMN]) for r in read_rows(out)] + [r["line"] for r in read_rows(rejects)]
    assert sorted(lines) == list(range(first_line, first_line + n_rows))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_resume_after_kill_writes_every_row_exactly_once(tmp_path, tiny_bundle, predictor, suffix):
    rows = many_rows(8)
    source = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / f"out{suffix}"
    args = ["tag", str(source), "-o", str(out), "-m", str(tiny_bundle), "--conversation-col", "conversation_id",
            "--role-col", "role", "--order-col", "turn", "--chunk-size", "10"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = tmp_path / f"out{suffix}.parts" / "manifest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text())["chunks_done"] >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.loads(manifest.read_text())["chunks_done"]
    assert 3 <= done < len(rows) / 10 and not out.exists()

    summary = tag_file(source, out, columns=CONV, predictor=predictor, chunk_size=10, resume=True)
    assert summary.resumed_at_row == done * 10 and summary.rows == len(rows) and summary.rejected == 1
    assert_each_input_line_once(out, tmp_path / "out.rejects.jsonl", len(rows))
    reference = tmp_path / f"reference{suffix}"
    tag_file(source, reference, columns=CONV, predictor=predictor, chunk_size=10)
    assert read_rows(out) == read_rows(reference)  # same tags and routes as a run never interrupted
    assert not (tmp_path / f"out{suffix}.parts").exists()


def test_crash_between_part_write_and_commit_is_redone_not_duplicated(tmp_path, predictor, monkeypatch):
    import kefu_router.tagging_parts as parts

    rows = many_rows(3)
    source = write_rows(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    real_commit = parts.commit

    def crash_on_fourth(work, manifest):
        if manifest["chunks_done"] == 4:
            raise KeyboardInterrupt("power cut")
        real_commit(work, manifest)

    monkeypatch.setattr(parts, "commit", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        tag_file(source, out, columns=CONV, predictor=predictor, chunk_size=9)
    assert (tmp_path / "out.csv.parts" / "part-000004.csv").exists()  # written but never committed
    monkeypatch.setattr(parts, "commit", real_commit)
    with pytest.raises(TaggingError, match="pass --resume"):
        tag_file(source, out, columns=CONV, predictor=predictor, chunk_size=9)
    with pytest.raises(TaggingError, match="columns changed"):
        tag_file(source, out, columns=ColumnNames("text", "conversation_id"), predictor=predictor, resume=True)
    summary = tag_file(source, out, columns=CONV, predictor=predictor, chunk_size=9, resume=True)
    assert summary.resumed_at_row == 27
    assert_each_input_line_once(out, tmp_path / "out.rejects.jsonl", len(rows), first_line=2)  # CSV line 1 is the header
    with pytest.raises(TaggingError, match="already complete"):
        tag_file(source, out, columns=CONV, predictor=predictor, resume=True)
