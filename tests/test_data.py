"""Loading labelled data: formats, validation with file:line reasons, context, dedup, leak-free splits."""

from __future__ import annotations

import json

import pytest

from kefu_router.training.data import DataError, deduplicate, load_examples, split_examples
from tests.conftest import MINI_DATA

pytest.importorskip("datasets")


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


GOOD = {"id": "a", "text": "在吗", "emotion": "neutral", "intent": "chitchat", "customer_type": []}


def test_mini_fixture_loads_with_context_from_agent_turns():
    examples, report = load_examples(MINI_DATA)
    assert report.examples == len(examples) == 36 and not report.skipped
    ex = next(e for e in examples if e.text == "好的 谢谢亲 服务真好")
    assert ex.context[-1] == ("agent", "亲是纯棉的哦") and ex.context[0] == ("customer", "在吗")
    assert ex.customer_type == ("quality_sensitive",)


@pytest.mark.parametrize(
    "bad,reason",
    [
        ({**GOOD, "emotion": "furious"}, "unknown emotion label 'furious'"),
        ({**GOOD, "text": ""}, "missing text"),
        ({**GOOD, "text": 42}, "text must be a string"),
        ({**GOOD, "customer_type": ["vip"]}, "unknown customer_type trait"),
        ({**GOOD, "role": "bot"}, "unknown role"),
        ('{"text": "broken', "invalid JSON"),
        ("[1, 2]", "row must be an object"),
    ],
)
def test_bad_row_fails_with_file_line_and_reason(tmp_path, bad, reason):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, bad])
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert f"{path}:2:" in str(err.value) and reason in str(err.value)


def test_skip_bad_rows_counts_what_it_skipped(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "b", "intent": "x"}, {**GOOD, "id": "c", "text": "人呢"}])
    examples, report = load_examples(path, skip_bad=True)
    assert [e.id for e in examples] == ["a", "c"]
    assert len(report.skipped) == 1 and "d.jsonl:2" in report.skipped[0]
    assert "1 bad rows skipped" in report.summary()


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD, ensure_ascii=False).encode("gbk") + b"\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_examples(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(tmp_path / "d.txt")


def test_csv_and_parquet_load_like_jsonl(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = [json.loads(l) for l in MINI_DATA.read_text(encoding="utf-8").splitlines()]
    df = pd.DataFrame(rows)
    df["customer_type"] = df["customer_type"].map(lambda v: ";".join(v) if isinstance(v, list) else "")
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    ref, _ = load_examples(MINI_DATA)
    for name in ("d.csv", "d.parquet"):
        got, report = load_examples(tmp_path / name)
        assert [(e.text, e.context, e.emotion, e.intent, e.customer_type) for e in got] == [
            (e.text, e.context, e.emotion, e.intent, e.customer_type) for e in ref
        ], name


def test_csv_bad_row_reports_its_file_line(tmp_path):
    (tmp_path / "d.csv").write_text("text,emotion,intent\n在吗,neutral,chitchat\n人呢,neutral,nope\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d.csv:3: unknown intent"):
        load_examples(tmp_path / "d.csv")


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "b"}, {**GOOD, "id": "c", "text": "人呢"}])
    examples, report = load_examples(path)
    assert len(examples) == 2 and report.duplicates_dropped == 1
    assert deduplicate(examples)[1] == 0


def test_split_keeps_conversations_whole_and_is_reproducible():
    examples, _ = load_examples(MINI_DATA)
    splits = split_examples(examples, 0.25, 0.25, seed=3)
    convs = {name: {e.conversation_id for e in part} for name, part in splits.items()}
    assert not (convs["train"] & convs["dev"]) and not (convs["train"] & convs["test"]) and not (convs["dev"] & convs["test"])
    assert sum(len(p) for p in splits.values()) == len(examples)
    again = split_examples(examples, 0.25, 0.25, seed=3)
    assert {k: [e.id for e in v] for k, v in splits.items()} == {k: [e.id for e in v] for k, v in again.items()}


def test_rows_with_a_split_column_keep_it(tmp_path):
    rows = [{**GOOD, "id": str(i), "text": f"第{i}条", "split": s} for i, s in enumerate(["train", "dev", "test", "train"])]
    splits = split_examples(load_examples(write_jsonl(tmp_path / "d.jsonl", rows))[0])
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [2, 1, 1]


def test_duplicates_with_other_labels_are_reported(tmp_path):
    rows = [GOOD, {**GOOD, "id": "same"}, {**GOOD, "id": "other", "emotion": "angry" if GOOD["emotion"] != "angry" else "neutral"}]
    examples, report = load_examples(write_jsonl(tmp_path / "d.jsonl", rows))
    assert len(examples) == 1 and report.duplicates_dropped == 2
    assert report.conflicting == ["other"] and "1 with other labels than the copy kept" in report.summary()
