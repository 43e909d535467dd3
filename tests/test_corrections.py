"""Corrections from agents: schema check with file:line reasons, merge into train rows, dev/test leak guard."""

from __future__ import annotations

import pytest

pytest.importorskip("datasets")

from kefu_router.training.corrections import (  # noqa: E402
    CorrectionError,
    held_out_data,
    load_corrections,
    merge_corrections,
    write_rows,
)
from kefu_router.training.data import Example, load_examples  # noqa: E402

HEADER = "conversation_id,turn,emotion,intent,customer_type,agent\n"


def write_csv(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "corrections.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_valid_rows_are_normalised(tmp_path):
    path = write_csv(tmp_path, "c1,2,angry,complaint,impatient;price_sensitive,小王\nc1,4,neutral,logistics,,小李\n")
    corrections, bad = load_corrections(path)
    assert bad == []
    assert [(c.conversation_id, c.turn) for c in corrections] == [("c1", 2), ("c1", 4)]
    # traits come back in schema order whatever order the agent typed them in
    assert corrections[0].customer_type == ("impatient", "price_sensitive") and corrections[1].customer_type == ()
    assert corrections[0].where == f"{path}:2"


@pytest.mark.parametrize(
    "row,reason",
    [
        ("c1,2,furious,complaint,,", "unknown emotion label 'furious'; expected one of neutral, angry, anxious, satisfied"),
        ("c1,2,angry,refund,,", "unknown intent label 'refund'"),
        ("c1,2,angry,complaint,vip,", "unknown customer_type trait 'vip'"),
        ("c1,two,angry,complaint,,", "turn must be a whole number, got 'two'"),
        (",2,angry,complaint,,", "missing conversation_id"),
        ("c1,2,angry,complaint,,,extra", "more cells than columns"),
    ],
)
def test_bad_row_is_reported_with_file_line_and_skipped(tmp_path, row, reason):
    path = write_csv(tmp_path, f"c1,1,neutral,chitchat,,\n{row}\nc1,3,neutral,chitchat,,\n")
    corrections, bad = load_corrections(path)
    assert [c.turn for c in corrections] == [1, 3]
    assert len(bad) == 1 and bad[0].startswith(f"{path}:3: ") and reason in bad[0]


def test_second_correction_of_a_message_is_reported(tmp_path):
    path = write_csv(tmp_path, "c1,2,angry,complaint,,\nc1,2,neutral,complaint,,\n")
    corrections, bad = load_corrections(path)
    assert [c.emotion for c in corrections] == ["angry"]
    assert bad == [f"{path}:3: c1 turn 2 is already corrected at {path}:2; kept the first"]


def test_line_numbers_count_quoted_line_breaks(tmp_path):
    path = write_csv(tmp_path, 'c1,1,neutral,chitchat,,"two\nlines"\nc1,2,furious,chitchat,,\n')
    _, bad = load_corrections(path)
    assert bad[0].startswith(f"{path}:4: ")


def test_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(CorrectionError, match="missing column"):
        load_corrections(write_csv(tmp_path, "c1,1,neutral\n", header="conversation_id,turn,emotion\n"))
    with pytest.raises(CorrectionError, match="not found"):
        load_corrections(tmp_path / "nope.csv")


LOG = [  # deliberately out of turn order: context must follow `turn`, not file order
    {"conversation_id": "c1", "turn": 2, "role": "customer", "text": "怎么还没发货 都三天了"},
    {"conversation_id": "c1", "turn": 0, "role": "customer", "text": "在吗"},
    {"conversation_id": "c1", "turn": 1, "role": "agent", "text": "在的亲"},
    {"conversation_id": "c1", "turn": 3, "role": "agent", "text": "亲 今天一定发出"},
    {"conversation_id": "c1", "turn": 4, "role": "customer", "text": "好的 "},
    {"conversation_id": "dev-conv", "turn": 0, "role": "customer", "text": "这个有红色吗"},
    {"conversation_id": "train-conv", "turn": 0, "role": "customer", "text": "这个有蓝色吗"},
    {"conversation_id": "copy", "turn": 0, "role": "customer", "text": "快递员态度太差了"},
    {"conversation_id": "copy", "turn": 1, "role": "customer", "text": "我说放驿站 他骂我事多"},
]
TEST_MESSAGE = Example("t-01", "t", "我说放驿站 他骂我事多", (("customer", "快递员态度太差了"),), "angry", "complaint", (), split="test")
FROZEN = {"dev-conv": "dev", "train-conv": "train", "t": "test"}


def corrections_for(tmp_path, rows: str):
    corrections, bad = load_corrections(write_csv(tmp_path, rows))
    assert bad == []
    return corrections


def test_merge_builds_train_rows_with_context(tmp_path):
    corrections = corrections_for(tmp_path, "c1,2,angry,logistics,impatient,\nc1,4,neutral,logistics,impatient,\n")
    result = merge_corrections(corrections, LOG, [TEST_MESSAGE], FROZEN)
    assert not result.set_aside and not result.unmatched
    first, second = result.train_rows
    assert first["context"] == [{"role": "customer", "text": "在吗"}, {"role": "agent", "text": "在的亲"}]
    assert second["text"] == "好的" and len(second["context"]) == 4 and second["context"][-1]["role"] == "agent"
    assert first["split"] == "train" and first["customer_type"] == ["impatient"]
    # the rows load as training data, keeping their split and explicit context
    examples, report = load_examples(write_rows(result.train_rows, tmp_path / "rows.jsonl"))
    assert report.examples == 2 and not report.skipped
    assert examples[0].context == (("customer", "在吗"), ("agent", "在的亲")) and examples[0].split == "train"
    assert examples[1].emotion == "neutral" and examples[1].customer_type == ("impatient",)


def test_merge_reports_corrections_that_match_no_customer_message(tmp_path):
    corrections = corrections_for(tmp_path, "c1,9,angry,logistics,,\nc9,0,angry,logistics,,\nc1,1,neutral,chitchat,,\n")
    result = merge_corrections(corrections, LOG, [], {})
    assert not result.train_rows
    assert [m.split(": ", 1)[1] for m in result.unmatched] == [
        "no turn 9 in c1 in the chat log",
        "no conversation 'c9' in the chat log",
        "turn 1 of c1 is an agent turn; only customer turns take labels",
    ]


def test_leak_guard_sets_aside_dev_test_conversations_and_duplicates(tmp_path):
    corrections = corrections_for(
        tmp_path,
        "dev-conv,0,neutral,product_inquiry,,\n"  # conversation in the frozen dev split
        "train-conv,0,neutral,product_inquiry,,\n"  # frozen train split: fine
        "copy,1,angry,complaint,,\n"  # same message and context as a test message
        "copy,0,angry,complaint,,\n",  # same text as a test context turn, but not a test message
    )
    result = merge_corrections(corrections, LOG, [TEST_MESSAGE], FROZEN)
    assert [r["conversation_id"] for r in result.train_rows] == ["train-conv", "copy"]
    assert [(c.conversation_id, why) for c, why in result.set_aside] == [
        ("dev-conv", "conversation dev-conv is in the frozen dev split"),
        ("copy", "message and context duplicate test message t-01"),
    ]
    assert "2 corrections become train rows; 2 set aside" in result.summary()


def test_same_text_with_other_context_is_not_a_duplicate(tmp_path):
    other = Example("t-02", "t", "这个有蓝色吗", (("agent", "亲 在的"),), "neutral", "product_inquiry", (), split="test")
    result = merge_corrections(corrections_for(tmp_path, "train-conv,0,neutral,product_inquiry,,\n"), LOG, [other], FROZEN)
    assert len(result.train_rows) == 1 and not result.set_aside


def test_held_out_data_is_the_corpus_dev_and_test_splits():
    held_out, frozen = held_out_data()
    assert held_out and {ex.split for ex in held_out} == {"dev", "test"}
    assert all(frozen[ex.conversation_id] == ex.split for ex in held_out)
    assert "train" in frozen.values()
