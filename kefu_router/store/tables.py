"""The store's tables. Times are UTC; label ids are those of kefu_router.labels, playbook ids those of the playbooks file.

`predictions`: one row per message prediction (kind "message") and per routing decision (kind "route").
A message predicted inside /v1/route points at its decision through `decision_id` and carries that
decision's review flag. `feedback`: one row per accepted POST /v1/feedback; the latest row for a
prediction is the agent's final word.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # 32 random hex digits, the API's prediction_id
    kind: Mapped[str] = mapped_column(String(8))  # "message" or "route"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_version: Mapped[str] = mapped_column(String(100))
    conversation_id: Mapped[Optional[str]] = mapped_column(String(200))
    turn: Mapped[Optional[int]] = mapped_column(Integer)
    decision_id: Mapped[Optional[str]] = mapped_column(String(32))  # message rows of /v1/route: their decision
    # message rows
    emotion: Mapped[Optional[str]] = mapped_column(String(32))
    intent: Mapped[Optional[str]] = mapped_column(String(32))
    customer_type: Mapped[Optional[list]] = mapped_column(JSON)  # trait ids over their threshold, schema order
    scores: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # {head: {label: probability}}
    # route rows (and, copied, their message rows)
    playbook: Mapped[Optional[str]] = mapped_column(String(64))
    rule: Mapped[Optional[str]] = mapped_column(String(64))
    needs_human_review: Mapped[Optional[bool]] = mapped_column(Boolean)
    # only when configured: PII-masked text and HMAC-SHA256 (hex) of the normalised text
    text_masked: Mapped[Optional[str]] = mapped_column(Text)
    text_hmac: Mapped[Optional[str]] = mapped_column(String(64))

    __table_args__ = (Index("ix_predictions_conversation_turn", "conversation_id", "turn"),)


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_digest: Mapped[str] = mapped_column(String(64))  # sha256 of the request, to tell a retry from a reuse
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    agent_id: Mapped[str] = mapped_column(String(200))
    # what it corrects: a message prediction (labels) and/or a routing decision (playbook)
    prediction_id: Mapped[Optional[str]] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), index=True)
    decision_id: Mapped[Optional[str]] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), index=True)
    emotion: Mapped[Optional[str]] = mapped_column(String(32))
    intent: Mapped[Optional[str]] = mapped_column(String(32))
    customer_type: Mapped[Optional[list]] = mapped_column(JSON)
    playbook: Mapped[Optional[str]] = mapped_column(String(64))
