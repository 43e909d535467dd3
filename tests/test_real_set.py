"""The real labelled set: source readers, the window splitter, packets, answer checks, the label join."""

from __future__ import annotations

import json

import pytest

from kefu_router.training.corpus import annotate, real_set
from kefu_router.training.corpus.real_sources import read_dataclue_cic, read_jddc_baseline, read_jddc_uss, split_window

# Two JDDC USS dialogues in the source's sliding-window format: window TAB action ids TAB satisfaction.
USS = [
    "['在吗|||您好', '我的快递到哪了|||', '订单号[ORDERID_1]|||']\t[0, 39, 0]\t1",
    "['在吗|||您好', '我的快递到哪了|||', '订单号[ORDERID_1]|||已经在派送了', '好的谢谢|||']\t[0, 39, 0, 0]\t2",
    "['在吗|||您好', '我的快递到哪了|||', '订单号[ORDERID_1]|||已经在派送了', '好的谢谢|||不客气', 'OVERALL|||']\t[0, 39, 0, 0, 0]\t2",
    "['你好|||', '怎么还不退款|||', '都一个星期了|||']\t[0, 0, 0]\t0",
    "['你好|||', '怎么还不退款|||', '都一个星期了|||', 'OVERALL|||']\t[0, 0, 0, 0]\t0",
]
CIC = [{"id": 0, "label": "1", "sentence": "能便宜点吗", "label_des": "买家讨价还价"},
       {"id": 1, "label": "2", "sentence": "好评", "label_des": "买家表达赞美/满意"}]
BASELINE = ["什么时候发货,请您稍等，正在为您核实哦~,好的,亲亲已经为您备注了哦,谢谢,"]


@pytest.fixture()
def shared(tmp_path):
    root = tmp_path / "data"
    (root / "jddc_uss").mkdir(parents=True)
    (root / "jddc_uss" / "valid_jddc.txt").write_text("\n".join(USS) + "\n", encoding="utf-8")
    (root / "dataclue_cic").mkdir()
    for name in ("train", "dev"):
        (root / "dataclue_cic" / f"{name}.json").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in CIC), encoding="utf-8")
    (root / "jddc_baseline").mkdir()
    for name in ("train", "test"):
        (root / "jddc_baseline" / f"{name}.enc").write_text("\n".join(BASELINE) + "\n", encoding="utf-8")
    return root


def test_jddc_uss_dialogues_are_rebuilt_from_windows_with_every_buyer_turn_keyed(shared):
    first, second = list(read_jddc_uss(shared))
    assert [(t.role, t.text) for t in first.turns] == [
        ("customer", "在吗"), ("agent", "您好"), ("customer", "我的快递到哪了"), ("customer", "订单号[ORDERID_1]"),
        ("agent", "已经在派送了"), ("customer", "好的谢谢"), ("agent", "不客气")]
    assert [t.key for _, t in first.customer_turns()] == [f"jddc_uss:valid:0:{i}" for i in range(4)]
    assert first.turns[5].hint == "0 sat=2"  # no act_jddc.txt here: the action id stands in for its name
    assert [t.text for _, t in second.customer_turns()] == ["你好", "怎么还不退款", "都一个星期了"]


def test_the_reserved_jddc_uss_test_split_is_never_read(shared):
    with pytest.raises(ValueError, match="reserved"):
        next(read_jddc_uss(shared, split="test"))


def test_window_splitter_alternates_roles_and_finds_agent_templates():
    blocks = split_window(BASELINE[0])
    assert [role for role, _ in blocks] == ["customer", "agent", "customer", "agent", "customer"]
    assert blocks[1][1] == ["请您稍等，正在为您核实哦~"] and blocks[3][1] == ["亲亲已经为您备注了哦"]
    with pytest.raises(ValueError):
        split_window("在吗,你好,")


