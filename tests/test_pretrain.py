"""Masked-LM pretraining: runs, resumes from its checkpoint, and yields an encoder the classifier loads."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")


def test_pretrain_resumes_and_feeds_fine_tuning(tiny_bert, tmp_path):
    from kefu_router.training.model import load_model
    from kefu_router.training.pretrain import pretrain
    from tests.conftest import fixture_texts

    lines = fixture_texts() * 5
    out = tmp_path / "pt"
    first = pretrain(tiny_bert, out, lines, steps=3, batch_size=4, block=32, save_every=1, progress=False)
    assert first["steps"] == 3 and first["tokens_seen"] == 3 * 4 * 32
    second = pretrain(tiny_bert, out, lines, steps=5, batch_size=4, block=32, save_every=1, resume=True, progress=False)
    assert second["steps"] == 5 and second["tokens_seen"] == 5 * 4 * 32  # continued, not restarted
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert json.loads((out / "pretrain_log.json").read_text())["history"]
    model = load_model(str(out))  # encoder weights come from the MLM checkpoint
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, torch.load(out / "pretrain_state.pt", weights_only=False)["model"]["bert.embeddings.word_embeddings.weight"])


def test_masking_never_touches_special_tokens():
    from kefu_router.training.pretrain import mask_tokens

    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 3, 0, 0]] * 50)
    special = torch.tensor([0, 1, 2, 3])
    inputs, chosen = mask_tokens(ids, 100, 4, special, torch.Generator().manual_seed(0), rate=0.5)
    assert not chosen[torch.isin(ids, special)].any()
    assert chosen.any() and (inputs[chosen] == 4).float().mean() > 0.6
