"""Unlabelled real buyer messages from ../shared/data: the transfer set for distillation.

Sources: every keyed buyer turn of JDDC USS, DataCLUE CIC and the JDDC 2018 baseline windows that
the real labelled set does not label (with the turns before it as context), and the distinct
questions of ATEC 2018 (Alipay customer service, no context). Nothing from a conversation group
in the real set's dev or test split is used, nor any text equal (after normalisation) to a
labelled message, so the student never sees evaluation text, even unlabelled.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from kefu_router.normalize import normalize_text
from kefu_router.training.data import Example

UNLABELLED_SOURCES = ("jddc_uss", "dataclue_cic", "jddc_baseline", "atec")


def _real_turns(source: str, root: Path, max_context_turns: int):
    from kefu_router.training.corpus.real_set import conversation_of
    from kefu_router.training.corpus.real_sources import read_source

    for conv in read_source(source, root):
        for i, turn in conv.customer_turns():
            context = tuple((t.role, t.text) for t in conv.turns[max(0, i - max_context_turns):i] if t.text.strip())
            yield turn.key, conversation_of(turn.key), turn.text, context


def _atec_questions(root: Path):
    seen: set[str] = set()
    for name in ("atec_nlp_sim_train.csv", "atec_nlp_sim_train_add.csv"):
        path = root / "atec_antfin" / name
        if not path.is_file():
            continue
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.reader(fh, delimiter="\t"):
                for text in row[1:3]:
                    text = text.strip().lstrip("\ufeff")
                    if text and text not in seen and text != "query0":
                        seen.add(text)
                        yield f"atec:{len(seen)}", f"atec:{len(seen)}", text, ()


def unlabelled_examples(
    shared_data: str | Path,
    sources: list[str],
    labelled: list[Example],
    max_rows: int,
    max_context_turns: int = 6,
    seed: int = 13,
) -> tuple[list[Example], dict[str, int]]:
    """At most `max_rows` unlabelled examples, an equal share per source (seeded sample), and the
    count kept per source.

    `labelled`: every example of the labelled data, all splits; their texts are excluded, and the
    conversation groups of their dev and test rows. Raises ValueError for an unknown source.
    """
    from kefu_router.training.corpus.real_set import conversation_of

    unknown = set(sources) - set(UNLABELLED_SOURCES)
    if unknown:
        raise ValueError(f"unknown unlabelled sources {sorted(unknown)}; expected some of {', '.join(UNLABELLED_SOURCES)}")
    root = Path(shared_data)
    held_out = {conversation_of(ex.id) for ex in labelled if ex.split in ("dev", "test")}
    seen = {normalize_text(ex.text) for ex in labelled}
    labelled_ids = {ex.id for ex in labelled}
    share = max_rows // max(1, len(sources))
    out, counts = [], {}
    for source in sources:
        rows = _atec_questions(root) if source == "atec" else _real_turns(source, root, max_context_turns)
        pool = []
        for key, group, text, context in rows:
            norm = normalize_text(text)
            if not norm.strip() or key in labelled_ids or group in held_out or norm in seen:
                continue
            seen.add(norm)
            pool.append(Example(key, group, text, context, None, None, None, "train", f"unlabelled:{source}"))
        random.Random(seed).shuffle(pool)
        out += pool[:share]
        counts[source] = min(share, len(pool))
    return out, counts
