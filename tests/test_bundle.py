"""A missing, incomplete, corrupt or foreign bundle fails with a clear BundleError."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kefu_router.bundle import BundleError, load_bundle


def test_missing_bundle(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")


def test_incomplete_bundle(bundle_copy):
    (bundle_copy / "thresholds.json").unlink()
    with pytest.raises(BundleError, match="missing thresholds.json"):
        load_bundle(bundle_copy)


def test_corrupt_metadata(bundle_copy):
    (bundle_copy / "metadata.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)


def test_corrupt_onnx_file(bundle_copy):
    from kefu_router.predictor import Predictor

    (bundle_copy / "model.int8.onnx").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="cannot load model bundle"):
        Predictor(bundle_copy)
    Predictor(bundle_copy, precision="fp32")  # the other graph is still usable


def test_bundle_for_other_labels_is_refused(bundle_copy):
    schema = json.loads((bundle_copy / "schema.json").read_text())
    schema["emotion"]["labels"].append("sad")
    schema["emotion"]["zh"].append("悲伤")
    (bundle_copy / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(BundleError, match="trained for other labels"):
        load_bundle(bundle_copy)


def test_runtime_path_never_imports_torch_or_transformers(tiny_bundle):
    """Predictor and CLI predict run with torch and transformers made unimportable."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from kefu_router.predictor import Predictor\n"
        "from kefu_router.cli import app\n"
        f"p = Predictor({str(tiny_bundle)!r}).predict_one('在吗')\n"
        "assert p['emotion']['label']\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_cli_predict_reports_a_missing_model_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from kefu_router.cli import app

    result = CliRunner().invoke(app, ["predict", "在吗", "-m", str(tmp_path / "none")])
    assert result.exit_code == 1 and "model bundle not found" in result.output and "Traceback" not in result.output


# ---------- every bundle file is checked against its model at load (issue 13, item 2) ----------

def _edit(bundle, name: str, edit) -> None:
    path = bundle / name
    path.write_text(edit(json.loads(path.read_text())) if callable(edit) else edit)


def _with(key: str, value):
    def edit(obj):
        target = obj
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
        return json.dumps(obj)  # json writes float("nan") as NaN, as a hand edit might
    return edit


@pytest.mark.parametrize("name, edit, expected", [
    ("schema.json", "{}", "schema.json: emotion: missing"),
    ("schema.json", "null", "schema.json: top level: must be a JSON object (got null)"),
    ("schema.json", "[1, 2]", "schema.json: top level: must be a JSON object (got an array)"),
    ("schema.json", _with("intent.multi_label", "no"), "schema.json: intent.multi_label"),
    ("thresholds.json", "[]", "thresholds.json: top level: must be a JSON object (got an array)"),
    ("thresholds.json", _with("customer_type.novice", float("nan")), "thresholds.json: customer_type.novice"),
    ("thresholds.json", _with("customer_type.novice", float("inf")), "thresholds.json: customer_type.novice"),
    ("thresholds.json", _with("customer_type.chatty", 1.5), "thresholds.json: customer_type.chatty: Input should be less than or equal to 1"),
    ("thresholds.json", _with("customer_type.hesitant", "0.5"), "thresholds.json: customer_type.hesitant"),
    ("thresholds.json", _with("customer_type.novice", ...), "thresholds.json: customer_type.novice: missing"),
    ("thresholds.json", _with("customer_type.sad", 0.5), "thresholds.json: customer_type.sad: unknown key"),
    ("thresholds.json", _with("temperature", {"emotion": float("inf")}), "thresholds.json: temperature.emotion"),
    ("metadata.json", "[]", "metadata.json: top level: must be a JSON object (got an array)"),
    ("metadata.json", _with("max_length", "64"), "metadata.json: max_length"),
    ("metadata.json", _with("max_length", True), "metadata.json: max_length"),
    ("metadata.json", _with("max_context_turns", -1), "metadata.json: max_context_turns"),
    ("metadata.json", _with("version", ...), "metadata.json: version: missing"),
    ("metadata.json", _with("format", 2), "metadata.json: format"),
    ("metadata.json", _with("schema_digest", "0123456789abcdef"), "metadata.json: schema_digest"),
])
def test_a_bad_bundle_file_is_one_error_naming_the_file_and_field(bundle_copy, name, edit, expected):
    _edit(bundle_copy, name, edit)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_copy)
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("edit, expected", [
    ("{}", "tokenizer.json: "), (lambda t: json.dumps({**t, "added_tokens": [], "model": {**t["model"], "vocab": {"[UNK]": 0, "a": 1}}}),
     "tokenizer.json: no [CLS], [SEP], [PAD] token"),
])
def test_a_bad_tokenizer_is_one_error_line(bundle_copy, edit, expected):
    from kefu_router.predictor import Predictor

    _edit(bundle_copy, "tokenizer.json", edit)
    with pytest.raises(BundleError) as info:
        Predictor(bundle_copy)
    assert f"cannot load model bundle {bundle_copy}: {expected}" in str(info.value) and "\n" not in str(info.value)


def test_max_length_beyond_the_graphs_position_embeddings_is_refused(bundle_copy):
    from kefu_router.predictor import Predictor

    _edit(bundle_copy, "metadata.json", _with("max_length", 100_000))
    for precision in ("int8", "fp32"):
        with pytest.raises(BundleError, match=r"metadata.json: max_length 100000 exceeds the 256 position embeddings"):
            Predictor(bundle_copy, precision=precision)
    _edit(bundle_copy, "metadata.json", _with("max_length", 256))
    Predictor(bundle_copy)


def test_a_graph_without_a_position_count_is_probed_at_max_length(bundle_copy, capfd):
    import onnx

    from kefu_router.predictor import Predictor

    graph = onnx.load(str(bundle_copy / "model.int8.onnx"))
    del graph.metadata_props[:]
    onnx.save(graph, str(bundle_copy / "model.int8.onnx"))
    Predictor(bundle_copy)
    _edit(bundle_copy, "metadata.json", _with("max_length", 257))
    with pytest.raises(BundleError, match="max_length 257 is more tokens than model.int8.onnx accepts"):
        Predictor(bundle_copy)
    assert "onnxruntime" not in capfd.readouterr().err


@pytest.mark.parametrize("command", ["predict", "tag", "route", "serve"])
def test_every_command_reports_a_bad_bundle_file_in_one_line(bundle_copy, tmp_path, monkeypatch, command):
    import uvicorn
    from typer.testing import CliRunner

    from kefu_router.cli import app

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started with a bad bundle"))

    (bundle_copy / "schema.json").write_text("{}")
    chats = tmp_path / "chats.jsonl"
    chats.write_text('{"text": "在吗"}\n', encoding="utf-8")
    conversation = tmp_path / "conversation.json"
    conversation.write_text('{"turns": [{"role": "customer", "text": "在吗"}]}', encoding="utf-8")
    args = {"predict": ["predict", "在吗"], "tag": ["tag", str(chats), "-o", str(tmp_path / "out.jsonl")],
            "route": ["route", str(conversation)], "serve": ["serve", "--port", "0"]}[command]
    result = CliRunner().invoke(app, [*args, "-m", str(bundle_copy)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [f"error: bundle {bundle_copy}: schema.json: emotion: missing; "
                                                  "intent: missing; customer_type: missing"]
