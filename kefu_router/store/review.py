"""The review console's reads of the prediction log: what needs a person's eye, newest first.

    page = review_queue(store, QueueQuery(since, until, below=0.5, head="emotion"))
    page.items, page.reviewed, page.remaining

A message prediction is in the queue when its routing decision asked for human review
(`needs_human_review`) or its confidence is below `below`. Confidence per head: the top score for
emotion and intent; for customer type the least decided trait, min over traits of max(p, 1 - p);
with no head chosen, min(emotion, intent) as routing computes it. It is reviewed once it has label
feedback (any row in `feedback` naming it). Confidence lives in the JSON `scores` column, so the
newest `scan_limit` rows of the filter are read and tested here; `complete` is False when more were
left unread (narrow the date or the filters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import aliased

from kefu_router.store.database import Store, _as_dict, _utc
from kefu_router.store.tables import Feedback, Prediction

HEADS = ("emotion", "intent", "customer_type")
CONTEXT_TURNS = 3


def confidence(scores: Optional[dict], emotion: Optional[str], intent: Optional[str], head: Optional[str] = None) -> float:
    """A logged message prediction's confidence on `head` (None: min of emotion and intent), 0 when unknown."""
    scores = scores or {}
    if head == "customer_type":
        traits = (scores.get("customer_type") or {}).values()
        return min((max(p, 1 - p) for p in traits), default=1.0)
    emotion_score = (scores.get("emotion") or {}).get(emotion, 0.0)
    intent_score = (scores.get("intent") or {}).get(intent, 0.0)
    return {"emotion": emotion_score, "intent": intent_score}.get(head, min(emotion_score, intent_score))


@dataclass(frozen=True)
class QueueQuery:
    since: datetime
    until: datetime
    below: float  # confidence under which a prediction is queued
    head: Optional[str] = None  # emotion | intent | customer_type; None: any
    playbooks: Optional[tuple[str, ...]] = None  # the queue filter, as the playbook ids of that queue
    model_version: Optional[str] = None
    include_reviewed: bool = False


@dataclass
class ReviewPage:
    items: list[dict] = field(default_factory=list)
    reviewed: int = 0
    remaining: int = 0
    complete: bool = True


def review_queue(store: Store, q: QueueQuery, *, limit: int = 50, scan_limit: int = 5000) -> ReviewPage:
    """The queued message predictions for `q`, newest first (at most `limit`), with counts over the whole filter.

    Each item: the Prediction columns plus `confidence`, `playbook`/`rule` of its decision (None for
    /v1/classify), `final` (the latest label feedback or None) and `context` (earlier logged customer
    turns of its decision, oldest first: {turn, text_masked, emotion}). Raises StoreUnavailable.
    """
    message, decision = aliased(Prediction), aliased(Prediction)
    stmt = (select(message, decision.playbook, decision.rule).outerjoin(decision, message.decision_id == decision.id)
            .where(message.kind == "message", message.created_at >= _utc(q.since), message.created_at < _utc(q.until)))
    if q.model_version:
        stmt = stmt.where(message.model_version == q.model_version)
    if q.playbooks is not None:
        stmt = stmt.where(decision.playbook.in_(q.playbooks))
    stmt = stmt.order_by(message.created_at.desc(), message.id.desc()).limit(scan_limit + 1)
    page = ReviewPage()
    with store._session() as session:
        rows = session.execute(stmt).all()
        page.complete = len(rows) <= scan_limit
        queued = []
        for row, playbook, rule in rows[:scan_limit]:
            score = confidence(row.scores, row.emotion, row.intent, q.head)
            if row.needs_human_review or score < q.below:
                queued.append({**_as_dict(row), "confidence": score, "playbook": playbook, "rule": rule})
        finals = Store._latest_feedback(session, [r["id"] for r in queued], Feedback.prediction_id)
        for item in queued:
            item["final"] = finals.get(item["id"])
        page.reviewed = sum(item["final"] is not None for item in queued)
        page.remaining = len(queued) - page.reviewed
        page.items = [i for i in queued if q.include_reviewed or i["final"] is None][:limit]
        _add_context(session, page.items)
    return page


def _add_context(session, items: list[dict]) -> None:
    """Each item's earlier customer turns in the same routing decision (agents' turns are never logged)."""
    turns: dict[str, list[Prediction]] = {}
    for rows in _decision_messages(session, items):
        for row in rows:
            turns.setdefault(row.decision_id, []).append(row)
    for item in items:
        earlier = [r for r in turns.get(item["decision_id"], []) if item["turn"] is not None and r.turn < item["turn"]]
        item["context"] = [{"turn": r.turn, "text_masked": r.text_masked, "emotion": r.emotion}
                           for r in sorted(earlier, key=lambda r: r.turn)[-CONTEXT_TURNS:]]


def _decision_messages(session, items: list[dict]):
    """The message rows of the items' decisions: through the (conversation_id, turn) index where there is a
    conversation id; `decision_id` has no index of its own, so decisions without one cost a scan."""
    named = {i["decision_id"]: i["conversation_id"] for i in items if i["decision_id"] and i["conversation_id"]}
    unnamed = {i["decision_id"] for i in items if i["decision_id"] and not i["conversation_id"]}
    base = select(Prediction).where(Prediction.kind == "message")
    if named:
        yield session.scalars(base.where(Prediction.conversation_id.in_(set(named.values())),
                                         Prediction.decision_id.in_(named))).all()
    if unnamed:
        yield session.scalars(base.where(Prediction.decision_id.in_(unnamed))).all()


def model_versions(store: Store, since: datetime, until: datetime, limit: int = 50) -> list[str]:
    """Model versions that made message predictions in [since, until), for the console's filter."""
    with store._session() as session:
        return sorted(session.scalars(select(Prediction.model_version).distinct().where(
            Prediction.kind == "message", Prediction.created_at >= _utc(since), Prediction.created_at < _utc(until),
        ).limit(limit)).all())


def decision_view(store: Store, key: str) -> Optional[tuple[dict, list[dict]]]:
    """(decision row, its message rows by turn) for a routing decision id, one of its messages' ids, or a
    conversation id (its latest decision); None when the log has no such decision."""
    with store._session() as session:
        row = session.get(Prediction, key) if len(key) == 32 else None
        if row is not None and row.kind == "message":
            row = session.get(Prediction, row.decision_id) if row.decision_id else None
        if row is None:
            row = session.scalars(select(Prediction).where(Prediction.kind == "route", Prediction.conversation_id == key)
                                  .order_by(Prediction.created_at.desc()).limit(1)).first()
        if row is None:
            return None
        messages = session.scalars(select(Prediction).where(
            Prediction.kind == "message", Prediction.conversation_id == row.conversation_id, Prediction.decision_id == row.id,
        ).order_by(Prediction.turn)).all()
        return _as_dict(row), [_as_dict(m) for m in messages]
