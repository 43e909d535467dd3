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
