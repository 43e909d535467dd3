"""Behaviour tests after CheckList (Ribeiro et al., ACL 2020): field cases of the kinds that break classifiers.

A case is one JSON line ``{"id", "kind", "text" | "turns": [{"role", "text"}], "expected": {"emotion",
"intent", "customer_type"}}`` (the format of ``shared/cases/field_cases.jsonl``). The bundle routes the case as a
conversation, exactly as ``kefu-router route`` does, and the last customer turn is judged:

- a case **passes** when its emotion and intent are the expected ones; an ``out_of_scope`` case also passes when
  the router asks for human review (low confidence) instead of naming a confident topic;
- ``all_heads`` additionally needs the expected customer-type set.

    kefu-router cases                                   # bundled model, the project's cases (+ shared ones)
    kefu-router cases -m models/mine --cases my.jsonl

Runtime only (onnxruntime, tokenizers): no torch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from kefu_router.conversation import Conversation
from kefu_router.labels import check_labels
from kefu_router.predictor import Predictor
from kefu_router.routing import Router

OWN_CASES = Path(__file__).resolve().parent / "data" / "cases" / "field_cases.jsonl"
REVIEW_PASSES = {"out_of_scope"}  # kinds where a low-confidence review flag is a correct answer


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    turns: tuple[tuple[str, str], ...]
    emotion: str
    intent: str
    customer_type: tuple[str, ...]


def load_cases(path: str | Path) -> list[Case]:
    """Cases of one file; ValueError naming ``file:line`` for a bad one (unknown label, no customer turn...)."""
    path = Path(path)
    cases = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            turns = tuple((t["role"], t["text"]) for t in raw["turns"]) if "turns" in raw else (("customer", raw["text"]),)
            if turns[-1][0] != "customer":
                raise ValueError("the last turn must be the customer's")
            exp = raw["expected"]
            emotion, intent, traits = check_labels(exp["emotion"], exp["intent"], exp.get("customer_type", []))
            cases.append(Case(str(raw["id"]), str(raw["kind"]), turns, emotion, intent, tuple(sorted(traits))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    return cases


def run_cases(predictor: Predictor, cases: list[Case], router: Router | None = None) -> dict:
    """Per kind: cases, passes, pass rate, all-heads rate, and the failing ids with what the model said."""
    router = router or Router(review_below=predictor.bundle.review_below)
    chats = [Conversation.of(case.turns) for case in cases]
    flat = predictor.predict([m for chat in chats for m in chat.messages])
    kinds: dict[str, dict] = defaultdict(lambda: {"cases": 0, "passed": 0, "all_heads": 0, "failures": []})
    start = 0
    for case, chat in zip(cases, chats):
        preds = flat[start : start + len(chat.messages)]
        start += len(chat.messages)
        last = preds[-1]
        emotion, intent = last["emotion"]["label"], last["intent"]["label"]
        traits = tuple(sorted(t["label"] for t in last["customer_type"]))
        review = case.kind in REVIEW_PASSES and chat.route(router, preds).needs_human_review
        ok = (emotion == case.emotion and intent == case.intent) or review
        k = kinds[case.kind]
        k["cases"] += 1
        k["passed"] += ok
        k["all_heads"] += ok and traits == case.customer_type
        if not ok:
            k["failures"].append({"id": case.id, "got": [emotion, intent], "expected": [case.emotion, case.intent]})
    def rates(v: dict) -> dict:
        return {**v, "pass_rate": round(v["passed"] / v["cases"], 3), "all_heads_rate": round(v["all_heads"] / v["cases"], 3)}

    report = {kind: rates(v) for kind, v in sorted(kinds.items())}
    report["_overall"] = rates({key: sum(v[key] for v in kinds.values()) for key in ("cases", "passed", "all_heads")})
    return report


def format_report(report: dict) -> str:
    lines = [f"{'kind':<24}{'cases':>6}{'pass':>8}{'all heads':>11}"]
    for kind, v in report.items():
        lines.append(f"{kind:<24}{v['cases']:>6}{v['pass_rate']:>8.2f}{v['all_heads_rate']:>11.2f}")
    return "\n".join(lines)
