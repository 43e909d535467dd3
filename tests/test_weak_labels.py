"""Weak labels from public corpora: label mapping, context, skipping absent files, train-only rows.

The shared-data files are fakes written in each source's real format (see its PROVENANCE.md);
no real row is copied. Texts reuse the mini fixture's characters so the tiny BERT knows them.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from kefu_router.labels import INTENT
from kefu_router.training.corpus.weak_labels import (
    MAPPING_TSV,
    SOURCES,
    add_weak_examples,
    balanced_sample,
    load_weak,
    read_mapping,
    weak_label,
)
from tests.conftest import MINI_DATA

pytest.importorskip("datasets")

REAL_ACTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "jddc_uss" / "act_jddc.txt"
JDDC_COLUMNS = ["split", "dialogue_idx", "is_overall", "user_text", "action_id", "action", "sat3", "context_window", "action_coarse12"]
CPED_COLUMNS = [
    "TV_ID", "Dialogue_ID", "Utterance_ID", "Speaker", "Gender", "Age", "Neuroticism", "Extraversion", "Openness",
    "Agreeableness", "Conscientiousness", "Scene", "FacePosition_LU", "FacePosition_RD", "Sentiment", "Emotion", "DA", "Utterance",
]


def _csv(path: Path, header: list[str], rows: list[list], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _jddc(dialogue, text, action_id, action, sat, window) -> list:
    return ["valid", dialogue, "0", text, action_id, action, sat, json.dumps(window, ensure_ascii=False), "x"]


def make_shared(root: Path) -> Path:
    """A fake ../shared/data with every weak source, in the real formats."""
    _csv(root / "jddc_uss" / "jddc_uss_valid_user_turns.csv", JDDC_COLUMNS, [
        _jddc("0", "发票能开吗 开在一起", "51", "是否提供发票", "1", ["在吗|||在的亲", "我要开发票|||"]),
        _jddc("0", "好的", "0", "OTHER", "1", ["在吗|||在的亲", "我要开发票|||"]),
        _jddc("0", "什么破东西 我要投诉", "6", "保修返修及退换货政策", "0", ["在吗|||在的亲", "坏了|||亲可以申请退换"]),
        _jddc("0", "急 明天就要用啊", "14", "配送周期", "0", ["在吗|||在的亲"]),
        _jddc("0", "可以", "3", "订单状态解释", "0", ["在吗|||在的亲"]),
        _jddc("0", "#E-s[数字x]", "25", "修改订单", "1", []),
        _jddc("1", "价保怎么申请 [ORDERID_123]", "35", "价保申请流程", "2", ["在吗|||"]),
        ["valid", "0", "1", "OVERALL", "0", "OTHER", "0", "[]", "OTHER"],
    ])
    _csv(root / "online_shopping_10_cats" / "online_shopping_10_cats.csv", ["cat", "label", "review"], [
        ["衣服", "1", "做工很好 很喜欢"],
        ["衣服", "1", "还可以 就是有点贵"],
        ["衣服", "0", "什么破东西 差评"],
        ["衣服", "0", "有点小"],
    ], bom=True)
    _csv(root / "waimai_10k" / "waimai_10k.csv", ["label", "review"], [["1", "快递很快 好吃"], ["0", "等半天了 再也不买了"]])
    smp = root / "smp2020_ewect"
    smp.mkdir(parents=True)
    (smp / "virus_train.txt").write_text(json.dumps([
        {"id": 1, "content": "气死了 你们怎么回事", "label": "angry"},
        {"id": 2, "content": "好害怕 怎么办", "label": "fear"},
        {"id": 3, "content": "今天天气不好 //@某人:转发", "label": "neutral"},
        {"id": 4, "content": "加油", "label": "happy"},
        {"id": 5, "content": "谢谢大家 很喜欢", "label": "happy"},
        {"id": 6, "content": "好难过", "label": "sad"},
    ], ensure_ascii=False), encoding="utf-8")
    cped = [
        ["1", "1_000", "1_000_000", "甲", "female", "young", "high", "high", "low", "high", "high", "home", "", "", "neutral", "neutral", "question", "在吗"],
        ["1", "1_000", "1_000_001", "乙", "male", "young", "high", "high", "low", "high", "high", "home", "", "", "negative", "anger", "statement", "你们效率真高啊"],
        ["1", "1_000", "1_000_002", "甲", "female", "young", "high", "high", "low", "high", "high", "home", "", "", "negative", "worried", "question", "会不会不合适"],
        ["1", "1_000", "1_000_003", "乙", "male", "young", "high", "high", "low", "high", "high", "home", "", "", "negative", "depress", "statement", "算了"],
        ["1", "1_001", "1_001_000", "丙", "male", "young", "high", "high", "low", "high", "high", "home", "", "", "positive", "happy", "statement", "收到了很喜欢"],
    ]
    _csv(root / "cped" / "valid_split.csv", CPED_COLUMNS, cped, bom=True)
    return root


@pytest.fixture
def shared(tmp_path) -> Path:
    return make_shared(tmp_path / "shared")


def by_text(examples):
    return {ex.text: ex for ex in examples}


def test_mapping_table_covers_every_action_with_schema_ids():
    with MAPPING_TSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [int(r["id"]) for r in rows] == list(range(len(rows))) and len(rows) == 235
    assert all(r["intent"] in INTENT.labels or r["intent"] == "-" for r in rows)
    assert all(r["rationale"].strip() for r in rows)
    mapping = read_mapping()
    # boundary cases of labels.md
    assert mapping[0] is None  # OTHER
    assert mapping[35] == mapping[37] == "price_promotion"  # 价保
    assert mapping[2] == mapping[27] == mapping[97] == "order_payment"  # cancel, invoice, account
    assert mapping[6] == mapping[19] == mapping[40] == mapping[82] == "after_sales"
    assert mapping[14] == mapping[39] == mapping[69] == "logistics"
    assert mapping[20] == mapping[7] == mapping[115] == mapping[116] == "product_inquiry"
    assert mapping[13] == "other" and mapping[177] == "complaint"


@pytest.mark.skipif(not REAL_ACTS.is_file(), reason="../shared/data is not present")
def test_mapping_table_matches_the_real_action_list():
    real = dict(line.rstrip("\n").split("\t", 1) for line in REAL_ACTS.read_text(encoding="utf-8").splitlines() if line.strip())
    with MAPPING_TSV.open(encoding="utf-8", newline="") as fh:
        ours = {r["id"]: r["action"] for r in csv.DictReader(fh, delimiter="\t")}
    assert ours == {k: v.strip() for k, v in real.items()}


def test_jddc_intent_maps_actions_and_builds_context(shared):
    rows = load_weak("jddc_intent", shared, max_rows=100, seed=1)
    got = by_text(rows)
    assert set(got) == {"发票能开吗 开在一起", "什么破东西 我要投诉", "急 明天就要用啊", "价保怎么申请 [订单x]"}  # OTHER, '-', empty dropped
    ex = got["发票能开吗 开在一起"]
    assert ex.intent == "order_payment" and ex.emotion is None and ex.customer_type is None
    assert ex.context == (("customer", "在吗"), ("agent", "在的亲"), ("customer", "我要开发票"))
    assert got["什么破东西 我要投诉"].intent == "after_sales" and got["急 明天就要用啊"].intent == "logistics"
    assert got["价保怎么申请 [订单x]"].intent == "price_promotion"
    for ex in rows:
        assert ex.split == "train" and ex.source == "weak:jddc_intent" and ex.id.startswith("weak:jddc_intent:")
    assert len({ex.id for ex in rows}) == len(rows)


def test_jddc_displeasure_keeps_only_cued_dissatisfied_turns(shared):
    got = {ex.text: ex.emotion for ex in load_weak("jddc_displeasure", shared)}
    assert got == {"什么破东西 我要投诉": "angry", "急 明天就要用啊": "anxious"}  # sat-0 "可以" has no cue
    sat0 = {ex.text: ex.emotion for ex in load_weak("jddc_sat0", shared)}
    assert sat0 == {"什么破东西 我要投诉": "angry", "急 明天就要用啊": "angry", "可以": "angry"}
    assert all(ex.intent is None for ex in load_weak("jddc_displeasure", shared))


def test_reviews_map_praise_and_hostility(shared):
    got = {ex.text: ex for ex in load_weak("reviews", shared)}  # chnsenticorp_htl absent: the others still load
    assert {t: ex.emotion for t, ex in got.items()} == {
        "做工很好 很喜欢": "satisfied", "什么破东西 差评": "angry", "快递很快 好吃": "satisfied", "等半天了 再也不买了": "angry",
    }
    assert all(ex.intent is None and ex.context == () for ex in got.values())


def test_smp_maps_emotions_and_cleans_weibo(shared):
    got = {ex.text: ex.emotion for ex in load_weak("smp2020_ewect", shared)}
    assert got == {"气死了 你们怎么回事": "angry", "好害怕 怎么办": "anxious", "今天天气不好": "neutral", "谢谢大家 很喜欢": "satisfied"}


def test_cped_maps_emotions_with_speaker_relative_context(shared):
    got = by_text(load_weak("cped", shared))
    assert {t: ex.emotion for t, ex in got.items()} == {
        "在吗": "neutral", "你们效率真高啊": "angry", "会不会不合适": "anxious", "收到了很喜欢": "satisfied",
    }
    assert got["会不会不合适"].context == (("customer", "在吗"), ("agent", "你们效率真高啊"))
    assert got["你们效率真高啊"].context == (("agent", "在吗"),)
    assert got["收到了很喜欢"].context == () and got["收到了很喜欢"].conversation_id != got["在吗"].conversation_id


@pytest.mark.parametrize("source", SOURCES)
def test_missing_files_are_skipped_with_a_log_line(source, tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("KEFU_SHARED_DATA", raising=False)
    with caplog.at_level(logging.WARNING):
        assert load_weak(source, tmp_path) == []  # folder without the source's files
        assert load_weak(source, None) == []  # no folder at all
    assert f"weak:{source} skipped" in caplog.text


def test_shared_data_falls_back_to_the_environment(shared, monkeypatch):
    monkeypatch.setenv("KEFU_SHARED_DATA", str(shared))
    assert load_weak("smp2020_ewect", None)


def test_unknown_source_is_an_error(shared):
    with pytest.raises(ValueError, match="unknown weak source"):
        load_weak("weibo", shared)


def test_balanced_sample_is_reproducible_and_as_even_as_the_pools_allow(shared):
    from kefu_router.training.data import Example

    def ex(i, emotion):
        return Example(f"w{i}", f"w{i}", f"t{i}", (), emotion, None, None, "train", "weak:x")

    pool = [ex(i, "neutral") for i in range(50)] + [ex(100 + i, "angry") for i in range(5)] + [ex(200 + i, "anxious") for i in range(30)]
    sample = balanced_sample(pool, 40, seed=3)
    counts = {label: sum(weak_label(e) == label for e in sample) for label in ("neutral", "angry", "anxious")}
    assert counts == {"angry": 5, "anxious": 17, "neutral": 18} or counts == {"angry": 5, "anxious": 18, "neutral": 17}
    assert [e.id for e in sample] == [e.id for e in balanced_sample(pool, 40, seed=3)]
    assert [e.id for e in sample] != [e.id for e in balanced_sample(pool, 40, seed=4)]
    assert len(balanced_sample(pool, 1000, seed=3)) == len(pool)


def _mini_config(shared, tmp_path, tiny_bert=None, *extra):
    from kefu_router.training.config import load_config

    return load_config(None, [
        f"data=['{MINI_DATA}']", f"base_model={tiny_bert or 'unused'}", f"output_dir={tmp_path / 'run'}", "dev_fraction=0.25",
        "test_fraction=0.25", f"shared_data={shared}", "weak_sources=[jddc_intent, cped]", *extra,
    ])


def test_weak_rows_go_to_the_train_split_only(shared, tmp_path):
    from kefu_router.training.train import load_splits

    config = _mini_config(shared, tmp_path)
    gold, _ = load_splits(config)  # evaluation/export: no weak rows
    splits, reports = load_splits(config, weak=True)
    assert splits["dev"] == gold["dev"] and splits["test"] == gold["test"]
    weak = [ex for ex in splits["train"] if ex.source.startswith("weak:")]
    assert splits["train"][: len(gold["train"])] == gold["train"]
    assert {ex.source for ex in weak} == {"weak:jddc_intent", "weak:cped"}
    held_out = {ex.text for s in ("dev", "test") for ex in gold[s]}
    assert not held_out & {ex.text for ex in weak}
    assert any(r.startswith("weak:jddc_intent: 4 intent-only rows added to train") for r in reports)
    assert any(r.startswith("weak:cped:") for r in reports)
    assert not {ex.id for ex in weak} & {ex.id for s in gold.values() for ex in s}


def test_a_weak_text_equal_to_a_held_out_message_is_dropped(shared, tmp_path):
    from kefu_router.training.train import load_splits

    gold, _ = load_splits(_mini_config(shared, tmp_path))
    dev_text = next(ex.text for ex in gold["dev"] if len(ex.text) >= 2)
    path = shared / "smp2020_ewect" / "virus_train.txt"
    posts = json.loads(path.read_text(encoding="utf-8")) + [{"id": 99, "content": dev_text, "label": "neutral"}]
    path.write_text(json.dumps(posts, ensure_ascii=False), encoding="utf-8")
    splits = {k: list(v) for k, v in gold.items()}
    reports = add_weak_examples(splits, _mini_config(shared, tmp_path, None, "weak_sources=[smp2020_ewect]"))
    assert dev_text not in {ex.text for ex in splits["train"]}
    assert "4 emotion-only rows added to train (1 dropped" in reports[0]


def test_training_with_a_weak_source_completes(shared, tiny_bert, tmp_path):
    from kefu_router.training.train import train

    config = _mini_config(shared, tmp_path, tiny_bert, "epochs=1", "max_steps=3", "batch_size=8", "max_length=48", "threads=1")
    result = train(config, progress=False)
    log = json.loads((result.output_dir / "train_log.json").read_text(encoding="utf-8"))
    assert any(line.startswith("weak:jddc_intent:") for line in log["data"])
    assert result.splits["train"] > len(load_weak("cped", shared))


def test_kept_rule():
    from kefu_router.training.corpus.weak_experiment import kept

    assert kept({"a": 0.02, "b": -0.005})
    assert not kept({"a": 0.02, "b": -0.02})
    assert not kept({"a": 0.0, "b": 0.0})
    assert not kept({"a": 0.004}, min_gain=0.005)


def test_experiment_smoke_writes_table_and_json(shared, tiny_bert, tmp_path):
    from kefu_router.training.corpus.weak_experiment import run_experiment

    overrides = [f"data=['{MINI_DATA}']", f"base_model={tiny_bert}", "dev_fraction=0.25", "test_fraction=0.25",
                 "epochs=1", "max_steps=2", "batch_size=8", "max_length=48", "threads=1"]
    results = run_experiment(None, shared, ["reviews", "jddc_displeasure"], None, overrides, tmp_path / "out", tmp_path / "runs")
    table = (tmp_path / "out" / "weak_label_table.md").read_text(encoding="utf-8")
    assert "| baseline |" in table and "| `reviews` | 4 |" in table and "DEV split only" in table
    saved = json.loads((tmp_path / "out" / "weak_label_results.json").read_text(encoding="utf-8"))
    assert [r["source"] for r in saved["rows"]] == ["baseline", "reviews", "jddc_displeasure"]
    assert set(saved["rows"][1]["delta"]) == {"emotion_macro_f1", "intent_macro_f1", "customer_type_macro_f1", "customer_type_micro_f1"}
    assert results["kept_sources"] == [r["source"] for r in saved["rows"] if r["kept"]]
    base_steps = saved["runs"]["baseline"][0]["steps"]
    assert all(run["steps"] <= base_steps for run in saved["runs"]["reviews"] + saved["runs"]["jddc_displeasure"])  # equal steps
    assert not (tmp_path / "runs" / "seed13" / "reviews" / "checkpoint").exists()  # checkpoints removed unless asked


def test_cic_intent_map_is_valid_and_covers_every_cic_intent():
    from kefu_router.training.corpus.weak_labels import CIC_MAP_TSV, read_cic_map

    table = read_cic_map()  # raises on an unknown label id
    assert len(table) == 118 and all(k.isdigit() for k in table)
    assert sum(intent is not None for intent, _ in table.values()) >= 100
    assert CIC_MAP_TSV.read_text(encoding="utf-8").splitlines()[0].split("\t")[:5] == ["cic_label", "cic_name", "intent", "emotion", "traits"]
