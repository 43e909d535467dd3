"""`kefu-router route`: a conversation file in, a playbook with reasons out; bad input is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kefu_router.cli import app
from kefu_router.routing import load_playbooks

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
    ],
)
def test_route_rejects_bad_conversations_without_traceback(tiny_bundle, stdin, message):
    result = CliRunner().invoke(app, ["route", "-m", str(tiny_bundle)], input=stdin)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
