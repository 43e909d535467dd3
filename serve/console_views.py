"""What the console's conversation view shows, built from a pasted conversation or from the prediction log.

`parse_pasted` reads the textarea: the JSON body of POST /v1/route (or just its list of turns), or one
turn per line, `买家：…` / `客服：…` (also customer:/agent:). Either is then checked by the API's own
RouteRequest model, so the console refuses exactly what the API refuses. `conversation_view` turns
turns, predictions and a RouteDecision into the template's data: per buyer turn its labels, the
emotion trajectory as inline SVG, the playbook and the reasons, with why human review was or was not asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from pydantic import BaseModel, ValidationError

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, EMOTION_SEVERITY, INTENT
from kefu_router.routing import RouteDecision, Router

ROLE_NAMES = {"customer": "买家", "agent": "客服"}
HEAD_ZH = {"emotion": "情绪", "intent": "意图", "customer_type": "客户类型"}
ROLE_ALIASES = {"customer": "customer", "buyer": "customer", "买家": "customer", "顾客": "customer", "客户": "customer",
                "用户": "customer", "agent": "agent", "客服": "agent", "卖家": "agent", "商家": "agent"}


class ConsoleInputError(ValueError):
    """A pasted conversation the console cannot route; `problems` are (where, why) pairs shown on the page."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{where}: {why}" for where, why in problems))
        self.problems = problems


def parse_pasted(text: str, route_model: type[BaseModel]) -> tuple[list[tuple[str, str]], Optional[str]]:
    """((role, text) turns, conversation_id) of a pasted conversation; ConsoleInputError says what is wrong."""
    if not text.strip():
        raise ConsoleInputError([("对话 conversation", "是空的：请粘贴至少一轮买家消息 (empty: paste at least one customer turn)")])
    stripped = text.lstrip()
    if stripped[:1] in "[{":
        try:
            body = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConsoleInputError([(f"JSON 第 {exc.lineno} 行第 {exc.colno} 列", f"不是有效的 JSON ({exc.msg})")]) from None
        body = {"turns": body} if isinstance(body, list) else body
    else:
        body = {"turns": _lines(text)}
    try:
        request = route_model.model_validate(body)
    except ValidationError as exc:
        raise ConsoleInputError([(_where(e["loc"]), e["msg"].removeprefix("Value error, "))
                                 for e in exc.errors(include_url=False)]) from None
    turns = [(t.role, t.text) for t in request.turns]
    if not any(role == "customer" for role, _ in turns):
        raise ConsoleInputError([("turns", "没有买家消息 (the conversation has no customer turn)")])
    return turns, request.conversation_id


def _lines(text: str) -> list[dict]:
    """`角色：内容` per line (full- or half-width colon); blank lines are skipped."""
    turns, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        role, sep, said = line.replace("：", ":", 1).partition(":")
        if not sep:
            problems.append((f"第 {number} 行", "缺少角色：每行写成「买家：…」或「客服：…」 (expected 'role: text')"))
        elif role.strip().lower() not in ROLE_ALIASES:
            problems.append((f"第 {number} 行", f"未知角色「{role.strip()[:20]}」：可用 买家/customer、客服/agent (unknown role)"))
        else:
            turns.append({"role": ROLE_ALIASES[role.strip().lower()], "text": said.strip()})
    if problems:
        raise ConsoleInputError(problems)
    return turns


