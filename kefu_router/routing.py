"""Route a conversation to a playbook from the model's per-turn predictions.

    router = Router()                       # packaged playbooks.yaml (or a path / PlaybookSet)
    decision = router.route(predictions)    # Predictor.predict outputs for the CUSTOMER turns, oldest first
    decision.playbook.id, decision.needs_human_review, decision.reasons, decision.aggregate
    router.route_each(predictions)          # the decision after each customer turn, in linear work

    state = router.state()                  # or follow a conversation as it streams (batch tagging):
    router.verdict(state.add(prediction))   # O(window) time and memory per turn, however long it gets

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
- confidence: min(emotion score, intent score) of the turns that gave them;
- `emotions` and `fillers` list the latest turns only (the last `window`, or
  more when a rule counts over more), so a reading is O(window) in size however
  long the conversation.

All of this is computed by one running aggregator, `ConversationState`, that
takes the customer turns one at a time; `aggregate` and `route` simply run it
over the whole conversation, so there is one definition of the semantics.

From raw turns (role, text) to a decision, as `kefu-router route` and
`POST /v1/route` do it: kefu_router.conversation.

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
from collections import deque
from typing import NamedTuple, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, EMOTION_SEVERITY, INTENT
from kefu_router.playbooks import (
    EmotionLabel,
    Playbook,
    PlaybookError,
    PlaybookSet,
    Rule,
    TraitLabel,
    Trend,
    When,
    load_playbooks,
)

__all__ = [
    "Router", "RouteDecision", "Verdict", "ConversationSignals", "ConversationState", "aggregate",
    "is_filler", "load_playbooks", "Playbook", "PlaybookError", "PlaybookSet", "RECENT_TURNS",
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
    emotions: list[EmotionLabel] = Field(
        description="emotion of the latest customer turns, oldest first: the last `window` (more when a rule counts "
        "over more turns), all of them in a shorter conversation; every turn's own labels are in the per-turn predictions"
    )
    fillers: list[int] = Field(description="those latest customer turns that were taken as fillers keeping the topic")


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


def _parse(pred: dict, i: int) -> _TurnPrediction:
    """One customer turn's prediction, checked; errors name `predictions[i]` and the field."""
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
    return turn


def _distress(emotion: str) -> int:
    return max(EMOTION_SEVERITY[emotion] - _DISTRESS_FLOOR, 0)


