"""The label schema: one ordered list per head, as in shared/spec/labels.md.

Everything that needs label ids (data validation, training heads, evaluation,
export metadata, predictor, router) reads them from here. `id2label` style
mappings are derived from these tuples, never typed twice. The order is part of
the contract: it is the order of the model's output logits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Head:
    """One prediction head: its ordered label ids, their Chinese names, and its kind."""

    name: str
    labels: tuple[str, ...]
    zh: tuple[str, ...]
    multi_label: bool

    @cached_property  # hot path in tagging and routing: build the dict once
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def size(self) -> int:
        return len(self.labels)

    def zh_name(self, label: str) -> str:
        return self.zh[self.labels.index(label)]


EMOTION = Head(
    "emotion",
    ("neutral", "angry", "anxious", "satisfied"),
    ("平静", "愤怒", "焦虑", "满意"),
    multi_label=False,
)
INTENT = Head(
    "intent",
    (
        "product_inquiry",
        "price_promotion",
        "order_payment",
        "logistics",
        "after_sales",
        "complaint",
        "chitchat",
        "other",
    ),
    ("商品咨询", "价格优惠", "下单支付", "物流配送", "售后退换", "投诉建议", "闲聊寒暄", "其他"),
    multi_label=False,
)
CUSTOMER_TYPE = Head(
    "customer_type",
    ("novice", "experienced", "impatient", "hesitant", "price_sensitive", "quality_sensitive", "chatty"),
    ("新手买家", "资深买家", "急性子", "犹豫型", "价格敏感", "品质敏感", "闲聊型"),
    multi_label=True,
)

HEADS: tuple[Head, ...] = (EMOTION, INTENT, CUSTOMER_TYPE)
HEADS_BY_NAME: dict[str, Head] = {h.name: h for h in HEADS}

# Severity order used by conversation aggregation (spec: angry > anxious > satisfied > neutral).
EMOTION_SEVERITY: dict[str, int] = {"angry": 3, "anxious": 2, "satisfied": 1, "neutral": 0}

ROLES: tuple[str, ...] = ("customer", "agent")


def schema_dict() -> dict:
    """The schema as plain data: written into every exported bundle."""
    return {h.name: {"labels": list(h.labels), "zh": list(h.zh), "multi_label": h.multi_label} for h in HEADS}


def schema_digest(schema: dict | None = None) -> str:
    """A short stable digest of the label ids and their order (Chinese names excluded); None: the installed schema."""
    schema = schema_dict() if schema is None else schema
    ids = {name: [schema[name]["labels"], schema[name]["multi_label"]] for name in sorted(schema)}
    return hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:16]


class LabelError(ValueError):
    """A label id that is not in the schema, or a value of the wrong shape."""


def check_labels(emotion: object, intent: object, customer_type: object) -> tuple[str, str, tuple[str, ...]]:
    """Validate one row's labels; return them normalised or raise LabelError with the reason."""
    for head, value in ((EMOTION, emotion), (INTENT, intent)):
        if not isinstance(value, str):
            raise LabelError(f"{head.name} must be a string label id, got {type(value).__name__}")
        if value not in head.label2id:
            raise LabelError(f"unknown {head.name} label {value!r}; expected one of {', '.join(head.labels)}")
    if customer_type is None:
        customer_type = []
    if isinstance(customer_type, str):
        # CSV cells hold traits as "a;b" or "a,b" (or "" for none).
        customer_type = [t for t in customer_type.replace(",", ";").split(";") if t.strip()]
    if not isinstance(customer_type, (list, tuple)):
        raise LabelError(f"customer_type must be a list of trait ids, got {type(customer_type).__name__}")
    traits = []
    for trait in customer_type:
        if not isinstance(trait, str) or trait.strip() not in CUSTOMER_TYPE.label2id:
            raise LabelError(
                f"unknown customer_type trait {trait!r}; expected any of {', '.join(CUSTOMER_TYPE.labels)}"
            )
        traits.append(trait.strip())
    # Keep schema order and drop repeats so equal label sets compare equal.
    ordered = tuple(t for t in CUSTOMER_TYPE.labels if t in set(traits))
    return emotion, intent, ordered
