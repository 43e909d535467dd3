"""Build the labelled corpus: training/data/src/*.txt -> training/data/kefu_corpus.jsonl.

Every row (agent turns too, for context) carries its conversation's fixed split.
Splits are frozen in training/data/splits.tsv: a conversation keeps its split when
its labels are corrected. Only conversations not listed there are assigned, by
conversation, stratified on emotion|intent with a fixed seed. The test split is
never used for any choice (training selects on dev).

    python -m kefu_router.training.corpus.build_corpus [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kefu_router.training.corpus.corpus_source import parse, stats, to_rows
from kefu_router.training.data import Example, split_examples

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA_DIR / "kefu_corpus.jsonl"
SPLITS_FILE = DATA_DIR / "splits.tsv"
SPLIT_SEED = 2026
DEV_FRACTION = TEST_FRACTION = 0.15


def read_frozen(path: Path = SPLITS_FILE) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#"))


def assign_splits(rows: list[dict], frozen: dict[str, str]) -> dict[str, str]:
    """conversation_id -> split: frozen ones kept, new ones grouped by conversation and stratified on emotion|intent."""
    new = [
        Example(r["id"], r["conversation_id"], r["text"], (), r["emotion"], r["intent"], tuple(r["customer_type"]))
        for r in rows
        if r["role"] == "customer" and r["conversation_id"] not in frozen
    ]
    assigned = dict(frozen)
    if new:
        splits = split_examples(new, DEV_FRACTION, TEST_FRACTION, seed=SPLIT_SEED)
        assigned.update({ex.conversation_id: name for name, part in splits.items() for ex in part})
    return assigned


def build(src_dir: Path = DATA_DIR / "src", out: Path = CORPUS) -> dict:
    conversations = []
    for path in sorted(src_dir.glob("*.txt")):
        conversations += parse(path)
    rows = to_rows(conversations)
    split_of = assign_splits(rows, read_frozen())
    present = {r["conversation_id"] for r in rows}
    SPLITS_FILE.write_text(
        "# conversation_id<TAB>split: frozen; edit only to move a conversation on purpose\n"
        + "".join(f"{cid}\t{split_of[cid]}\n" for cid in sorted(present)),
        encoding="utf-8",
    )
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "split": split_of[row["conversation_id"]]}, ensure_ascii=False) + "\n")
    return {name: stats([r for r in rows if split_of[r["conversation_id"]] == name]) for name in ("train", "dev", "test")} | {"all": stats(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=DATA_DIR / "src")
    parser.add_argument("--out", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    summary = build(args.src, args.out)
    for name, s in summary.items():
        print(f"{name:<5} conversations {s['conversations']:>5}  customer messages {s['customer_messages']:>5}  emotion {s['emotion']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
