"""Tagging input that is not what it seems (issue 13, items 5 and 6): GBK/GB18030 files, a high reject
rate, and a bad order value in a conversation's first row."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from kefu_router.cli import app
from kefu_router.tagging import ColumnNames, tag_file
from kefu_router.tagging_io import TaggingError
from tests.conftest import MINI_DATA

ROWS = [json.loads(line) for line in MINI_DATA.read_text(encoding="utf-8").splitlines()]
FIELDS = ["id", "conversation_id", "turn", "role", "text"]
CONV = ColumnNames("text", "conversation_id", "role", "turn")


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    from kefu_router.predictor import Predictor

    return Predictor(tiny_bundle)


def csv_bytes(rows: list[dict], encoding: str) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode(encoding)


def jsonl_bytes(rows: list[dict], encoding: str) -> bytes:
    return "".join(json.dumps({k: r[k] for k in FIELDS}, ensure_ascii=False) + "\n" for r in rows).encode(encoding)


@pytest.mark.parametrize("name, encode, encoding", [
    ("in.csv", csv_bytes, "gbk"), ("in.csv", csv_bytes, "gb18030"), ("in.jsonl", jsonl_bytes, "gbk"), ("in.csv", csv_bytes, "big5"),
])
def test_a_gbk_or_big5_file_is_detected_and_every_row_tagged(tmp_path, predictor, name, encode, encoding):
    rows = [r for r in ROWS if r["text"].encode(encoding, errors="replace").decode(encoding) == r["text"]]
    source = tmp_path / name
    source.write_bytes(encode(rows, encoding))
    summary = tag_file(source, tmp_path / "out.jsonl", columns=CONV, predictor=predictor)
    assert summary.rejected == 0 and summary.rows == len(rows)
    assert summary.encoding in ({"gb18030"} if encoding.startswith("gb") else {"big5"})
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in out] == [r["text"] for r in rows]  # decoded right, written as UTF-8


def test_encoding_option_reads_a_file_too_small_to_detect(tmp_path, tiny_bundle):
    source = tmp_path / "in.csv"
    source.write_bytes("text\n在吗\n".encode("gbk"))
    args = ["tag", str(source), "-o", str(tmp_path / "out.jsonl"), "-m", str(tiny_bundle), "--encoding", "GBK"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["encoding"] == "gbk"
    assert json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))["text"] == "在吗"


@pytest.mark.parametrize("encoding, message", [("utf-16", "is not ASCII-compatible"), ("klingon", "unknown encoding 'klingon'")])
def test_an_unusable_encoding_is_one_clear_line(tmp_path, tiny_bundle, encoding, message):
    source = tmp_path / "in.csv"
    source.write_text("text\n在吗\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["tag", str(source), "-o", str(tmp_path / "o.jsonl"), "-m", str(tiny_bundle), "--encoding", encoding])
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_more_rejects_than_max_reject_rate_exit_nonzero_with_a_summary_and_lose_nothing(tmp_path, tiny_bundle):
    source = tmp_path / "in.csv"  # a GBK file read as UTF-8: the Chinese rows are rejected, the ASCII ones tagged
    source.write_bytes(csv_bytes(ROWS, "gbk") + b"99,c99,0,customer,ok\n")
    out, rejects = tmp_path / "out.jsonl", tmp_path / "out.rejects.jsonl"
    args = ["tag", str(source), "-o", str(out), "-m", str(tiny_bundle), "--encoding", "utf-8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"{len(ROWS)} of {len(ROWS) + 1} rows rejected" in error[0]
    assert "undecodable" in error[0] and "--max-reject-rate 0.05" in error[0] and str(rejects) in error[0]
    assert json.loads(result.stdout.splitlines()[-1])["rejected"] == len(ROWS)
    assert len(out.read_text().splitlines()) + len(rejects.read_text().splitlines()) == len(ROWS) + 1
    result = CliRunner().invoke(app, [*args, "--overwrite", "--max-reject-rate", "1"])
    assert result.exit_code == 0, result.output


def test_bad_encoding_is_refused_before_anything_is_written(tmp_path, predictor):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "在吗"}\n', encoding="utf-8")
    with pytest.raises(TaggingError, match="unknown encoding"):
        tag_file(source, tmp_path / "out.jsonl", predictor=predictor, encoding="nope")
    assert not (tmp_path / "out.jsonl.parts").exists()


# ---------- a bad order value rejects its own row only (item 6) ----------

@pytest.mark.parametrize("bad", ["abc", "", None, True, [1], "nan", "2024-13-45"])
def test_a_bad_order_value_in_a_conversations_first_row_rejects_only_that_row(tmp_path, predictor, bad):
    rows = [{"conversation_id": "c1", "turn": bad, "role": "customer", "text": "在吗"},
            {"conversation_id": "c1", "turn": 1, "role": "customer", "text": "快递到哪了"},
            {"conversation_id": "c1", "turn": "2", "role": "agent", "text": "亲 已发货"},
            {"conversation_id": "c1", "turn": 3.0, "role": "customer", "text": "好的"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    summary = tag_file(source, tmp_path / "out.jsonl", columns=CONV, predictor=predictor)
    tagged = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    missing = bad in ("", None)  # a missing order value is not an error: the row keeps its place in the file
    assert [r["tag_line"] for r in tagged] == ([1, 2, 3, 4] if missing else [2, 3, 4])
    assert summary.rejected_by_reason == ({} if missing else {"bad_order": 1})


def test_order_values_of_different_kinds_never_reject_each_other(tmp_path, predictor):
    rows = [{"c": "c1", "n": "2024-05-01T10:00:00+08:00", "text": "在吗"}, {"c": "c1", "n": 7, "text": "快递到哪了"},
            {"c": "c1", "n": "2024-05-01T01:00:00", "text": "好的"}, {"c": "c2", "n": "10", "text": "在吗"},
            {"c": "c2", "n": "9.5", "text": "还在吗"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    summary = tag_file(source, tmp_path / "out.jsonl", columns=ColumnNames("text", "c", None, "n"), predictor=predictor)
    assert summary.rejected == 0 and summary.tagged == 5
    # 7 sorts before date/times; 01:00 before 10:00+08:00 (02:00 UTC); 9.5 before 10 (numbers, not text)
    assert summary.out_of_order == 3
