"""Smoke test of what ships: the bundled default model and the pretrained encoder (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kefu_router.bundle import DEFAULT_BUNDLE, load_bundle
from kefu_router.conversation import Conversation
from kefu_router.predictor import Predictor
from kefu_router.routing import Router

REPO = Path(__file__).resolve().parents[1]
ENCODER = REPO / "models" / "kefu-mini-encoder"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()  # no argument: the bundled model


def test_default_bundle_is_small_int8_and_carries_its_test_metrics(predictor):
    assert predictor.bundle.path.resolve() == Path(DEFAULT_BUNDLE).resolve()
    size = sum(f.stat().st_size for f in predictor.bundle.path.iterdir())
    assert size <= 25 * 2**20
    meta = load_bundle().metadata
    assert meta["metrics"]["split"] == "test" and meta["metrics"]["n"] > 500
    assert all(meta["parity"]["int8"][h]["agreement"] >= 0.99 for h in ("emotion", "intent", "customer_type"))


@pytest.mark.parametrize("name, playbook", [("angry_buyer", "angry_escalation"), ("anxious_buyer", "anxious_reassurance"),
                                            ("hesitant_buyer", "hesitant_decision")])
def test_examples_route_to_their_playbooks(predictor, name, playbook):
    body = json.loads((REPO / "examples" / f"{name}.json").read_text(encoding="utf-8"))
    conversation = Conversation.of((t["role"], t["text"]) for t in body["turns"])
    decision = conversation.route(Router(), predictor.predict(list(conversation.messages)))
    assert decision.playbook.id == playbook, decision.reasons


def test_clear_messages_get_the_obvious_labels(predictor):
    angry, logistics = predictor.predict(["什么破店 再不发货我就投诉到12315", "快递到哪了 怎么还没到"])
    assert angry["emotion"]["label"] == "angry"
    assert logistics["intent"]["label"] == "logistics"


def test_shipped_encoder_loads_for_fine_tuning():
    torch = pytest.importorskip("torch")
    from kefu_router.training.model import load_model

    model = load_model(str(ENCODER))
    assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    log = json.loads((ENCODER / "pretrain_log.json").read_text(encoding="utf-8"))
    assert log["steps"] > 0 and log["tokens_seen"] == log["steps"] * log["batch_size"] * log["block"]