def test_baseline_windows_key_only_the_last_buyer_bubble(shared):
    conv = next(read_jddc_baseline(shared))
    keyed = conv.customer_turns()
    assert len(keyed) == 1 and keyed[0][1].text == "谢谢" and keyed[0][1].key == "jddc_baseline:train:1"


def test_packets_carry_keys_and_answers_are_checked(shared, tmp_path):
    conv = next(read_dataclue_cic(shared))
    packet = tmp_path / "p.txt"
    packet.write_text(annotate.render(conv, show_hints=False), encoding="utf-8")
    answers = tmp_path / "a.tsv"
    answers.write_text("dataclue_cic:train:0\tneutral\tprice_promotion\tprice_sensitive\n", encoding="utf-8")
    assert annotate.check_answers(packet, answers) == []
    answers.write_text("dataclue_cic:train:0\tcalm\tprice_promotion\t-\ndataclue_cic:train:9\tneutral\tother\t-\n", encoding="utf-8")
    problems = annotate.check_answers(packet, answers)
    assert any("unknown emotion label 'calm'" in p for p in problems) and any("not in p.txt" in p for p in problems)
    assert any("unanswered" in p for p in problems)


def test_labels_join_the_source_text_and_report_changed_or_missing_rows(shared, tmp_path):
    labels_dir = tmp_path / "labels"
    convs = list(read_jddc_uss(shared))
    keyed = {t.key: t.text for c in convs for _, t in c.customer_turns()}
    labels = [real_set.RealLabel(k, "neutral", "logistics", (), "test", real_set.text_sha1(v)) for k, v in keyed.items()]
    labels[0] = real_set.RealLabel(labels[0].key, "neutral", "chitchat", (), "test", "0" * 12)  # text changed since
    labels.append(real_set.RealLabel("jddc_uss:valid:9:0", "angry", "complaint", (), "test", "abc"))  # gone
    real_set.write_labels(labels_dir / "jddc_uss.tsv", labels)
    rows, report = real_set.build_rows(shared, real_set.all_labels(labels_dir))
    assert (report.rows, report.changed, report.missing) == (len(keyed) - 1, 1, 1)
    row = next(r for r in rows if r["id"] == "jddc_uss:valid:0:3")
    assert row["text"] == "好的谢谢" and row["source"] == "jddc_uss" and row["conversation_id"] == "jddc_uss:valid:0"
    assert [t["text"] for t in row["context"]][-2:] == ["订单号[ORDERID_1]", "已经在派送了"]


def test_splits_are_frozen_per_conversation():
    labels = [real_set.RealLabel(f"jddc_uss:valid:{d}:{t}", "neutral", "logistics" if d % 2 else "after_sales", ())
              for d in range(30) for t in range(4)]
    split = real_set.freeze_splits(labels)
    by_conv = {}
    for lab in split:
        by_conv.setdefault(real_set.conversation_of(lab.key), set()).add(lab.split)
    assert all(len(s) == 1 for s in by_conv.values())
    assert {s for (s,) in by_conv.values()} == {"train", "dev", "test"}
    # a label that already carries a split keeps it; a new turn of a split conversation joins its split
    again = real_set.freeze_splits(split + [real_set.RealLabel("jddc_uss:valid:0:9", "neutral", "other", ())])
    assert again[-1].split == split[0].split and again[:-1] == split


def test_committed_label_files_are_valid_and_carry_no_text():
    for path in sorted(real_set.LABELS_DIR.glob("*.tsv")):
        labels = real_set.read_labels(path)  # raises on an unknown label id
        assert labels and all(lab.split in ("train", "dev", "test") and len(lab.text_sha1) == 12 for lab in labels)
        header = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
        assert header == list(real_set.COLUMNS)


def test_real_data_card_is_generated_from_the_committed_labels():
    """training/data/real/DATACARD.md comes from `python -m kefu_router.training.corpus.real_set datacard`."""
    assert real_set.DATACARD.read_text(encoding="utf-8") == real_set.render_datacard()
