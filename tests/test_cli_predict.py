"""`kefu-router predict` reading stdin checks each JSON line's types (issue 13, item 11)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kefu_router.cli import app


@pytest.mark.parametrize("line, expected", [
    ('{"text": null}', "stdin line 2: text: Input should be a valid string (got null)"),
    ('{"text": ["a"]}', "stdin line 2: text: Input should be a valid string (got an array)"),
    ('{"text": 5}', "stdin line 2: text: Input should be a valid string (got 5)"),
    ('{"text": "a", "context": [{"role": "customer", "text": 5}]}', "stdin line 2: context.0.text: Input should be a valid string (got 5)"),
    ('{"text": "a", "context": [{"role": "bot", "text": "x"}]}', "stdin line 2: context.0.role"),
    ('{"text": "a", "context": {"role": "agent"}}', "stdin line 2: context: Input should be a valid array"),
    ('{"text": ""}', "stdin line 2: text: is empty or blank"),
    ('{"text": " \\t"}', "stdin line 2: text: is empty or blank"),
    ('{"context": []}', "stdin line 2: text: missing"),
    ('{"text": "a"', "stdin line 2: top level: Invalid JSON"),
])
def test_a_bad_stdin_line_is_one_clear_error(tiny_bundle, line, expected):
    result = CliRunner().invoke(app, ["predict", "-m", str(tiny_bundle)], input=f"在吗\n{line}\n好的\n")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # nothing is predicted from input that is refused
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines


def test_the_argument_form_refuses_an_empty_text_as_stdin_does(tiny_bundle):
    result = CliRunner().invoke(app, ["predict", "  ", "-m", str(tiny_bundle)])
    assert result.exit_code == 1 and result.output.strip() == "error: text is empty"


def test_good_stdin_lines_are_predicted_in_order(tiny_bundle):
    lines = ['在吗', '{"text": "好的", "context": [{"role": "agent", "text": "已发货"}], "id": 7}']
    result = CliRunner().invoke(app, ["predict", "-m", str(tiny_bundle)], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["在吗", "好的"]


def test_stdin_that_is_not_utf8_is_refused_not_guessed(tiny_bundle):
    result = CliRunner().invoke(app, ["predict", "-m", str(tiny_bundle)], input="你好\n".encode("gbk"))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.output.strip().startswith("error: stdin is not UTF-8 text")


def test_a_training_command_without_the_training_extras_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_training(name, *args, **kwargs):
        if name.startswith("kefu_router.training.evaluate"):
            raise ModuleNotFoundError("No module named 'scipy'", name="scipy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_training)
    result = CliRunner().invoke(app, ["evaluate", "models/default", "--data", "x.jsonl"])
    assert result.exit_code == 1 and "scipy is not installed: this command needs the training extras" in result.output
