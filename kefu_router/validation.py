"""One-line reports of pydantic validation errors, for files and input read by the CLI and the runtime."""

from __future__ import annotations

import json

from pydantic import ValidationError


def problems(exc: ValidationError) -> str:
    """Every error as `field.path: message (got value)`, joined with "; " into one line."""
    out = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "top level"
        kind, value = err["type"], err.get("input")
        if kind in ("missing", "extra_forbidden"):
            out.append(f"{where}: {'missing' if kind == 'missing' else 'unknown key'}")
            continue
        message = "must be a JSON object" if kind in ("model_type", "dict_type") else err["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {message} (got {describe(value)})")
    return "; ".join(out)


def describe(value: object) -> str:
    """A short JSON-style description of a value: `null`, `5`, `"abc"`, `an array`, `an object`."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
