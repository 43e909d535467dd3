"""Does a message's result depend on its batch? Prints figures, asserts nothing.

    python benchmarks/bench_batching.py --model runs/default/bundle --data training/data/kefu_corpus.jsonl

On the customer turns of DATA (JSON Lines in conversation order, with conversation_id, turn, role,
text), for the int8 graph and, when the bundle has one, the fp32 graph:
1. each message alone versus in batches of 64 (file order) and of 16 (shuffled neighbours):
   max |probability difference| per head and how many messages change a label or trait decision;
2. `kefu-router tag` at --chunk-size 1000 and 10000: rows whose tags or playbook differ;
3. int8 versus fp32 label agreement per head, on the same messages.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_tag import customer_messages  # noqa: E402

from kefu_router.labels import HEADS  # noqa: E402
from kefu_router.predictor import Predictor  # noqa: E402
from kefu_router.tagging import ColumnNames, tag_file  # noqa: E402


def decisions(p: dict[str, np.ndarray], thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Per head, one row per message of what the labels depend on: argmax, or the trait decisions."""
    return {h.name: (p[h.name] >= thresholds) if h.multi_label else p[h.name].argmax(1)[:, None] for h in HEADS}


def compare(name: str, a: dict, b: dict, thresholds: np.ndarray) -> None:
    da, db = decisions(a, thresholds), decisions(b, thresholds)
    parts = [f"{h.name} max|diff| {np.abs(a[h.name] - b[h.name]).max():.2e}, {int((da[h.name] != db[h.name]).any(1).sum())} changed"
             for h in HEADS]
    print(f"  {name:<28} " + "; ".join(parts))


def batching(predictor: Predictor, messages: list, seed: int) -> dict:
    predictor.batch_size = 1
    alone = predictor.probabilities(messages)
    predictor.batch_size = 64
    compare("alone vs batches of 64", alone, predictor.probabilities(messages), predictor._thresholds)
    order = list(range(len(messages)))
    random.Random(seed).shuffle(order)
    predictor.batch_size = 16
    shuffled = predictor.probabilities([messages[i] for i in order])
    compare("alone vs shuffled 16s", alone, {h: v[np.argsort(order)] for h, v in shuffled.items()}, predictor._thresholds)
    return alone


def chunking(data: Path, model: str, precision: str) -> None:
    predictor = Predictor(model, precision=precision)
    columns = ColumnNames("text", "conversation_id", "role", "turn")
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for chunk in (1000, 10_000):
            out = Path(tmp) / f"{chunk}.jsonl"
            tag_file(data, out, columns=columns, predictor=predictor, chunk_size=chunk, progress=False)
            runs.append([json.loads(line) for line in out.open(encoding="utf-8")])
    keys = ("tag_emotion", "tag_intent", "tag_customer_type", "tag_playbook")
    changed = {k: sum(a[k] != b[k] for a, b in zip(*runs)) for k in keys}
    scores = max((abs(a[k] - b[k]) for a, b in zip(*runs) for k, v in a.items() if k.startswith("tag_score") and v is not None), default=0)
    print(f"  tag --chunk-size 1000 vs 10000 ({len(runs[0])} rows): changed {changed}, max |score diff| {scores:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="bundle (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=Path("training/data/kefu_corpus.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {}
    for precision in ("int8", "fp32"):
        try:
            predictor = Predictor(args.model, precision=precision)
        except Exception as exc:  # a shipped bundle may carry only the int8 graph
            print(f"{precision}: skipped ({exc})")
            continue
        messages = customer_messages(args.data, predictor.bundle.max_context_turns)
        print(f"{precision} ({predictor.bundle.path}, {len(messages)} customer messages)")
        results[precision] = batching(predictor, messages, args.seed), predictor._thresholds
        chunking(args.data, args.model, precision)
    if len(results) == 2:
        (p8, t), (p32, _) = results["int8"], results["fp32"]
        d8, d32 = decisions(p8, t), decisions(p32, t)
        print("int8 vs fp32 label agreement: " + ", ".join(f"{h} {(d8[h] == d32[h]).all(1).mean():.2%}" for h in d8))


if __name__ == "__main__":
    main()