class ConversationState:
    """The conversation signals, brought up to date one customer turn at a time.

    This running aggregator is the one definition of the aggregation: `aggregate`,
    `Router.route`, `Router.route_each` and batch tagging all run it. `add` costs
    O(window) and the state stays O(window) in size however long the conversation:
    the last `window` turns' emotions (for the most severe recent one), the
    emotion and filler flag of the last `keep` turns (trend, recent-count rules
    and the `emotions`/`fillers` it reports), the latest substantive intent and,
    per trait, its best score and number of turns. Picklable.
    """

    def __init__(self, window: int = RECENT_TURNS, keep: int = 0):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.turns = 0
        self._recent: deque = deque(maxlen=window)  # (severity, turn index, label, score)
        self._last: deque = deque(maxlen=max(keep, window, 2))  # (emotion label, filler?) of the latest turns
        self._topic: tuple | None = None  # (turn index, label, score) of the latest substantive intent
        self._latest: tuple | None = None  # the same for the latest turn, filler or not
        self._traits: dict[str, tuple[float, int]] = {}  # label -> (best score, turns)

    @property
    def keep(self) -> int:
        return self._last.maxlen

    def add(self, prediction: dict) -> "ConversationState":
        """Take in the next customer turn's prediction (a Predictor.predict output, optionally with `text`)."""
        turn = _parse(prediction, self.turns)
        i, emotion, intent = self.turns, turn.emotion, turn.intent
        filler = is_filler(turn.text) if turn.text is not None else intent.label == "chitchat"
        self.turns += 1
        self._recent.append((EMOTION_SEVERITY[emotion.label], i, emotion.label, emotion.score))
        self._last.append((emotion.label, filler))
        self._latest = (i, intent.label, intent.score)
        if not filler:
            self._topic = self._latest
        for trait in turn.customer_type:
            best = self._traits.get(trait.label)
            self._traits[trait.label] = (trait.score, 1) if best is None else (max(best[0], trait.score), best[1] + 1)
        return self

    def _reading(self) -> "_Reading":
        """What the rules test."""
        if not self.turns:
            raise ValueError("no customer turns to route")
        # Most severe recent emotion; among equals, the latest turn supplies the score.
        _, top, emotion, emotion_score = max(self._recent, key=lambda r: (r[0], r[1]))
        recent = tuple(label for label, _ in self._last)
        before = _distress(recent[-2]) if self.turns > 1 else None
        last = _distress(recent[-1])
        trend = "stable" if before is None or before == last else ("worsening" if last > before else "improving")
        topic, intent, intent_score = self._topic or self._latest  # all fillers: the latest turn
        return _Reading(
            emotion=emotion, emotion_turn=top, emotion_score=emotion_score, trend=trend, recent=recent,
            intent=intent, intent_turn=topic, intent_score=intent_score,
            traits=tuple(label for label in CUSTOMER_TYPE.labels if label in self._traits),
            confidence=min(emotion_score, intent_score),
        )

    def signals(self) -> ConversationSignals:
        """The conversation-level reading after the turns added so far."""
        return self._signals(self._reading())

    def _signals(self, r: "_Reading") -> ConversationSignals:
        first = self.turns - len(self._last) + 1  # customer turn of the oldest kept one
        return ConversationSignals(
            turns=self.turns,
            emotion=LabelScore(label=r.emotion, zh=EMOTION.zh_name(r.emotion), score=r.emotion_score, turn=r.emotion_turn + 1),
            emotion_trend=r.trend,
            intent=LabelScore(label=r.intent, zh=INTENT.zh_name(r.intent), score=r.intent_score, turn=r.intent_turn + 1),
            customer_types=[
                TraitScore(label=label, zh=CUSTOMER_TYPE.zh_name(label), score=self._traits[label][0], turns=self._traits[label][1])
                for label in r.traits
            ],
            confidence=r.confidence,
            emotions=list(r.recent),
            fillers=[first + k for k, (_, filler) in enumerate(self._last) if filler],
        )


class _Reading(NamedTuple):
    emotion: str
    emotion_turn: int  # 0-based
    emotion_score: float
    trend: str
    recent: tuple[str, ...]  # emotions of the latest `keep` customer turns, oldest first
    intent: str
    intent_turn: int  # 0-based
    intent_score: float
    traits: tuple[str, ...]  # traits seen, in label order
    confidence: float


def aggregate(predictions: Sequence[dict], window: int = RECENT_TURNS) -> ConversationSignals:
    """Conversation-level emotion, trend, intent and customer types from per-turn predictions."""
    state = ConversationState(window)
    for pred in predictions:
        state.add(pred)
    return state.signals()


def _match(when: When, r: _Reading) -> list[str] | None:
    """Why each condition holds, or None as soon as one does not."""
    why = []
    if when.always:
        return ["no earlier rule matched"]
    if when.emotion_in is not None:
        if r.emotion not in when.emotion_in:
            return None
        why.append(f"emotion {r.emotion}")
    if when.latest_emotion_in is not None:
        if r.recent[-1] not in when.latest_emotion_in:
            return None
        why.append(f"latest customer turn {r.recent[-1]}")
    if when.emotion_trend is not None:
        if r.trend != when.emotion_trend:
            return None
        why.append(f"emotion {when.emotion_trend}")
    if when.recent_count is not None:
        rc = when.recent_count
        last = r.recent[-rc.window :]
        hits = sum(e == rc.emotion for e in last)
        if hits < rc.at_least:
            return None
        why.append(f"{rc.emotion} in {hits} of the last {len(last)} customer turns")
    if when.intent_in is not None:
        if r.intent not in when.intent_in:
            return None
        why.append(f"intent {r.intent}")
    if when.customer_type_any is not None:
        seen = [t for t in r.traits if t in when.customer_type_any]
        if not seen:
            return None
        why.append(f"customer type {', '.join(seen)}")
    if when.confidence_below is not None:
        if r.confidence >= when.confidence_below:
            return None
        why.append(f"confidence {r.confidence:.2f} < {when.confidence_below}")
    return why


