"""The exported model bundle: one directory that the runtime needs and nothing else.

    model.onnx         fp32 graph, dynamic batch and sequence axes
    model.int8.onnx    dynamically quantised copy (the default at runtime)
    tokenizer.json     `tokenizers` file
    schema.json        label ids in logit order (kefu_router.labels.schema_dict)
    thresholds.json    per-trait decision thresholds for customer_type and, when fitted, the
                       softmax temperatures of emotion and intent (1 when absent)
    metadata.json      format, version, base model, data fingerprint, input limits, metrics, parity
"""

from __future__ import annotations

import json
import os
import math
from dataclasses import dataclass, field
from pathlib import Path

from kefu_router.labels import CUSTOMER_TYPE, HEADS, schema_dict, schema_digest

BUNDLE_FORMAT = 1
FILES = ("tokenizer.json", "schema.json", "thresholds.json", "metadata.json")
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
MODEL_ENV = "KEFU_ROUTER_MODEL"
# The bundled default model, found beside the package in a source checkout.
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"


class BundleError(RuntimeError):
    """A bundle that is missing, incomplete, corrupt or made for another label schema."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    metadata: dict
    schema: dict
    thresholds: dict[str, float]
    temperatures: dict[str, float] = field(default_factory=dict)  # softmax head -> T; logits / T

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))

    @property
    def max_length(self) -> int:
        return int(self.metadata["max_length"])

    @property
    def max_context_turns(self) -> int:
        return int(self.metadata["max_context_turns"])

    def onnx_path(self, precision: str) -> Path:
        if precision not in ONNX_FILES:
            raise BundleError(f"precision must be one of {', '.join(ONNX_FILES)}, got {precision!r}")
        path = self.path / ONNX_FILES[precision]
        if not path.is_file():
            raise BundleError(f"bundle {self.path} has no {precision} model ({path.name})")
        return path


def resolve_bundle_path(path: str | os.PathLike | None) -> Path:
    """An explicit path, else $KEFU_ROUTER_MODEL, else the bundled default model."""
    if path:
        return Path(path)
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    return DEFAULT_BUNDLE


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle file missing: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle file is not valid JSON: {path} ({exc})") from None


def load_bundle(path: str | os.PathLike | None = None) -> Bundle:
    """Read and check a bundle's metadata; the ONNX graph itself is opened by the predictor."""
    root = resolve_bundle_path(path)
    if not root.is_dir():
        hint = "" if path else f" (set {MODEL_ENV} or pass a model directory)"
        raise BundleError(f"model bundle not found: {root}{hint}")
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise BundleError(f"model bundle {root} is incomplete: missing {', '.join(missing)}")
    metadata = _read_json(root / "metadata.json")
    schema = _read_json(root / "schema.json")
    thresholds = _read_json(root / "thresholds.json")
    if metadata.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle {root} has format {metadata.get('format')!r}; this version reads {BUNDLE_FORMAT}")
    if schema_digest(schema) != schema_digest(schema_dict()):
        raise BundleError(
            f"bundle {root} was trained for other labels (schema {schema_digest(schema)}, "
            f"installed {schema_digest(schema_dict())}); retrain or install the matching kefu-router"
        )
    traits = thresholds.get("customer_type", {})
    if set(traits) != set(CUSTOMER_TYPE.labels):
        raise BundleError(f"bundle {root}: thresholds.json must give one threshold per customer_type trait")
    for key in ("max_length", "max_context_turns"):
        if not isinstance(metadata.get(key), int):
            raise BundleError(f"bundle {root}: metadata.json lacks integer {key!r}")
    temperatures = thresholds.get("temperature", {})
    softmax_heads = {h.name for h in HEADS if not h.multi_label}
    if not isinstance(temperatures, dict) or not set(temperatures) <= softmax_heads or not all(
        isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in temperatures.values()
    ):
        raise BundleError(f"bundle {root}: thresholds.json 'temperature' must map {sorted(softmax_heads)} to positive numbers")
    return Bundle(root, metadata, schema, {t: float(v) for t, v in traits.items()},
                  {h: float(t) for h, t in temperatures.items()})


def write_bundle_files(root: Path, metadata: dict, thresholds: dict[str, float],
                       temperatures: dict[str, float] | None = None) -> None:
    """Write schema, thresholds (and temperatures) and metadata (export writes the ONNX and tokenizer files)."""
    root.mkdir(parents=True, exist_ok=True)
    dump = lambda name, obj: (root / name).write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    dump("schema.json", schema_dict())
    dump("thresholds.json", {"customer_type": thresholds, **({"temperature": temperatures} if temperatures else {})})
    dump("metadata.json", {"format": BUNDLE_FORMAT, "schema_digest": schema_digest(), **metadata})
