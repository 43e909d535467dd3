"""Predictor speed and int8 fidelity for a bundle: prints figures, asserts nothing.

    python benchmarks/bench_predict.py --model models/default --fp32-model runs/default/bundle \
        --checkpoint runs/default/checkpoint --messages 20000

1. messages/s of the runtime Predictor (int8, and fp32 when a bundle with model.onnx is given)
   on synthetic conversations with a realistic length mix and context (bench_tag's generator), or with
   --real ../shared/data on real buyer messages with the turns before them (JDDC USS, DataCLUE CIC, the
   JDDC 2018 baseline windows; repeated to --messages);
2. the same messages through a `transformers` Pipeline on the PyTorch weights, side by side, and
   the ratio (targets for the bundled model: >= 1,500 messages/s and >= 3x the pipeline);
3. int8-vs-fp32 label agreement per head (target >= 99%).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_tag import bench_pipeline, customer_messages, generate, report_pipeline  # noqa: E402

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT  # noqa: E402
from kefu_router.predictor import Predictor  # noqa: E402


def throughput(predictor: Predictor, messages: list, chunk: int) -> tuple[float, list[dict]]:
    predictor.predict(messages[:64])  # warm-up
    start, out = time.perf_counter(), []
    for i in range(0, len(messages), chunk):
        out += predictor.predict(messages[i : i + chunk])
    return len(messages) / (time.perf_counter() - start), out


def real_messages(shared_data: Path, max_turns: int, n: int, seed: int) -> list:
    """Every buyer turn of the three real sources with the turns before it, shuffled and repeated to `n`."""
    import random

    from kefu_router.text import Message
    from kefu_router.training.corpus.real_sources import SOURCES, read_source

    pool = [Message.of(t.text, [(c.role, c.text) for c in conv.turns[max(0, i - max_turns):i]])
            for source in SOURCES for conv in read_source(source, shared_data) for i, t in conv.customer_turns()]
    random.Random(seed).shuffle(pool)
    return (pool * (n // len(pool) + 1))[:n]


def agreement(a: list[dict], b: list[dict]) -> dict[str, float]:
    n = max(len(a), 1)
    return {
        EMOTION.name: sum(x["emotion"]["label"] == y["emotion"]["label"] for x, y in zip(a, b)) / n,
        INTENT.name: sum(x["intent"]["label"] == y["intent"]["label"] for x, y in zip(a, b)) / n,
        CUSTOMER_TYPE.name: sum({t["label"] for t in x["customer_type"]} == {t["label"] for t in y["customer_type"]} for x, y in zip(a, b)) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="bundle (default: the bundled model)")
    parser.add_argument("--fp32-model", default=None, help="a bundle with model.onnx (default: --model)")
    parser.add_argument("--checkpoint", default=None, help="HF checkpoint the bundle was exported from")
    parser.add_argument("--messages", type=int, default=20000, help="approximate customer messages to generate")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--baseline-limit", type=int, default=3000, help="messages for the (slow) transformers pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=None, help="../shared/data: real buyer messages instead of synthetic ones")
    args = parser.parse_args()

    int8 = Predictor(args.model, batch_size=args.batch_size)
    if args.real:
        messages = real_messages(args.real, int8.bundle.max_context_turns, args.messages, args.seed)
        print(f"real buyer messages from {args.real}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "chats.jsonl"
            generate(source, int(args.messages * 1.6), seed=args.seed)  # ~60% of generated rows are customer turns
            messages = customer_messages(source, int8.bundle.max_context_turns)
    lengths = [len(m.text) + sum(len(t) for _, t in m.context) for m in messages]
    print(f"{len(messages)} customer messages; characters incl. context: median {np.median(lengths):.0f}, p95 {np.percentile(lengths, 95):.0f}")

    rate8, preds8 = throughput(int8, messages, args.chunk_size)
    print(f"Predictor int8   {rate8:9.1f} messages/s  ({int8.bundle.path})")
    try:
        fp32 = Predictor(args.fp32_model or args.model, precision="fp32", batch_size=args.batch_size)
        rate32, preds32 = throughput(fp32, messages, args.chunk_size)
        print(f"Predictor fp32   {rate32:9.1f} messages/s  (int8 speed-up {rate8 / rate32:.2f}x)")
        agree = agreement(preds8, preds32)
        print("int8 vs fp32 label agreement: " + ", ".join(f"{h} {v:.2%}" for h, v in agree.items()))
    except Exception as exc:  # a shipped bundle may carry only the int8 graph
        print(f"fp32: skipped ({exc})")

    args.model = str(int8.bundle.path)
    report_pipeline(bench_pipeline(messages, args, preds8), {"Predictor int8": rate8})

if __name__ == "__main__":
    main()
