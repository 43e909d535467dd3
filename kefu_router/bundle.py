"""The exported model bundle: one directory that the runtime needs and nothing else.

    model.onnx         fp32 graph, dynamic batch and sequence axes
    model.int8.onnx    statically quantised copy (the default at runtime; same result in any batch)
    tokenizer.json     `tokenizers` file
    schema.json        label ids in logit order (kefu_router.labels.schema_dict)
    thresholds.json    per-trait decision thresholds for customer_type and, when fitted, the
                       softmax temperatures of emotion and intent (1 when absent)
    metadata.json      format, version, base model, data fingerprint, input limits, metrics, parity

`load_bundle` checks each JSON file against its pydantic model (kefu_router.bundle_files) and the
schema against the installed labels; `Predictor` checks the graph's outputs and token limit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from kefu_router.bundle_files import BUNDLE_FORMAT, MetadataFile, SchemaFile, ThresholdsFile
from kefu_router.labels import schema_dict, schema_digest
from kefu_router.validation import problems

FILES = ("tokenizer.json", "schema.json", "thresholds.json", "metadata.json")
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
MODEL_ENV = "KEFU_ROUTER_MODEL"
# The bundled models, found beside the package in a source checkout: `default` (fast) and, where
# shipped, `accurate` (the larger teacher). `--model accurate` or KEFU_ROUTER_MODEL=accurate selects it.
BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"
NAMED_BUNDLES = ("default", "accurate")
DEFAULT_BUNDLE = BUNDLED_MODELS / "default"


class BundleError(RuntimeError):
    """A bundle that is missing, incomplete, corrupt or made for another label schema."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    metadata: dict
    schema: dict
    thresholds: dict[str, float]
    temperatures: dict[str, float] = field(default_factory=dict)  # softmax head -> T; logits / T
    review_below: float | None = None  # fitted review threshold (thresholds.json `review`); None: the playbooks' default

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
    """An explicit path, else $KEFU_ROUTER_MODEL, else the bundled default model. The names in
    `NAMED_BUNDLES` ("default", "accurate") mean the bundled models unless a directory of that
    name exists where they are given."""
    chosen = path or os.environ.get(MODEL_ENV) or "default"
    if str(chosen) in NAMED_BUNDLES and not Path(chosen).is_dir():
        return BUNDLED_MODELS / str(chosen)
    return Path(chosen)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle file missing: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle file is not valid JSON: {path} ({exc})") from None


def _validated(root: Path, name: str, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(_read_json(root / name))
    except ValidationError as exc:
        raise BundleError(f"bundle {root}: {name}: {problems(exc)}") from None


def load_bundle(path: str | os.PathLike | None = None) -> Bundle:
    """Read a bundle and check its JSON files (kefu_router.bundle_files); the predictor opens and checks the graph.

    Raises BundleError, with one line naming the file and field, for a bundle that is missing,
    incomplete, not valid JSON, fails its file models, or was made for other labels.
    """
    root = resolve_bundle_path(path)
    if not root.is_dir():
        hint = f" (bundled names: {', '.join(NAMED_BUNDLES)}; or set {MODEL_ENV} or pass a model directory)"
        if root.parent == BUNDLED_MODELS and root.name in NAMED_BUNDLES:
            hint = " (the bundled models ship in a source checkout of kefu-router, not in the wheel)"
        raise BundleError(f"model bundle not found: {root}{hint}")
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise BundleError(f"model bundle {root} is incomplete: missing {', '.join(missing)}")
    metadata = _validated(root, "metadata.json", MetadataFile)
    schema = _validated(root, "schema.json", SchemaFile).model_dump()
    thresholds = _validated(root, "thresholds.json", ThresholdsFile)
    digest, installed = schema_digest(schema), schema_digest(schema_dict())
    if digest != installed:
        raise BundleError(
            f"bundle {root} was trained for other labels (schema.json digest {digest}, "
            f"installed {installed}); retrain or install the matching kefu-router"
        )
    if metadata.schema_digest not in (None, digest):
        raise BundleError(f"bundle {root}: metadata.json: schema_digest {metadata.schema_digest!r} does not match schema.json ({digest})")
    temperatures = {h: t for h, t in thresholds.temperature.model_dump().items() if t is not None}
    review_below = thresholds.review.below if thresholds.review else None
    return Bundle(root, metadata.model_dump(), schema, thresholds.customer_type.model_dump(), temperatures, review_below)


def write_bundle_files(root: Path, metadata: dict, thresholds: dict[str, float],
                       temperatures: dict[str, float] | None = None, review: dict | None = None) -> None:
    """Write schema, thresholds (and temperatures) and metadata (export writes the ONNX and tokenizer files)."""
    root.mkdir(parents=True, exist_ok=True)
    dump = lambda name, obj: (root / name).write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    dump("schema.json", schema_dict())
    dump("thresholds.json", {"customer_type": thresholds, **({"temperature": temperatures} if temperatures else {}),
                             **({"review": review} if review else {})})
    dump("metadata.json", {"format": BUNDLE_FORMAT, "schema_digest": schema_digest(), **metadata})
