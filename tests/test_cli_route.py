"""`kefu-router route`: a conversation file in, a playbook with reasons out; bad input is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kefu_router.cli import app
from kefu_router.conversation import Conversation
from kefu_router.routing import Router, load_playbooks
from kefu_router.text import Message

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["angry_buyer.json", "anxious_buyer.json", "hesitant_buyer.json"])
def test_route_prints_a_known_playbook_and_per_turn_labels(tiny_bundle, name):
    result = CliRunner().invoke(app, ["route", str(EXAMPLES / name), "-m", str(tiny_bundle)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["playbook"]["id"] in load_playbooks().playbooks
    turns = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))["turns"]
    assert [p["turn"] for p in out["predictions"]] == [i for i, t in enumerate(turns) if t["role"] == "customer"]
    assert out["reasons"] and out["model_version"] == "tiny-test"


@pytest.mark.parametrize(
    "stdin,message",
    [
        ("{not json", "expected a JSON object"),
        ('{"turns": [{"role": "agent", "text": "您好"}]}', "no customer turn"),
        ('{"turns": [{"role": "bot", "text": "hi"}, {"role": "customer", "text": "在吗"}]}', "unknown role"),
        ('{"turns": "在吗"}', "expected a JSON object"),
        ('{"turns": [{"role": "customer", "text": 5}]}', "turns[0].text: expected a string"),
        ('{"turns": [{"role": "customer", "text": "在吗"}, {"role": "bot", "text": "hi"}]}', "turns[1].role: unknown role"),
        ('{"turns": [{"role": "customer", "text": "  "}, {"role": "agent", "text": "您好"}]}', "no customer turn with text"),
    ],
)
def test_route_rejects_bad_conversations_without_traceback(tiny_bundle, stdin, message):
    result = CliRunner().invoke(app, ["route", "-m", str(tiny_bundle)], input=stdin)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


# --- kefu_router.conversation: the turns -> messages -> route helper shared with POST /v1/route ---

TURNS = [("customer", "在吗"), ("agent", "在的亲"), ("customer", "   "), ("customer", "我要退货 杯子是碎的"), ("agent", "好的"), ("customer", "好的")]


def test_each_customer_turn_with_text_is_a_message_with_every_turn_before_it_as_context():
    chat = Conversation.of(TURNS)
    assert chat.customer == (0, 3, 5)
    assert chat.messages == (
        Message("在吗"),
        Message("我要退货 杯子是碎的", (("customer", "在吗"), ("agent", "在的亲"))),  # the blank turn adds nothing
        Message("好的", (("customer", "在吗"), ("agent", "在的亲"), ("customer", "我要退货 杯子是碎的"), ("agent", "好的"))),
    )
    assert chat.truncated == (False, False, False)


def test_max_chars_cuts_model_inputs_flags_them_and_the_router_reads_the_cut_text():
    chat = Conversation.of([("agent", "亲" * 10), ("customer", "好的"), ("customer", "我要退货" * 3)], max_chars=6)
    assert chat.messages[0] == Message("好的", (("agent", "亲" * 6),)) and chat.messages[1].text == "我" + "货我要退货"  # head and tail kept
    assert chat.truncated == (True, True)
    seen = []

    class Spy(Router):
        def route(self, predictions):
            seen.extend(p["text"] for p in predictions)
            return super().route(predictions)

    pred = {"emotion": {"label": "neutral", "score": 0.9}, "intent": {"label": "after_sales", "score": 0.9}, "customer_type": []}
    decision = chat.route(Spy(), [pred, pred])
    assert seen == ["好的", "我" + "货我要退货"] and decision.aggregate.fillers == [1]
    with pytest.raises(ValueError, match="1 predictions for 2 customer turns"):
        chat.route(Router(), [pred])
