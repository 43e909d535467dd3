"""End to end on the mini fixture: train -> evaluate -> export (with parity) -> predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT

pytest.importorskip("torch")


def test_train_writes_checkpoint_thresholds_and_config(trained_run):
    for name in ("checkpoint/config.json", "checkpoint/tokenizer.json", "config.yaml", "schema.json", "thresholds.json", "train_log.json"):
        assert (trained_run / name).is_file(), name
    thresholds = json.loads((trained_run / "thresholds.json").read_text())["customer_type"]
    assert set(thresholds) == set(CUSTOMER_TYPE.labels)
    log = json.loads((trained_run / "train_log.json").read_text())
    assert log["history"] and 0.0 <= log["best_dev_score"] <= 1.0


def test_evaluate_writes_metrics_baseline_and_plots(tiny_bundle, trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["groups"]) == {"project", "all"}  # the fixture has no real rows
    scored = metrics["groups"]["project"]
    for head in (EMOTION, INTENT):
        m = scored["model"][head.name]
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0 and 0.0 <= m["ece"] <= 1.0
        assert set(head.labels) <= set(m["per_class"])
    assert {"micro_f1", "macro_f1"} <= set(scored["model"]["customer_type"])
    assert scored["model"]["customer_type_conversation"]["conversations"] > 0
    assert set(scored["baseline_headline"]) == set(scored["headline"])
    assert (trained_run / "plots" / "project" / "confusion_emotion.png").stat().st_size > 1000


def test_bundle_has_everything_the_runtime_needs(tiny_bundle):
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.json", "schema.json", "thresholds.json", "metadata.json"):
        assert (tiny_bundle / name).is_file(), name
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert meta["version"] == "tiny-test" and meta["data_fingerprint"] and meta["base_model"]
    assert set(meta["parity"]["fp32"]) == {h.name for h in HEADS}


def test_onnx_matches_pytorch_on_padded_batches(trained_run, tiny_bundle):
    """fp32 ONNX logits equal PyTorch's within tolerance, with mixed lengths in one batch."""
    from transformers import AutoTokenizer

    from kefu_router.text import Message, prepare_tokenizer
    from kefu_router.training.export import parity
    from kefu_router.training.model import load_model

    model = load_model(str(trained_run / "checkpoint")).eval()
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(trained_run / "checkpoint").backend_tokenizer)
    messages = [Message.of("在吗"), Message.of("快递怎么还没到 明天就要用啊", [("customer", "在吗"), ("agent", "在的亲")])]
    report = parity(model, tok, tiny_bundle / "model.onnx", messages, 64, 6)
    for head in HEADS:
        assert report[head.name]["max_abs_diff"] < 1e-4
        assert report[head.name]["agreement"] == 1.0


def test_export_fails_when_agreement_is_below_the_threshold(trained_run, tmp_path):
    from kefu_router.training.export import ParityError, export

    with pytest.raises(ParityError, match="disagrees with PyTorch below 1.01"):
        export(trained_run, tmp_path / "b", min_agreement=1.01)


def test_predictor_returns_labels_and_scores_in_input_order(tiny_bundle):
    from kefu_router.predictor import Predictor
    from kefu_router.text import Message

    # fp32 here; the int8 graph's batch independence is tested in test_batch_independence.py.
    predictor = Predictor(tiny_bundle, precision="fp32", batch_size=2)
    messages = [Message.of("在吗"), Message.of("什么破东西 用两天就坏了 我要退货", [("customer", "在吗")]), Message.of("好的")]
    batched = predictor.predict(messages)
    one_by_one = [predictor.predict([m])[0] for m in messages]
    for a, b in zip(batched, one_by_one):  # sorting by length and padding must not change results
        assert a["emotion"]["label"] == b["emotion"]["label"]
        assert np.allclose(list(a["intent"]["scores"].values()), list(b["intent"]["scores"].values()), atol=1e-4)
    pred = batched[1]
    assert pred["emotion"]["label"] in EMOTION.labels and pred["intent"]["label"] in INTENT.labels
    assert abs(sum(pred["emotion"]["scores"].values()) - 1) < 1e-3
    assert all(t["label"] in CUSTOMER_TYPE.labels for t in pred["customer_type"])
    assert set(pred["customer_type_scores"]) == set(CUSTOMER_TYPE.labels)


def test_cli_train_evaluate_export_predict(tiny_bert, tmp_path):
    """The README flow through the typer app, on the mini fixture."""
    from typer.testing import CliRunner

    from kefu_router.cli import app
    from tests.conftest import MINI_DATA

    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "--base-model", str(tiny_bert), "--data", str(MINI_DATA), "-o", str(run),
            "--set", "epochs=1", "--set", "max_length=48", "--set", "dev_fraction=0.25", "--set", "test_fraction=0.25"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    # A one-epoch tiny model's trait scores sit on its tuned thresholds, so int8 noise can flip every
    # trait set: the parity gate is tested in test_export_fails_when_agreement_is_below_the_threshold.
    result = runner.invoke(app, ["export", str(run), "-o", str(tmp_path / "bundle"), "--min-agreement", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "快递到哪了", "-c", "customer:在吗", "-m", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["intent"]["label"] in INTENT.labels
    result = runner.invoke(app, ["predict", "-m", str(tmp_path / "bundle")], input='在吗\n{"text": "好的", "context": [{"role": "agent", "text": "已发货"}]}\n')
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 2


def test_trait_calibration_error_is_low_for_calibrated_scores():
    import numpy as np

    from kefu_router.labels import CUSTOMER_TYPE
    from kefu_router.training.metrics import multi_label_metrics

    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (30_000, CUSTOMER_TYPE.size))
    y = (rng.uniform(size=p.shape) < p).astype(int)  # each trait occurs exactly as often as predicted
    thresholds = dict.fromkeys(CUSTOMER_TYPE.labels, 0.5)
    assert multi_label_metrics(y, p, thresholds)["ece"] < 0.01
    assert multi_label_metrics(np.zeros_like(y), np.full(p.shape, 0.9), thresholds)["ece"] > 0.85  # confident, wrong


def test_conversation_level_customer_type_is_the_union_of_a_conversations_traits():
    import numpy as np

    from kefu_router.training.metrics import conversation_trait_metrics

    thresholds = {t: 0.5 for t in CUSTOMER_TYPE.labels}
    gold = np.zeros((3, CUSTOMER_TYPE.size), dtype=int)
    gold[0, 0] = 1  # conversation a shows trait 0 in its first message only
    probs = np.zeros((3, CUSTOMER_TYPE.size))
    probs[1, 0] = 0.9  # ... and the model sees it in its second message: right at conversation level
    probs[2, 1] = 0.9  # conversation b: a trait nobody labelled
    result = conversation_trait_metrics(["a", "a", "b"], gold, probs, thresholds)
    assert result["conversations"] == 2 and result["micro_f1"] == pytest.approx(2 / 3)


def test_real_rows_are_scored_apart_from_the_project_corpus():
    from kefu_router.training.data import Example
    from kefu_router.training.evaluate import split_groups

    rows = [Example(str(i), str(i), "t", (), "neutral", "other", (), "test", source) for i, source in
            enumerate(["jddc_uss", "kefu-corpus/part_1_p1.txt", "dataclue_cic"])]
    groups = split_groups(rows)
    assert groups["real"].tolist() == [0, 2] and groups["project"].tolist() == [1] and groups["all"].tolist() == [0, 1, 2]
