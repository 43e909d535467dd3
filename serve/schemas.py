"""Request and response models of the HTTP API, with Chinese examples for the OpenAPI docs.

Validation here turns every malformed request into a 422 naming the field:
blank text, unknown role, wrong type, too many messages or turns (the
per-request limits are checked in the routes, where settings are known).
Prediction fields mirror `Predictor.predict`; the playbook and the aggregate
are the routing module's own models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kefu_router.labels import ROLES
from kefu_router.playbooks import Playbook, TraitLabel
from kefu_router.routing import ConversationSignals

Role = Literal[ROLES]  # type: ignore[valid-type]


def _usable_text(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or whitespace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains a lone surrogate and is not valid Unicode") from None
    return text


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role = Field(description="customer (买家) or agent (客服)")
    text: str = Field(description="message text; longer than the service's limit is cut and flagged")
    ts: Optional[datetime] = Field(None, description="send time, ISO 8601 or Unix seconds (accepted, not used yet)")

    _check_text = field_validator("text")(_usable_text)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="the message to classify")
    context: list[Turn] = Field(default_factory=list, description="earlier turns, oldest first")

    _check_text = field_validator("text")(_usable_text)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
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
        },
    )
    messages: list[MessageIn] = Field(min_length=1, description="one or many messages")


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
    emotion: HeadPrediction
    intent: HeadPrediction
    customer_type: list[TraitPrediction] = Field(description="traits over their threshold")
    customer_type_scores: dict[str, float]
    truncated: bool = Field(description="the text was longer than the limit and only its start was read")


class ClassifyResponse(BaseModel):
    model_version: str
    results: list[MessagePrediction]


class RouteRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "c-20240618-0001",
                    "turns": [
                        {"role": "customer", "text": "我买的杯子收到就是碎的"},
                        {"role": "agent", "text": "亲，非常抱歉，麻烦发一下照片"},
                        {"role": "customer", "text": "什么破东西 我要投诉你们"},
                    ],
                }
            ]
        },
    )
    conversation_id: Optional[str] = Field(None, max_length=200)
    turns: list[Turn] = Field(min_length=1, description="the conversation, oldest first; needs a customer turn")


class TurnPrediction(MessagePrediction):
    turn: int = Field(description="index of this customer turn in the request's `turns`")


class RouteResponse(BaseModel):
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
