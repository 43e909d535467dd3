"""One conversation from raw turns to a route, shared by `kefu-router route` and `POST /v1/route`.

    conversation = Conversation.of([("customer", "在吗"), ("agent", "您好"), ("customer", "怎么还没发货")])
    predictions = predictor.predict(conversation.messages)   # or the service's micro-batcher
    decision = conversation.route(router, predictions)

Every customer turn with text is a model input, read with all the turns before it
(customer and agent) as context, as in training; the bundle keeps the last
`max_context_turns` of them (kefu_router.text.encode). `max_chars` cuts every text
to that many characters for the model (the service's MAX_TEXT_CHARS; a message keeps its head and
tail, a context turn its end, nearest the message) and `truncated` flags the inputs that were cut.
The router gets each turn's text as the model read it (cut), with which it recognises fillers such
as 好的 or 在吗: a megabyte of text costs the filler check no more than `max_chars` characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from kefu_router.labels import ROLES
from kefu_router.routing import RouteDecision, Router
from kefu_router.text import Message, head_and_tail

NO_CUSTOMER_TURN = "the conversation has no customer turn with text"


def cut_message(text: str, context: Sequence[tuple[str, str]], max_chars: int | None = None) -> tuple[Message, bool]:
    """The model input for `text` after `context`, every text cut to `max_chars`, and whether anything was cut."""
    if max_chars is None:
        return Message.of(text, context), False
    truncated = len(text) > max_chars or any(len(t) > max_chars for _, t in context)
    return Message.of(head_and_tail(text, max_chars), [(role, t[-max_chars:]) for role, t in context]), truncated


@dataclass(frozen=True)
class Conversation:
    turns: tuple[tuple[str, str], ...]  # (role, text), oldest first
    customer: tuple[int, ...]  # positions in `turns` of the customer turns that are routed
    messages: tuple[Message, ...]  # the model input of each of them, with its context
    truncated: tuple[bool, ...]  # whether that input (text or context) was cut to max_chars

    @classmethod
    def of(cls, turns: Iterable[tuple[str, str]], max_chars: int | None = None) -> "Conversation":
        """Check the turns and build the customer turns' inputs; ValueError names the bad turn."""
        turns = tuple(turns)
        for i, (role, text) in enumerate(turns):
            if role not in ROLES:
                raise ValueError(f"turns[{i}].role: unknown role {role!r}; expected one of {', '.join(ROLES)}")
            if not isinstance(text, str):
                raise ValueError(f"turns[{i}].text: expected a string, got {type(text).__name__}")
        customer = tuple(i for i, (role, text) in enumerate(turns) if role == "customer" and text.strip())
        if not customer:
            raise ValueError(NO_CUSTOMER_TURN)
        inputs = [cut_message(turns[i][1], turns[:i], max_chars) for i in customer]
        messages = tuple(message for message, _ in inputs)
        truncated = tuple(cut for _, cut in inputs)
        return cls(turns, customer, messages, truncated)

    def route(self, router: Router, predictions: Sequence[dict]) -> RouteDecision:
        """Route the predictions of `messages` (same order), each with its text as cut to `max_chars`."""
        if len(predictions) != len(self.customer):
            raise ValueError(f"{len(predictions)} predictions for {len(self.customer)} customer turns")
        return router.route([{**pred, "text": message.text} for pred, message in zip(predictions, self.messages)])
