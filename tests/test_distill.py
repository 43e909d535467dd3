"""Distillation: the loss, the unlabelled transfer set (no evaluation text gets in) and a student run."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import MINI_DATA  # noqa: E402
from test_real_set import shared  # noqa: E402,F401 (the fixture, extended below)

from kefu_router.labels import CUSTOMER_TYPE, EMOTION  # noqa: E402
from kefu_router.training.corpus.unlabelled import unlabelled_examples  # noqa: E402
from kefu_router.training.data import Example  # noqa: E402
from kefu_router.training.distill import distillation_loss  # noqa: E402


def test_distillation_loss_is_zero_only_when_the_student_matches_the_teacher():
    teacher = torch.tensor([[2.0, 0.5, -1.0, 0.0]])
    assert distillation_loss(EMOTION, teacher.clone(), teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(EMOTION, torch.zeros_like(teacher), teacher, 2.0).item() > 0.01
    student = torch.zeros_like(teacher, requires_grad=True)
    distillation_loss(EMOTION, student, teacher, 2.0).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 2]  # pushed towards the teacher's favourite class
    traits = torch.tensor([[3.0, -3.0, 0.0, 1.0, -1.0, 2.0, -2.0]])
    near, far = distillation_loss(CUSTOMER_TYPE, traits, traits, 1.0), distillation_loss(CUSTOMER_TYPE, -traits, traits, 1.0)
    assert near < far


@pytest.fixture()
def shared_with_atec(shared):  # test_real_set's fake ../shared/data, plus an ATEC file
    (shared / "atec_antfin").mkdir()
    (shared / "atec_antfin" / "atec_nlp_sim_train.csv").write_text(
        "\ufeff1\t\ufeff花呗怎么还款\t借呗额度没了\t0\n2\t花呗怎么还款\t我的快递到哪了\t1\n", encoding="utf-8")
    return shared


def _labelled(key: str, text: str, split: str) -> Example:
    conversation = ":".join(key.split(":")[:3])
    return Example(key, conversation, text, (), "neutral", "logistics", (), split, "jddc_uss")


def test_transfer_set_leaves_out_held_out_conversations_and_labelled_texts(shared_with_atec):
    shared = shared_with_atec
    labelled = [_labelled("jddc_uss:valid:1:1", "怎么还不退款", "dev"),  # its whole dialogue is held out
                _labelled("jddc_uss:valid:0:0", "在吗", "train")]
    rows, counts = unlabelled_examples(shared, ["jddc_uss", "atec"], labelled, max_rows=100, max_context_turns=2)
    texts = [ex.text for ex in rows]
    assert not any(ex.conversation_id == "jddc_uss:valid:1" for ex in rows)
    assert "在吗" not in texts and "怎么还不退款" not in texts
    assert "我的快递到哪了" in texts  # unlabelled turn of a train dialogue, once although ATEC repeats it
    assert texts.count("我的快递到哪了") == 1 and texts.count("花呗怎么还款") == 1
    turn = next(ex for ex in rows if ex.text == "好的谢谢")
    assert turn.context[-1] == ("agent", "已经在派送了") and len(turn.context) == 2
    assert all(ex.emotion is None and ex.customer_type is None and ex.split == "train" for ex in rows)
    assert counts == {"jddc_uss": 3, "atec": 2}  # 我的快递到哪了, 订单号…, 好的谢谢; 花呗…, 借呗…
    with pytest.raises(ValueError, match="unknown unlabelled sources"):
        unlabelled_examples(shared, ["weibo"], labelled, 10)


def test_student_trains_on_teacher_soft_labels_and_reuses_cached_logits(trained_run, tiny_bert, tmp_path, monkeypatch):
    from kefu_router.training import distill
    from kefu_router.training.config import load_config
    from kefu_router.training.train import train

    overrides = [f"data=['{MINI_DATA}']", f"base_model={tiny_bert}", f"output_dir={tmp_path / 'student'}", "epochs=1",
                 "batch_size=8", "max_length=64", "dev_fraction=0.25", "test_fraction=0.25", "threads=1",
                 f"teacher={trained_run}", "distill_alpha=0.3", "pooling=mean"]
    train(load_config(None, overrides), progress=False)
    log = json.loads((tmp_path / "student" / "train_log.json").read_text(encoding="utf-8"))
    assert log["distillation"]["teacher"] == str(trained_run) and log["distillation"]["alpha"] == 0.3
    cached = sorted((tmp_path / "student" / "teacher_logits").glob("*.npz"))
    assert cached and np.load(cached[0])["emotion"].shape[1] == EMOTION.size
    config = json.loads(json.dumps((tmp_path / "student" / "checkpoint" / "config.json").read_text()))
    assert '"kefu_pooling": "mean"' in config

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran again although its logits are cached")

    monkeypatch.setattr("kefu_router.training.train.predict_logits", no_teacher)
    soft = distill.teacher_logits(trained_run, _train_rows(trained_run, overrides), tmp_path / "student" / "teacher_logits")
    assert soft["intent"].shape[0] == len(_train_rows(trained_run, overrides))


def _train_rows(trained_run, overrides):
    from kefu_router.training.config import load_config
    from kefu_router.training.train import load_splits

    return load_splits(load_config(None, overrides))[0]["train"]


def test_unlabelled_rows_need_a_teacher():
    from kefu_router.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="need a teacher"):
        load_config(None, [f"data=['{MINI_DATA}']", "base_model=x", "unlabelled_sources=[atec]"])


def test_a_layer_slice_keeps_the_chosen_layers_and_heads(trained_run, tmp_path):
    from kefu_router.training.distill import slice_layers
    from kefu_router.training.model import load_model

    teacher = load_model(str(trained_run / "checkpoint"))
    student = load_model(str(slice_layers(trained_run / "checkpoint", [1], tmp_path / "slice")))
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    for (name, a), b in zip(teacher.bert.encoder.layer[1].state_dict().items(), student.bert.encoder.layer[0].state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(teacher.intent.weight, student.intent.weight)
    with pytest.raises(ValueError, match="indices"):
        slice_layers(trained_run / "checkpoint", [5], tmp_path / "bad")