class Verdict(NamedTuple):
    """The part of a RouteDecision that batch tagging keeps."""

    playbook: str
    rule: str
    needs_human_review: bool


class Router:
    """Playbooks loaded and validated once; routing is pure and safe to call from several threads."""

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
        # How many of the latest turns the state keeps: the window, the trend's two, each recent_count's window.
        self._keep = max([window, 2, *(r.when.recent_count.window for r in self.playbooks.rules if r.when.recent_count)])

    def state(self) -> ConversationState:
        """An empty running state sized for this router: `add` each customer turn's prediction to it, then
        `decide` (the full decision) or `verdict` (playbook, rule and review flag only, cheaper)."""
        return ConversationState(self.window, self._keep)

    def route(self, predictions: Sequence[dict]) -> RouteDecision:
        """Pick the playbook for a conversation from its customer turns' predictions, oldest first."""
        state = self.state()
        for pred in predictions:
            state.add(pred)
        return self.decide(state)

    def route_each(self, predictions: Sequence[dict]) -> list[RouteDecision]:
        """The decision after each customer turn, equal to `[route(predictions[:i + 1]) for i ...]`, in O(n * window)."""
        state = self.state()
        return [self.decide(state.add(pred)) for pred in predictions]

    def _first_match(self, state: ConversationState) -> tuple[_Reading, Rule, list[str], bool]:
        """The reading, the first rule that matches it, why, and whether a person should review."""
        if state.window != self.window or state.keep < self._keep:
            raise ValueError("this conversation state was not made by this router (use Router.state())")
        reading = state._reading()
        for rule in self.playbooks.rules:
            why = _match(rule.when, reading)
            if why is not None:
                review = rule.when.confidence_below is not None or reading.confidence < self.review_below
                return reading, rule, why, review
        raise PlaybookError("no rule matched and the playbooks file has no catch-all")  # pragma: no cover - load_playbooks guarantees one

    def verdict(self, state: ConversationState) -> Verdict:
        """Playbook id, rule id and review flag of `decide(state)`, without building reasons and aggregate."""
        _, rule, _, review = self._first_match(state)
        return Verdict(rule.playbook, rule.id, review)

    def decide(self, state: ConversationState) -> RouteDecision:
        """The decision for the customer turns added to `state` so far: `route` over them."""
        reading, rule, why, review = self._first_match(state)
        signals = state._signals(reading)
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
    kept = range(s.intent.turn + 1, s.turns + 1)  # every turn after the topic's is a filler
    listed = ", ".join(map(str, kept)) if len(kept) <= 5 else f"{kept[0]}-{kept[-1]}"
    topic = f"; later turn(s) {listed} are fillers and keep the topic" if kept else ""
    change = f" ({s.emotions[-2]} -> {s.emotions[-1]})" if s.turns > 1 else ""
    traits = ", ".join(f"{t.label} {t.score:.2f} ({t.turns} turn{'s' if t.turns > 1 else ''})" for t in s.customer_types)
    return [
        f"emotion {s.emotion.label} {s.emotion.score:.2f} from customer turn {s.emotion.turn}, "
        f"the most severe of {span}; trend {s.emotion_trend}{change}",
        f"intent {s.intent.label} {s.intent.score:.2f} from customer turn {s.intent.turn}{topic}",
        f"customer types: {traits or 'none over threshold'}",
    ]
