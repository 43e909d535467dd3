"""Request and response models of the HTTP API, with Chinese examples for the OpenAPI docs.

The request models are built per service by `request_models(settings)`, so the
OpenAPI schema states every limit the service enforces and a request the schema
allows is a request the service accepts:
- a text has at least one visible character (`minLength` 1 and `pattern`: not only
  whitespace, control or format (zero-width) characters) and valid Unicode (no lone
  surrogates); its `maxLength` is the body limit: longer texts than `max_text_chars`
  are cut and flagged `truncated`, never rejected for their length;
- `maxItems`: `max_messages` messages, `max_turns` turns and context turns;
- a conversation for /v1/route `contains` a customer turn (checked in the route).
Every malformed request gets a 422 naming the field. Prediction fields mirror
`Predictor.predict`; the playbook and the aggregate are the routing module's own models.
"""

import functools
import re
import sys
import unicodedata
from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT, ROLES
from kefu_router.playbooks import Playbook, PlaybookError, TraitLabel, load_playbooks
from kefu_router.routing import ConversationSignals
from kefu_router.serve.settings import Settings

Role = Literal[ROLES]  # type: ignore[valid-type]
BLANK_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")  # controls, formats (zero-width, BOM, bidi marks), spaces


@functools.cache
def visible_character() -> re.Pattern:
    """One character outside BLANK_CATEGORIES and whitespace, as this Python's Unicode database has them.

    Its pattern is both the validator (a text must contain a match) and the OpenAPI `pattern`.
    Built once per process by scanning every code point (about 0.2 s).
    """
    blank = [ord(c) for c in map(chr, range(sys.maxunicode + 1))
             if c.isspace() or (not c.isprintable() and unicodedata.category(c) in BLANK_CATEGORIES)]
    ranges: list[list[int]] = []
    for code in blank:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    spans = (re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[^{''.join(spans)}]")


def _valid_unicode(value):
    """Before pydantic's own string checks, which would call a lone surrogate only 'not a valid string'."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text contains a lone surrogate and is not valid Unicode") from None
    return value


def _no_nul(value):
    """PostgreSQL cannot store NUL (U+0000) in text: a field that goes to the store refuses it (422 naming it)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains a NUL character (U+0000), which the store cannot keep")
    return value


# A string field that is written to the store (ids, keys): valid Unicode, no NUL.
# The schema says so too (an ECMA pattern), so clients and schemathesis know a NUL is refused.
StoreStr = Annotated[str, BeforeValidator(_valid_unicode), AfterValidator(_no_nul),
                     Field(json_schema_extra={"pattern": r"^[^\u0000]*$"})]


def _visible(text: str) -> str:
    if not visible_character().search(text):
        raise ValueError("text is empty or only whitespace, control or zero-width characters")
    return text


def _text(max_chars: int, description: str):
    return Annotated[str, Field(min_length=1, max_length=max_chars, description=description,
                                json_schema_extra={"pattern": visible_character().pattern}),
                     BeforeValidator(_valid_unicode), AfterValidator(_visible)]


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
UNIX_SECONDS = 2e10  # pydantic reads larger numbers as milliseconds: the limit keeps "Unix seconds" true


def _timestamp(value):
    """Only the two forms the schema names reach pydantic's datetime parsing (it also takes dates, numeric strings...)."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time such as 2024-06-18T10:00:00+08:00, or Unix seconds")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > UNIX_SECONDS:
        raise ValueError(f"Unix seconds must lie within ±{UNIX_SECONDS:.0e}")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp), WithJsonSchema({"anyOf": [
    {"type": "string", "format": "date-time"}, {"type": "number", "minimum": -UNIX_SECONDS, "maximum": UNIX_SECONDS}]})]

_CLASSIFY_EXAMPLES = [
    {"messages": [{"text": "这条裙子有L码吗"}]},
    {
        "messages": [
            {
                "text": "怎么还没到 明天就要用啊",
                "context": [
                    {"role": "customer", "text": "我的快递到哪了"},
                    {"role": "agent", "text": "亲，包裹已到杭州中转站"},
                ],
            },
            {"text": "能便宜点吗 别家更便宜"},
        ]
    },
]
_ROUTE_EXAMPLES = [
    {
        "conversation_id": "c-20240618-0001",
        "turns": [
            {"role": "customer", "text": "我买的杯子收到就是碎的"},
            {"role": "agent", "text": "亲，非常抱歉，麻烦发一下照片"},
            {"role": "customer", "text": "什么破东西 我要投诉你们"},
        ],
    }
]
_HAS_CUSTOMER_TURN = {"contains": {"type": "object", "properties": {"role": {"const": "customer"}}, "required": ["role"]}}


def request_models(settings: Settings) -> tuple[type[BaseModel], type[BaseModel]]:
    """(ClassifyRequest, RouteRequest) with the limits of these settings, in validation and in the schema."""
    cut = f"longer than {settings.max_text_chars} characters is cut and flagged `truncated`"

    class Turn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        role: Role = Field(description="customer (买家) or agent (客服)")
        text: _text(settings.max_body_bytes, f"message text; {cut}")
        ts: Optional[Timestamp] = Field(None, description="send time, RFC 3339 (ISO 8601) or Unix seconds (accepted, not used yet)")

    class MessageIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: _text(settings.max_body_bytes, f"the message to classify; {cut}")
        context: list[Turn] = Field(default_factory=list, max_length=settings.max_turns,
                                    description="earlier turns, oldest first")
        conversation_id: Optional[StoreStr] = Field(None, max_length=200, description="logged with the prediction, so "
                                               "feedback can name the message by conversation_id + turn")
        turn: Optional[int] = Field(None, ge=0, le=1_000_000, description="index of this message in its conversation")

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": _CLASSIFY_EXAMPLES})
        messages: list[MessageIn] = Field(min_length=1, max_length=settings.max_messages, description="one or many messages")

    class RouteRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": _ROUTE_EXAMPLES})
        conversation_id: Optional[StoreStr] = Field(None, max_length=200)
        turns: list[Turn] = Field(min_length=1, max_length=settings.max_turns, json_schema_extra=_HAS_CUSTOMER_TURN,
                                  description="the conversation, oldest first; needs a customer turn")

    return ClassifyRequest, RouteRequest


def _playbook_ids(settings: Settings) -> Optional[tuple[str, ...]]:
    """The configured playbook ids, for the feedback schema; None when the file is broken (start-up reports it)."""
    try:
        return tuple(load_playbooks(settings.playbooks).playbooks)
    except (PlaybookError, OSError):
        return None


_FEEDBACK_EXAMPLES = [
    {"prediction_id": "3f1c0b6e9d2a4c4f8e7a5b1d2c3e4f50", "emotion": "angry", "intent": "complaint",
     "customer_type": ["impatient"], "agent_id": "agent-017", "idempotency_key": "agent-017-20240618-0001"},
    {"conversation_id": "c-20240618-0001", "turn": 2, "playbook": "angry_escalation",
     "agent_id": "agent-017", "idempotency_key": "agent-017-20240618-0002"},
]
_LABEL_FIELDS = ("emotion", "intent", "customer_type", "playbook")
_FEEDBACK_SCHEMA = {"examples": _FEEDBACK_EXAMPLES, "allOf": [
    {"anyOf": [{"required": ["prediction_id"]}, {"required": ["conversation_id", "turn"]}]},
    {"anyOf": [{"required": [f]} for f in _LABEL_FIELDS]},
]}


def feedback_model(settings: Settings) -> type[BaseModel]:
    """FeedbackRequest: label ids from kefu_router.labels, playbook ids from the configured playbooks file."""
    ids = _playbook_ids(settings)
    PlaybookId = Literal[ids] if ids else str  # type: ignore[valid-type]
    Opaque = Annotated[StoreStr, Field(min_length=1, max_length=200)]

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra=_FEEDBACK_SCHEMA)
        # Not Optional: a field is left out, never null (a null would satisfy the schema's `required`).
        prediction_id: Annotated[str, Field(pattern="^[0-9a-f]{32}$")] = Field(  # type: ignore[assignment]
            None, description="a prediction_id from /v1/classify or /v1/route (a message's, or a routing decision's)")
        conversation_id: Opaque = Field(None, description="with `turn`, instead of prediction_id: the "  # type: ignore[assignment]
                                        "latest message prediction of that turn")
        turn: int = Field(None, ge=0, le=1_000_000)  # type: ignore[assignment]
        emotion: Literal[EMOTION.labels] = Field(None, description="the final emotion")  # type: ignore[valid-type]
        intent: Literal[INTENT.labels] = Field(None, description="the final intent")  # type: ignore[valid-type]
        customer_type: list[Literal[CUSTOMER_TYPE.labels]] = Field(  # type: ignore[valid-type]
            None, max_length=CUSTOMER_TYPE.size, description="the final customer traits ([] for none)")
        playbook: PlaybookId = Field(None, description="the final playbook of the conversation")
        agent_id: Opaque = Field(description="opaque id of the agent (not a name)")
        idempotency_key: Opaque = Field(description="unique per feedback; a retry with the same key changes nothing")

        @model_validator(mode="after")
        def _addressed_and_not_empty(self):
            if self.prediction_id is None and (self.conversation_id is None or self.turn is None):
                raise ValueError("name the message: prediction_id, or conversation_id and turn")
            if all(getattr(self, f) is None for f in _LABEL_FIELDS):
                raise ValueError("give at least one of emotion, intent, customer_type, playbook")
            if self.customer_type is not None:  # schema order, no repeats: equal sets compare equal
                self.customer_type = [t for t in CUSTOMER_TYPE.labels if t in set(self.customer_type)]
            return self

    return FeedbackRequest


class FeedbackResponse(BaseModel):
    feedback_id: int
    prediction_id: Optional[str] = Field(description="the message prediction the labels apply to")
    decision_id: Optional[str] = Field(description="the routing decision the playbook applies to")
    created_at: datetime
    replayed: bool = Field(description="true when an earlier request with this idempotency key committed it")


class HeadPrediction(BaseModel):
    label: str
    zh: str
    score: float
    scores: dict[str, float]


class TraitPrediction(BaseModel):
    label: TraitLabel
    zh: str
    score: float


class MessagePrediction(BaseModel):
    prediction_id: str = Field(description="id of this prediction in the log; send it with /v1/feedback")
    emotion: HeadPrediction
    intent: HeadPrediction
    customer_type: list[TraitPrediction] = Field(description="traits over their threshold")
    customer_type_scores: dict[str, float]
    truncated: bool = Field(description="the text was longer than the limit and only its start was read")


class ClassifyResponse(BaseModel):
    model_version: str
    results: list[MessagePrediction]


class TurnPrediction(MessagePrediction):
    turn: int = Field(description="index of this customer turn in the request's `turns`")


class RouteResponse(BaseModel):
    prediction_id: str = Field(description="id of this routing decision in the log; send it with /v1/feedback")
    conversation_id: Optional[str]
    model_version: str
    playbook: Playbook
    rule: str = Field(description="id of the rule that fired")
    needs_human_review: bool
    reasons: list[str] = Field(description="the predictions and the rule behind the decision ('customer turn k' = predictions[k-1])")
    aggregate: ConversationSignals
    predictions: list[TurnPrediction] = Field(description="one per customer turn, oldest first")


class ModelInfo(BaseModel):
    version: str
    precision: str
    max_length: int
    max_context_turns: int
    labels: dict = Field(description="per head: label ids in logit order, Chinese names, multi_label")
    thresholds: dict[str, float] = Field(description="customer_type decision thresholds")
    metrics: dict = Field(description="headline metrics recorded in the bundle")
    playbooks: dict = Field(description="source, version and ids of the loaded playbooks")
