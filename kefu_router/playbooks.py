"""Playbooks and routing rules: one YAML file, validated once at start-up.

The packaged `playbooks.yaml` is the default; `$KEFU_ROUTER_PLAYBOOKS` or an
explicit path selects another file. Every problem is reported with its exact
place in the file (`playbooks.yaml: rules[3].playbook: unknown playbook 'foo'`),
all of them at once, so a bad file is fixed in one pass.

Rule evaluation lives in `kefu_router.routing`; this module only describes and
checks the file. Left out on purpose: hot reloading (restart to pick up edits)
and rule conditions on raw text (rules see model labels and conversation
signals only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT

PLAYBOOKS_ENV = "KEFU_ROUTER_PLAYBOOKS"
DEFAULT_PLAYBOOKS = Path(__file__).resolve().parent / "playbooks.yaml"

EmotionLabel = Literal[EMOTION.labels]  # type: ignore[valid-type]
IntentLabel = Literal[INTENT.labels]  # type: ignore[valid-type]
TraitLabel = Literal[CUSTOMER_TYPE.labels]  # type: ignore[valid-type]
Trend = Literal["worsening", "improving", "stable"]


class PlaybookError(ValueError):
    """A playbooks file that is missing, not YAML, or breaks the schema; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Avoid(_Strict):
    phrase: str = Field(min_length=1, description="wording an agent should not use")
    instead: str = Field(min_length=1, description="what to say instead")


class Playbook(_Strict):
    id: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    name: str = Field(min_length=1, description="Chinese name shown to agents")
    queue: str = Field(min_length=1)
    priority: int = Field(ge=1, le=9, description="1 = most urgent")
    sla_seconds: int = Field(gt=0, description="first-response target")
    guidance: list[str] = Field(min_length=1, description="handling steps, in order")
    avoid: list[Avoid] = Field(default_factory=list, description="own phrases first, then the file's common_avoid")
    opening: str = Field(min_length=1, description="suggested first line")


class RecentCount(_Strict):
    """At least `at_least` of the last `window` customer turns carry `emotion`."""

    emotion: EmotionLabel
    window: int = Field(ge=1)
    at_least: int = Field(ge=1)

    @model_validator(mode="after")
    def _fits_window(self) -> "RecentCount":
        if self.at_least > self.window:
            raise ValueError(f"at_least ({self.at_least}) cannot exceed window ({self.window})")
        return self


class When(_Strict):
    """Conditions of one rule; all given conditions must hold."""

    emotion_in: Optional[list[EmotionLabel]] = Field(None, min_length=1, description="the most severe recent emotion")
    latest_emotion_in: Optional[list[EmotionLabel]] = Field(None, min_length=1, description="the latest customer turn's emotion")
    emotion_trend: Optional[Trend] = None
    recent_count: Optional[RecentCount] = None
    intent_in: Optional[list[IntentLabel]] = Field(None, min_length=1)
    customer_type_any: Optional[list[TraitLabel]] = Field(None, min_length=1)
    confidence_below: Optional[float] = Field(None, gt=0, le=1)
    always: Optional[bool] = None

    @model_validator(mode="after")
    def _meaningful(self) -> "When":
        given = [name for name, value in self if value is not None and name != "always"]
        if self.always is False:
            raise ValueError("always: false never matches; remove the rule or set always: true")
        if self.always and given:
            raise ValueError(f"always: true cannot be combined with {', '.join(given)}")
        if not self.always and not given:
            raise ValueError("no conditions; write always: true for a catch-all rule")
        return self


class Rule(_Strict):
    id: str = Field(min_length=1)
    playbook: str
    when: When


class _PlaybookFile(_Strict):
    version: int = Field(ge=1)
    common_avoid: list[Avoid] = Field(default_factory=list)
    playbooks: list[Playbook] = Field(min_length=1)
    rules: list[Rule] = Field(min_length=1)


class PlaybookSet(BaseModel):
    """A validated playbooks file: playbooks by id (file order) and the ordered rules."""

    model_config = ConfigDict(frozen=True)

    source: str
    version: int
    playbooks: dict[str, Playbook]
    rules: list[Rule]


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _cross_check(data: _PlaybookFile) -> list[str]:
    """Checks that span entries: unique ids, known playbooks, exactly one catch-all at the end."""
    errors = []
    for kind, items in (("playbooks", data.playbooks), ("rules", data.rules)):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.id in seen:
                errors.append(f"{kind}[{i}].id: duplicate id {item.id!r}")
            seen.add(item.id)
    known = {p.id for p in data.playbooks}
    last = len(data.rules) - 1
    for i, rule in enumerate(data.rules):
        if rule.playbook not in known:
            errors.append(f"rules[{i}].playbook: unknown playbook {rule.playbook!r}")
        if rule.when.always and i != last:
            errors.append(f"rules[{i}].when.always: a catch-all must be the last rule; the rules after it never fire")
    if not data.rules[last].when.always:
        errors.append(f"rules[{last}].when: the last rule must be the catch-all (always: true)")
    return errors


def resolve_playbooks_path(path: str | os.PathLike | None = None) -> Path:
    """An explicit path, else $KEFU_ROUTER_PLAYBOOKS, else the packaged playbooks.yaml."""
    if path:
        return Path(path)
    return Path(os.environ[PLAYBOOKS_ENV]) if os.environ.get(PLAYBOOKS_ENV) else DEFAULT_PLAYBOOKS


def load_playbooks(path: str | os.PathLike | None = None) -> PlaybookSet:
    """Read and validate a playbooks file; raise PlaybookError naming every bad field."""
    source = resolve_playbooks_path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlaybookError(f"playbooks file not found: {source}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlaybookError(f"{source.name}: not valid UTF-8 YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PlaybookError(f"{source.name}: (top level): expected a mapping with version, playbooks and rules")
    try:
        data = _PlaybookFile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            got = err.get("input")
            shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) and err["type"] != "missing" else ""
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source.name}: {_location(err['loc'])}: {message}{shown}")
        raise PlaybookError("\n".join(lines)) from None
    errors = _cross_check(data)
    if errors:
        raise PlaybookError("\n".join(f"{source.name}: {e}" for e in errors))
    playbooks = {}
    for pb in data.playbooks:
        own = {a.phrase for a in pb.avoid}
        merged = [*pb.avoid, *(a for a in data.common_avoid if a.phrase not in own)]
        playbooks[pb.id] = pb.model_copy(update={"avoid": merged})
    return PlaybookSet(source=str(source), version=data.version, playbooks=playbooks, rules=data.rules)
