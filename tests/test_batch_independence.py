"""A message's labels and scores do not depend on the other messages in its batch (issue 13, item 4).

The int8 graph is quantised statically at export (training/export.py): activation scales are fixed,
not computed per batch, so a message alone, inside any batch and at any tagging chunk size gets the
same result.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from kefu_router.labels import HEADS
from kefu_router.tagging import ColumnNames, tag_file
from kefu_router.text import Message
from tests.conftest import MINI_DATA

ROWS = [json.loads(line) for line in MINI_DATA.read_text(encoding="utf-8").splitlines()]
MESSAGES = [Message.of(r["text"]) for r in ROWS] + [
    Message.of("快递怎么还没到 明天就要用啊 " * 3, [("customer", "在吗"), ("agent", "在的亲 请问有什么可以帮您")]),
    Message.of("好的", [("agent", "已经给您改好地址了")]),
]


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    from kefu_router.predictor import Predictor

    return Predictor(tiny_bundle)  # int8, the default


def _decisions(p: dict[str, np.ndarray], thresholds: np.ndarray) -> list:
    return [p["emotion"].argmax(1).tolist(), p["intent"].argmax(1).tolist(), (p["customer_type"] >= thresholds).tolist()]


def test_int8_scores_are_the_same_alone_and_in_any_batch(predictor):
    alone = {h.name: np.concatenate([predictor.probabilities([m])[h.name] for m in MESSAGES]) for h in HEADS}
    rng = random.Random(7)
    for batch_size in (2, 5, 64):
        predictor.batch_size = batch_size
        order = list(range(len(MESSAGES)))
        rng.shuffle(order)  # other neighbours, other padding widths
        shuffled = predictor.probabilities([MESSAGES[i] for i in order])
        batched = {h: np.empty_like(v) for h, v in shuffled.items()}
        for h, v in shuffled.items():
            batched[h][order] = v
        for head in HEADS:
            np.testing.assert_allclose(batched[head.name], alone[head.name], rtol=0, atol=1e-5, err_msg=f"{head.name}, batch {batch_size}")
        assert _decisions(batched, predictor._thresholds) == _decisions(alone, predictor._thresholds)
    predictor.batch_size = 64


def test_tag_gives_the_same_tags_at_any_chunk_size(tmp_path, predictor):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    columns = ColumnNames("text", "conversation_id", "role", "turn")
    runs = []
    for chunk_size in (1, 3, 1000):
        out = tmp_path / f"out-{chunk_size}.jsonl"
        tag_file(source, out, columns=columns, predictor=predictor, chunk_size=chunk_size)
        runs.append([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()])
    first = runs[0]
    for other in runs[1:]:
        for a, b in zip(first, other):
            assert {k: v for k, v in a.items() if not isinstance(v, float)} == {k: v for k, v in b.items() if not isinstance(v, float)}
            assert all(abs(a[k] - b[k]) <= 1e-5 for k, v in a.items() if isinstance(v, float))
