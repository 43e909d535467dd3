"""One table comparing shipped models on the real test split: quality, calibration, field cases, speed, size.

    python benchmarks/model_table.py --shared-data ../shared/data -o runs/model_table.json \
        --model "kefu-mini-v1.3 (student)=models/default:runs/default-eval" \
        --model "kefu-e5-v1.0 (teacher)=models/accurate:runs/accurate-eval" \
        --model "kefu-mini-v1.2 (real data)=runs/v1.2:runs/v1.2-eval" --model "kefu-mini-v1.1=runs/v1.1:runs/v1.1-eval" \
        --baseline-from runs/default-eval

Per model (NAME=BUNDLE:EVAL_DIR; EVAL_DIR from `kefu-router evaluate BUNDLE --data ...`): macro-F1 per head,
customer-type micro-F1 per message and per conversation, ECE, on the real group of the test split; the
field-case pass rate (`kefu-router cases` on the project's and ../shared's cases); messages/s of the int8
Predictor on real buyer messages with context (bench_predict.real_messages; measured here, one model after
the other, in this run); the bundle's size on disk. `--baseline-from` adds the TF-IDF + LR row of that
evaluation (same training rows as that model). Prints a Markdown table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import real_messages  # noqa: E402

COLUMNS = (("emotion", "emotion_macro_f1"), ("intent", "intent_macro_f1"), ("traits macro", "customer_type_macro_f1"),
           ("traits micro", "customer_type_micro_f1"), ("traits per conv.", "customer_type_conversation_micro_f1"),
           ("emotion ECE", "emotion_ece"), ("intent ECE", "intent_ece"))


def case_pass_rate(predictor, shared: Path | None) -> float:
    from kefu_router.training.behaviour import OWN_CASES, load_cases, run_cases

    files = [OWN_CASES] + ([shared / "cases" / "field_cases.jsonl"] if shared else [])
    report = run_cases(predictor, [c for f in files for c in load_cases(f)])
    return sum(v["pass_rate"] * v["cases"] for v in report.values()) / sum(v["cases"] for v in report.values())


def speed(predictor, messages: list) -> float:
    predictor.predict(messages[:64])
    start = time.perf_counter()
    for i in range(0, len(messages), 2048):
        predictor.predict(messages[i:i + 2048])
    return len(messages) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=BUNDLE:EVAL_DIR")
    parser.add_argument("--baseline-from", type=Path, default=None, help="an evaluation whose TF-IDF + LR row to add")
    parser.add_argument("--shared-data", type=Path, required=True, help="../shared/data (real messages for speed)")
    parser.add_argument("--messages", type=int, default=2000, help="real messages timed per model")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    messages = None
    rows = {}
    for item in args.model:
        name, _, paths = item.partition("=")
        bundle, _, eval_dir = paths.partition(":")
        metrics = json.loads((Path(eval_dir) / "metrics.json").read_text(encoding="utf-8"))["groups"]["real"]
        from kefu_router.predictor import Predictor

        predictor = Predictor(bundle)
        if messages is None:
            messages = real_messages(args.shared_data, predictor.bundle.max_context_turns, args.messages, seed=0)
        rows[name] = {
            **{key: metrics["headline"].get(key) for _, key in COLUMNS}, "n": metrics["n"],
            "messages_per_s": speed(predictor, messages),
            "field_cases_pass_rate": case_pass_rate(predictor, args.shared_data.parent),
            "size_mb": sum(f.stat().st_size for f in Path(bundle).iterdir() if f.is_file()) / 1e6,
        }
        print(f"{name}: done", file=sys.stderr)
    if args.baseline_from:
        metrics = json.loads((args.baseline_from / "metrics.json").read_text(encoding="utf-8"))["groups"]["real"]
        rows["TF-IDF + LR (same training rows)"] = {**{key: metrics["baseline_headline"].get(key) for _, key in COLUMNS},
                                                    "n": metrics["n"]}
    args.output.write_text(json.dumps({"messages_timed": len(messages or []), "rows": rows}, indent=2), encoding="utf-8")
    print(render(json.loads(args.output.read_text(encoding="utf-8"))))


def render(table: dict) -> str:
    """The Markdown table of a `model_table.py` JSON."""
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
    head = ("| model | " + " | ".join(c for c, _ in COLUMNS) + " | field cases | msg/s | MB |\n|---|"
            + "---:|" * (len(COLUMNS) + 3))
    body = [f"| {name} | " + " | ".join(fmt(r.get(k), ".3f") for _, k in COLUMNS)
            + f" | {fmt(r.get('field_cases_pass_rate'), '.2f')} | {fmt(r.get('messages_per_s'), '.0f')} | {fmt(r.get('size_mb'), '.1f')} |"
            for name, r in table["rows"].items()]
    return "\n".join([head, *body])


if __name__ == "__main__":
    main()
