"""Inter-annotator agreement: a blind second labelling pass over a sample of the corpus.

    python -m kefu_router.training.corpus.agreement sample   # writes the unlabelled sample for the second annotator
    python -m kefu_router.training.corpus.agreement score    # Cohen's kappa per head and per trait -> agreement.json

The second annotator sees each message with its context but none of the first labels.
Their file is `second_pass.tsv`: id, emotion, intent, traits (";"-separated, the buyer's
traits shown so far, as in the corpus). Disagreements are listed for adjudication.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

from kefu_router.labels import CUSTOMER_TYPE, LabelError, check_labels
from kefu_router.training.corpus.build_corpus import CORPUS, DATA_DIR

AGREEMENT_DIR = DATA_DIR / "agreement"
SAMPLE = AGREEMENT_DIR / "sample_for_second_pass.md"
SECOND_PASS = AGREEMENT_DIR / "second_pass.tsv"
RESULT = AGREEMENT_DIR / "agreement.json"
MIN_MESSAGES = 600
SEED = 7


def load_corpus() -> dict[str, list[dict]]:
    conversations: dict[str, list[dict]] = {}
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        conversations.setdefault(row["conversation_id"], []).append(row)
    return conversations


def sample() -> int:
    conversations = load_corpus()
    ids = sorted(conversations)
    random.Random(SEED).shuffle(ids)
    lines, n = ["# Second labelling pass: label every line marked `>>` (blind to the first pass)\n"], 0
    for cid in ids:
        if n >= MIN_MESSAGES:
            break
        lines.append(f"\n## {cid}")
        for row in conversations[cid]:
            if row["role"] == "agent":
                lines.append(f"A: {row['text']}")
            else:
                lines.append(f">> {row['id']}\tC: {row['text']}")
                n += 1
    SAMPLE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n


def read_second_pass() -> dict[str, tuple]:
    labels = {}
    with SECOND_PASS.open(encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or row[0].startswith("#") or row[0] == "id":
                continue
            try:
                labels[row[0]] = check_labels(row[1], row[2], row[3] if len(row) > 3 else "")
            except (LabelError, IndexError) as exc:
                raise SystemExit(f"{SECOND_PASS.name}:{lineno}: {exc}")
    return labels


def kappa_report(first: dict[str, tuple], second: dict[str, tuple]) -> dict:
    """Cohen's kappa and raw agreement per head and per trait over the keys both passes labelled.

    `first` and `second` map a key to (emotion, intent, traits); the disagreements are listed by key.
    """
    from sklearn.metrics import cohen_kappa_score

    ids = [i for i in second if i in first]
    result = {"messages": len(ids), "kappa": {}, "raw_agreement": {}, "disagreements": {}}
    for k, head in enumerate(("emotion", "intent")):
        a, b = [first[i][k] for i in ids], [second[i][k] for i in ids]
        result["kappa"][head] = round(float(cohen_kappa_score(a, b)), 3)
        result["raw_agreement"][head] = round(sum(x == y for x, y in zip(a, b)) / max(len(ids), 1), 3)
    for trait in CUSTOMER_TYPE.labels:
        x, y = [trait in first[i][2] for i in ids], [trait in second[i][2] for i in ids]
        result["kappa"][f"customer_type/{trait}"] = round(float(cohen_kappa_score(x, y)), 3) if any(x) or any(y) else None
        result["raw_agreement"][f"customer_type/{trait}"] = round(sum(p == q for p, q in zip(x, y)) / max(len(ids), 1), 3)
    result["disagreements"] = {
        i: {"first": [first[i][0], first[i][1], sorted(first[i][2])], "second": [second[i][0], second[i][1], sorted(second[i][2])]}
        for i in ids
        if (first[i][0], first[i][1], tuple(sorted(first[i][2]))) != (second[i][0], second[i][1], tuple(sorted(second[i][2])))
    }
    return result


def score() -> dict:
    first = {r["id"]: (r["emotion"], r["intent"], tuple(r["customer_type"])) for rows in load_corpus().values() for r in rows if r["role"] == "customer"}
    result = kappa_report(first, read_second_pass())
    RESULT.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["sample"]:
        print(f"{sample()} messages written to {SAMPLE}")
    elif sys.argv[1:] == ["score"]:
        r = score()
        print(json.dumps({k: r[k] for k in ("messages", "kappa", "raw_agreement")}, indent=1), f"\n{len(r['disagreements'])} messages disagree")
    else:
        print(__doc__)
