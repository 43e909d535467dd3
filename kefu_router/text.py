"""Model input from a message and the turns before it, shared by training and runtime.

Layout: `[CLS] 买家：… 客服：… [SEP] current message [SEP]` with token type 0 for the
context part and 1 for the current message, so the model can tell them apart.
Every text is first normalised (`kefu_router.normalize.normalize_text`). The current
message is always kept; one longer than the budget keeps its head and its tail (a
buyer's request often comes last), see `head_and_tail`. Context turns are added
newest first and the oldest are dropped.

Only `tokenizers` is used, so training (through a fast tokenizer's backend)
and serving (through the bundle's tokenizer.json) build identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer

from kefu_router.labels import ROLES
from kefu_router.normalize import normalize_text

ROLE_MARK = {"customer": "买家：", "agent": "客服："}
DEFAULT_MAX_LENGTH = 128
DEFAULT_MAX_CONTEXT_TURNS = 6
# A context turn cut to fewer tokens than this carries too little to be worth keeping.
MIN_PARTIAL_TURN_TOKENS = 8
# A message longer than its budget keeps this share of the budget from its head, the rest from its tail
# (head+tail truncation; Sun et al. 2019, "How to Fine-Tune BERT for Text Classification", found a short
# head and a long tail best for long texts).
HEAD_SHARE = 0.25


@dataclass(frozen=True)
class Message:
    """One message to classify, with the conversation turns before it (oldest first)."""

    text: str
    context: tuple[tuple[str, str], ...] = ()  # (role, text) pairs

    @classmethod
    def of(cls, text: str, context: Iterable[tuple[str, str]] | None = None) -> "Message":
        turns = tuple((role, t) for role, t in (context or ()) if t and t.strip())
        for role, _ in turns:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        return cls(text, turns)


def prepare_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """Switch off the tokenizer's own truncation and padding: `encode` does both."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _special_ids(tokenizer: Tokenizer) -> tuple[int, int, int]:
    ids = [tokenizer.token_to_id(tok) for tok in ("[CLS]", "[SEP]", "[PAD]")]
    if None in ids:
        raise ValueError("tokenizer lacks one of the BERT special tokens [CLS], [SEP], [PAD]")
    return ids[0], ids[1], ids[2]


def head_and_tail(seq: Sequence, budget: int) -> Sequence:
    """`seq` (token ids, or the characters of a str) cut to `budget` items: the first `HEAD_SHARE` of the
    budget from its head, the rest from its tail. Shorter sequences come back unchanged."""
    if len(seq) <= budget:
        return seq
    head = int(budget * HEAD_SHARE)
    return seq[:head] + seq[len(seq) - (budget - head):]


def encode(
    tokenizer: Tokenizer,
    messages: Sequence[Message],
    max_length: int = DEFAULT_MAX_LENGTH,
    max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS,
) -> list[tuple[list[int], list[int]]]:
    """Token ids and token type ids per message, unpadded (see `pad`)."""
    cls_id, sep_id, _ = _special_ids(tokenizer)
    budget = max_length - 3
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []  # per message: index of its text in `pieces`, number of context turns
    normalised: dict[str, str] = {}  # later turns repeat earlier ones as context: normalise each text once

    def normal(text: str) -> str:
        if text not in normalised:
            normalised[text] = normalize_text(text)
        return normalised[text]

    for m in messages:
        turns = m.context[-max_context_turns:] if max_context_turns > 0 else ()
        spans.append((len(pieces), len(turns)))
        pieces.append(normal(m.text))
        pieces.extend(ROLE_MARK[role] + normal(text) for role, text in turns)
    # Later turns of a conversation repeat its earlier turns as context: tokenize each distinct piece once.
    unique = list(dict.fromkeys(pieces))
    ids_of = {text: enc.ids for text, enc in zip(unique, tokenizer.encode_batch(unique, add_special_tokens=False))} if unique else {}
    encoded = [ids_of[text] for text in pieces]
    out = []
    for start, n_turns in spans:
        message_ids = head_and_tail(encoded[start], budget)
        room = budget - len(message_ids)
        context_ids: list[int] = []
        for ids in reversed(encoded[start + 1 : start + 1 + n_turns]):  # newest turn first
            if len(ids) > room:
                if room >= MIN_PARTIAL_TURN_TOKENS:
                    context_ids = ids[-room:] + context_ids  # keep the end of the turn, nearest the message
                break
            context_ids = ids + context_ids
            room -= len(ids)
        input_ids = [cls_id, *context_ids, sep_id, *message_ids, sep_id]
        type_ids = [0] * (len(context_ids) + 2) + [1] * (len(message_ids) + 1)
        out.append((input_ids, type_ids))
    return out


def pad(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, np.ndarray]:
    """Pad a batch to its longest member (dynamic padding) as int64 arrays."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = np.full((len(encoded), width), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((len(encoded), width), dtype=np.int64)
    attention_mask = np.zeros((len(encoded), width), dtype=np.int64)
    for row, (ids, types) in enumerate(encoded):
        input_ids[row, : len(ids)] = ids
        token_type_ids[row, : len(types)] = types
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