def _where(loc: tuple) -> str:
    """'turns[1].role' as 第 2 轮 (turns[1].role)."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if len(loc) >= 2 and loc[0] == "turns" and isinstance(loc[1], int):
        return f"第 {loc[1] + 1} 轮 ({path})"
    return path or "对话 conversation"


@dataclass
class TurnView:
    role: str
    text: Optional[str]  # None: the log holds no text for it
    prediction: Optional[dict] = None  # Predictor.predict's shape, for buyer turns
    truncated: bool = False
    prediction_id: Optional[str] = None
    turn: Optional[int] = None  # its index in the conversation


@dataclass
class ConversationView:
    turns: list[TurnView]
    decision: RouteDecision
    review: str  # why human review was or was not asked
    chart: dict = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    logged: Optional[dict] = None  # the decision row, when opened from the prediction log


def review_explanation(decision: RouteDecision, router: Router) -> str:
    """Why the router did or did not ask for human review (routing.Router._first_match's two conditions)."""
    rule = next(r for r in router.playbooks.rules if r.id == decision.rule)
    confidence, floor = decision.aggregate.confidence, router.review_below
    tests_confidence = rule.when.confidence_below is not None
    if decision.needs_human_review:
        why = [f"规则 {rule.id} 本身针对低置信度 (rule tests confidence < {rule.when.confidence_below})"] if tests_confidence else []
        if confidence < floor:
            why.append(f"置信度 {confidence:.2f} 低于复核线 {floor} (confidence below review_below)")
        return "需要人工复核：" + "；".join(why)
    return (f"无需人工复核：置信度 {confidence:.2f} 不低于复核线 {floor}，且规则 {rule.id} 不针对低置信度 "
            f"(confidence at or above review_below; the rule does not test confidence)")


def emotion_chart(predictions: list[dict], width: int = 320, height: int = 120) -> dict:
    """Points of the buyer turns' emotions (y: severity, angry on top) for the template's inline SVG."""
    levels = sorted(EMOTION.labels, key=EMOTION_SEVERITY.get)  # neutral, satisfied, anxious, angry
    left, right, top, bottom = 62, 14, 12, 22
    step_y = (height - top - bottom) / (len(levels) - 1)
    n = len(predictions)
    step_x = (width - left - right) / max(n - 1, 1)
    points = []
    for i, p in enumerate(predictions):
        label = p["emotion"]["label"]
        x = left + (i * step_x if n > 1 else (width - left - right) / 2)
        y = top + (len(levels) - 1 - levels.index(label)) * step_y
        points.append({"x": round(x, 1), "y": round(y, 1), "label": label, "zh": EMOTION.zh_name(label),
                       "score": p["emotion"]["score"], "turn": i + 1})
    axis = [{"y": round(top + (len(levels) - 1 - k) * step_y, 1), "label": lab, "zh": EMOTION.zh_name(lab)}
            for k, lab in enumerate(levels)]
    return {"width": width, "height": height, "left": left, "right": width - right, "bottom": height - bottom,
            "points": points, "axis": axis, "path": " ".join(f"{p['x']},{p['y']}" for p in points)}


def logged_prediction(row: dict) -> dict:
    """A logged message row in Predictor.predict's shape (labels, Chinese names, scores)."""
    scores = row.get("scores") or {}
    out = {}
    for head in (EMOTION, INTENT):
        label, head_scores = row[head.name], scores.get(head.name) or {}
        out[head.name] = {"label": label, "zh": _zh(head, label), "score": head_scores.get(label, 0.0), "scores": head_scores}
    trait_scores = scores.get("customer_type") or {}
    out["customer_type"] = [{"label": t, "zh": _zh(CUSTOMER_TYPE, t), "score": trait_scores.get(t, 0.0)}
                            for t in row.get("customer_type") or []]
    out["customer_type_scores"] = trait_scores
    return out


def _zh(head, label: str) -> str:
    """The Chinese name, or the id itself for a label this schema does not have (rows logged by another model)."""
    return head.zh_name(label) if label in head.label2id else label


def build_view(turns: list[TurnView], decision: RouteDecision, router: Router, notices: list[str],
               logged: Optional[dict] = None) -> ConversationView:
    """The conversation view of `turns` (buyer turns carry their prediction) routed as `decision`."""
    predictions = [t.prediction for t in turns if t.prediction is not None]
    return ConversationView(turns=turns, decision=decision, review=review_explanation(decision, router),
                            chart=emotion_chart(predictions), notices=notices, logged=logged)
