"""Route a conversation to a playbook from the model's per-turn predictions.

    router = Router()                       # packaged playbooks.yaml (or a path / PlaybookSet)
    decision = router.route(predictions)    # Predictor.predict outputs for the CUSTOMER turns, oldest first
    decision.playbook.id, decision.needs_human_review, decision.reasons, decision.aggregate

Aggregation (shared/spec/labels.md, "Conversation level"):
- emotion: the most severe emotion of the last `window` customer turns
  (kefu_router.labels.EMOTION_SEVERITY), with its trend: the latest turn
  against the one before, on distress (angry > anxious > satisfied = neutral;
  turning satisfied is not "worsening");
- intent: the latest substantive intent. Fillers (acknowledgements such as
  好的/对/嗯 and pings such as 在吗) keep the topic. A prediction may carry the
  turn's `text` (as `kefu-router predict` prints it); with it fillers are
  recognised by their text, without it every chitchat turn counts as a filler;
- customer types: every trait seen in the conversation, with its best score
  and the number of turns that showed it;
- confidence: min(emotion score, intent score) of the turns that gave them.

The first rule whose conditions all hold wins. `needs_human_review` is set
when that rule tests low confidence, or when the confidence is below
`review_below` (default: the lowest `confidence_below` in the file), so an
angry but unclear conversation keeps its escalation and is still flagged.
Pure Python + pydantic: no web framework, no model; playbooks are validated in
kefu_router.playbooks.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, EMOTION_SEVERITY, INTENT
from kefu_router.playbooks import (
    EmotionLabel,
    Playbook,
    PlaybookError,
    PlaybookSet,
    TraitLabel,
    Trend,
    When,
    load_playbooks,
)

__all__ = [
    "Router", "RouteDecision", "ConversationSignals", "aggregate", "is_filler", "load_playbooks",
    "Playbook", "PlaybookError", "PlaybookSet", "RECENT_TURNS",
]

RECENT_TURNS = 5  # customer turns that count as "recent" for emotion
# Texts that acknowledge or ping without opening a topic (compared after dropping punctuation and case).
FILLERS = frozenset(
    "好的 好 好滴 好嘞 好吧 好的呢 嗯 嗯嗯 恩 恩恩 嗯呢 哦 哦哦 噢 喔 对 对的 对对 是 是的 是滴 行 行吧 可以 "
    "ok okay 知道了 明白 明白了 了解 收到 没问题 在吗 在不在 在么 在嘛 人呢".split()
)
_DISTRESS_FLOOR = EMOTION_SEVERITY["satisfied"]  # satisfied and neutral are equally calm for the trend


class _Top(BaseModel):
    label: str
    score: float = Field(ge=0, le=1)


class _TurnPrediction(BaseModel):
    """The fields of a Predictor.predict output that routing reads (others are ignored)."""

    model_config = ConfigDict(extra="ignore")
    emotion: _Top
    intent: _Top
    customer_type: list[_Top] = Field(default_factory=list)
    text: Optional[str] = None


class LabelScore(BaseModel):
    label: str
    zh: str
    score: float
    turn: int = Field(description="customer turn (1 = the conversation's first customer message) it comes from")


class TraitScore(BaseModel):
    label: TraitLabel
    zh: str
    score: float = Field(description="best score over the conversation")
    turns: int = Field(description="customer turns that showed the trait")


class ConversationSignals(BaseModel):
    """The conversation-level reading that rules match on."""

    turns: int = Field(description="customer turns seen")
    emotion: LabelScore
    emotion_trend: Trend
    intent: LabelScore
    customer_types: list[TraitScore]
    confidence: float = Field(description="min(emotion score, intent score)")
    emotions: list[EmotionLabel] = Field(description="emotion of every customer turn, oldest first")
    fillers: list[int] = Field(description="customer turns taken as fillers that keep the topic")


class RouteDecision(BaseModel):
    playbook: Playbook
    rule: str = Field(description="id of the rule that fired")
    needs_human_review: bool
    reasons: list[str]
    aggregate: ConversationSignals


def is_filler(text: str) -> bool:
    """True for acknowledgements and pings such as 好的, 对对, 嗯嗯嗯, 在吗? that carry no topic."""
    core = "".join(ch for ch in text.lower() if not ch.isspace() and unicodedata.category(ch)[0] not in "PS")
    return core in FILLERS or (len(set(core)) == 1 and core[0] in "嗯恩哦噢喔好对是行")


def _parse(predictions: Sequence[dict]) -> list[_TurnPrediction]:
    turns = []
    for i, pred in enumerate(predictions):
        try:
            turn = _TurnPrediction.model_validate(pred)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"predictions[{i}].{where}: {first['msg']}") from None
        for head, label in ((EMOTION, turn.emotion.label), (INTENT, turn.intent.label)):
            if label not in head.label2id:
                raise ValueError(f"predictions[{i}].{head.name}.label: unknown label {label!r}")
        for trait in turn.customer_type:
            if trait.label not in CUSTOMER_TYPE.label2id:
                raise ValueError(f"predictions[{i}].customer_type: unknown trait {trait.label!r}")
        turns.append(turn)
    return turns


def _distress(emotion: str) -> int:
    return max(EMOTION_SEVERITY[emotion] - _DISTRESS_FLOOR, 0)


def aggregate(predictions: Sequence[dict], window: int = RECENT_TURNS) -> ConversationSignals:
    """Conversation-level emotion, trend, intent and customer types from per-turn predictions."""
    turns = _parse(predictions)
    if not turns:
        raise ValueError("no customer turns to route")
    n = len(turns)
    recent = range(max(n - window, 0), n)
    # Most severe recent emotion; among equals, the latest turn supplies the score.
    top = max(recent, key=lambda i: (EMOTION_SEVERITY[turns[i].emotion.label], i))
    before, last = _distress(turns[n - 2].emotion.label) if n > 1 else None, _distress(turns[-1].emotion.label)
    trend = "stable" if before is None or before == last else ("worsening" if last > before else "improving")

    def filler(t: _TurnPrediction) -> bool:
        return is_filler(t.text) if t.text is not None else t.intent.label == "chitchat"

    fillers = [i for i in range(n) if filler(turns[i])]
    topic = next((i for i in reversed(range(n)) if i not in fillers), n - 1)

    traits: dict[str, list[float]] = {}
    for t in turns:
        for trait in t.customer_type:
            traits.setdefault(trait.label, []).append(trait.score)
    customer_types = [
        TraitScore(label=label, zh=CUSTOMER_TYPE.zh_name(label), score=max(traits[label]), turns=len(traits[label]))
        for label in CUSTOMER_TYPE.labels
        if label in traits
    ]
    emotion, intent = turns[top].emotion, turns[topic].intent
    return ConversationSignals(
        turns=n,
        emotion=LabelScore(label=emotion.label, zh=EMOTION.zh_name(emotion.label), score=emotion.score, turn=top + 1),
        emotion_trend=trend,
        intent=LabelScore(label=intent.label, zh=INTENT.zh_name(intent.label), score=intent.score, turn=topic + 1),
        customer_types=customer_types,
        confidence=min(emotion.score, intent.score),
        emotions=[t.emotion.label for t in turns],
        fillers=[i + 1 for i in fillers],
    )


def _match(when: When, s: ConversationSignals) -> list[str] | None:
    """Why each condition holds, or None as soon as one does not."""
    why = []
    if when.always:
        return ["no earlier rule matched"]
    if when.emotion_in is not None:
        if s.emotion.label not in when.emotion_in:
            return None
        why.append(f"emotion {s.emotion.label}")
    if when.emotion_trend is not None:
        if s.emotion_trend != when.emotion_trend:
            return None
        why.append(f"emotion {when.emotion_trend}")
    if when.recent_count is not None:
        rc = when.recent_count
        last = s.emotions[-rc.window :]
        hits = sum(e == rc.emotion for e in last)
        if hits < rc.at_least:
            return None
        why.append(f"{rc.emotion} in {hits} of the last {len(last)} customer turns")
    if when.intent_in is not None:
        if s.intent.label not in when.intent_in:
            return None
        why.append(f"intent {s.intent.label}")
    if when.customer_type_any is not None:
        seen = [t.label for t in s.customer_types if t.label in when.customer_type_any]
        if not seen:
            return None
        why.append(f"customer type {', '.join(seen)}")
    if when.confidence_below is not None:
        if s.confidence >= when.confidence_below:
            return None
        why.append(f"confidence {s.confidence:.2f} < {when.confidence_below}")
    return why


class Router:
    """Playbooks loaded and validated once; `route` is pure and safe to call from several threads."""

    def __init__(
        self,
        playbooks: PlaybookSet | str | os.PathLike | None = None,
        *,
        window: int = RECENT_TURNS,
        review_below: float | None = None,
    ):
        self.playbooks = playbooks if isinstance(playbooks, PlaybookSet) else load_playbooks(playbooks)
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        thresholds = [r.when.confidence_below for r in self.playbooks.rules if r.when.confidence_below is not None]
        self.review_below = review_below if review_below is not None else min(thresholds, default=0.0)

    def route(self, predictions: Sequence[dict]) -> RouteDecision:
        """Pick the playbook for a conversation from its customer turns' predictions, oldest first."""
        signals = aggregate(predictions, self.window)
        for rule in self.playbooks.rules:
            why = _match(rule.when, signals)
            if why is not None:
                break
        else:  # pragma: no cover - load_playbooks guarantees a final catch-all
            raise PlaybookError("no rule matched and the playbooks file has no catch-all")
        review = rule.when.confidence_below is not None or signals.confidence < self.review_below
        return RouteDecision(
            playbook=self.playbooks.playbooks[rule.playbook],
            rule=rule.id,
            needs_human_review=review,
            reasons=[
                *_describe(signals, self.window),
                *([f"confidence {signals.confidence:.2f} below {self.review_below}: a person should check"] if review else []),
                f"rule {rule.id} -> {rule.playbook}: {'; '.join(why)}",
            ],
            aggregate=signals,
        )


def _describe(s: ConversationSignals, window: int) -> list[str]:
    """The predictions behind the aggregate, one line per signal."""
    span = f"customer turns {max(s.turns - window, 0) + 1}-{s.turns}" if s.turns > 1 else "customer turn 1"
    kept = [t for t in s.fillers if t > s.intent.turn]
    topic = f"; later turn(s) {', '.join(map(str, kept))} are fillers and keep the topic" if kept else ""
    change = f" ({s.emotions[-2]} -> {s.emotions[-1]})" if s.turns > 1 else ""
    traits = ", ".join(f"{t.label} {t.score:.2f} ({t.turns} turn{'s' if t.turns > 1 else ''})" for t in s.customer_types)
    return [
        f"emotion {s.emotion.label} {s.emotion.score:.2f} from customer turn {s.emotion.turn}, "
        f"the most severe of {span}; trend {s.emotion_trend}{change}",
        f"intent {s.intent.label} {s.intent.score:.2f} from customer turn {s.intent.turn}{topic}",
        f"customer types: {traits or 'none over threshold'}",
    ]
