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


def test_exported_fp16_encoder_loads_as_fp32_for_fine_tuning(tiny_bert, tmp_path):
    from safetensors import safe_open

    from kefu_router.training.encoder import export_encoder
    from kefu_router.training.model import load_model
    from kefu_router.training.pretrain import pretrain
    from tests.conftest import fixture_texts

    pretrained = tmp_path / "pt"
    pretrain(tiny_bert, pretrained, fixture_texts() * 5, steps=2, batch_size=4, block=32, progress=False, sources=["fixture"])
    assert json.loads((pretrained / "pretrain_log.json").read_text())["sources"] == ["fixture"]
    shipped = export_encoder(pretrained, tmp_path / "shipped")
    with safe_open(shipped / "model.safetensors", "pt") as f:
        names = list(f.keys())
        assert all(f.get_tensor(n).dtype == torch.float16 for n in names)
        assert not any(n.startswith("cls.") for n in names)  # the masked-LM head is not shipped
    assert (shipped / "pretrain_log.json").exists() and (shipped / "tokenizer.json").exists()
    model = load_model(str(shipped))
    original = load_model(str(pretrained))
    assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    assert torch.allclose(model.bert.embeddings.word_embeddings.weight, original.bert.embeddings.word_embeddings.weight, atol=1e-3)
