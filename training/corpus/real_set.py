"""The real labelled set: labels committed by the sources' own keys (never their text), joined at build time.

Files under ``training/data/real/``:

- ``labels/<source>.tsv``: ``key, emotion, intent, customer_type, split, text_sha1`` (traits comma-separated).
  ``text_sha1`` is a digest of the normalised text the label was given to, so a build notices a source file
  that changed under a label. ``split`` is frozen per conversation (train/dev/test, see :func:`freeze_splits`).
- ``second_pass.tsv``: the blind second pass on whole conversations; ``adjudication.tsv``: the decision on
  each disagreement; ``agreement.json``: Cohen's kappa per head and per trait (``agreement`` command).

Commands::

    python -m kefu_router.training.corpus.real_set import-answers PACKETS ANSWERS --shared-data ../shared/data
    python -m kefu_router.training.corpus.real_set build --shared-data ../shared/data -o runs/real/real.jsonl

``build`` writes corpus-format JSON Lines (``text``, labels, ``context``, ``conversation_id``, ``turn``,
``split``, ``source``) that ``kefu-router train`` reads like any data file, and reports every label whose key
is gone from the source or whose text no longer matches.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import typer

from kefu_router.labels import check_labels
from kefu_router.normalize import normalize_text
from kefu_router.training.corpus.real_sources import SOURCES, RealConversation, read_source

REAL_DIR = Path(__file__).resolve().parents[1] / "data" / "real"
LABELS_DIR = REAL_DIR / "labels"
COLUMNS = ("key", "emotion", "intent", "customer_type", "split", "text_sha1")
SPLIT_FRACTIONS = {"dev": 0.2, "test": 0.2}  # by conversation, stratified on emotion|intent
BASELINE_GROUP_LINES = 25  # consecutive baseline windows share a session: keep 25 lines in one split group

app = typer.Typer(add_completion=False, help=__doc__)


@dataclass(frozen=True)
class RealLabel:
    key: str
    emotion: str
    intent: str
    customer_type: tuple[str, ...]
    split: str = ""
    text_sha1: str = ""

    @property
    def source(self) -> str:
        return self.key.split(":", 1)[0]


def text_sha1(text: str) -> str:
    """The first 12 hex digits of the SHA-1 of the normalised text."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()[:12]


def conversation_of(key: str) -> str:
    """The split group of a key: a JDDC USS dialogue, one CIC message, or a run of baseline windows."""
    source, *parts = key.split(":")
    if source == "jddc_uss":
        return ":".join([source, *parts[:2]])
    if source == "jddc_baseline":
        return f"{source}:{parts[0]}:{int(parts[1]) // BASELINE_GROUP_LINES}"
    return key


def read_labels(path: Path) -> list[RealLabel]:
    """One label file; raises ValueError naming ``file:line`` for a bad label."""
    out = []
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh, delimiter="\t"), start=2):
            try:
                emotion, intent, traits = check_labels(row["emotion"], row["intent"], row["customer_type"] or "")
            except Exception as exc:  # LabelError, KeyError for a missing column
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            out.append(RealLabel(row["key"], emotion, intent, tuple(traits), row.get("split", ""), row.get("text_sha1", "")))
    return out


def write_label_files(labels_dir: Path, labels) -> None:
    """One sorted label file per source (``<source>.tsv``) for every source that has labels."""
    for source in SOURCES:
        mine = sorted((lab for lab in labels if lab.source == source), key=lambda lab: _sort_key(lab.key))
        if mine:
            write_labels(labels_dir / f"{source}.tsv", mine)


def write_labels(path: Path, labels: list[RealLabel]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for lab in labels:
            writer.writerow([lab.key, lab.emotion, lab.intent, ",".join(lab.customer_type), lab.split, lab.text_sha1])


def all_labels(labels_dir: Path = LABELS_DIR) -> dict[str, RealLabel]:
    labels: dict[str, RealLabel] = {}
    for source in SOURCES:
        path = labels_dir / f"{source}.tsv"
        if path.is_file():
            labels.update((lab.key, lab) for lab in read_labels(path))
    return labels


def index_turns(shared_data: Path, sources=SOURCES) -> dict[str, tuple[RealConversation, int]]:
    """key -> (conversation, position of the keyed turn), for every keyed turn of the sources."""
    index = {}
    for source in sources:
        for conv in read_source(source, shared_data):
            for i, turn in conv.customer_turns():
                index[turn.key] = (conv, i)
    return index


def freeze_splits(labels: list[RealLabel], seed: int = 13) -> list[RealLabel]:
    """Assign train/dev/test per conversation group, stratified on emotion|intent (StratifiedGroupKFold),
    once per source; labels that already carry a split keep it."""
    from kefu_router.training.data import Example, split_examples

    fixed = {conversation_of(lab.key): lab.split for lab in labels if lab.split}
    todo = [lab for lab in labels if conversation_of(lab.key) not in fixed]
    by_source: dict[str, list[Example]] = {}
    for lab in todo:
        by_source.setdefault(lab.source, []).append(
            Example(lab.key, conversation_of(lab.key), "", (), lab.emotion, lab.intent, lab.customer_type))
    for examples in by_source.values():
        splits = split_examples(examples, SPLIT_FRACTIONS["dev"], SPLIT_FRACTIONS["test"], seed)
        for split, items in splits.items():
            fixed.update((ex.conversation_id, split) for ex in items)
    return [RealLabel(lab.key, lab.emotion, lab.intent, lab.customer_type, fixed[conversation_of(lab.key)], lab.text_sha1)
            for lab in labels]


@dataclass
class BuildReport:
    rows: int = 0
    missing: int = 0  # keys no longer in the source
    changed: int = 0  # keys whose text no longer matches its digest
    examples: tuple[str, ...] = ()

    def summary(self) -> str:
        return (f"{self.rows} labelled real messages written; {self.missing} labels whose key is gone from the "
                f"source, {self.changed} whose text changed (skipped){': ' + ', '.join(self.examples) if self.examples else ''}")


def build_rows(shared_data: Path, labels: dict[str, RealLabel]) -> tuple[list[dict], BuildReport]:
    """Corpus-format rows for every label whose turn is still in ``shared_data`` with the same text."""
    sources = sorted({lab.source for lab in labels.values()})
    index = index_turns(shared_data, sources)
    rows, report, bad = [], BuildReport(), []
    for key, lab in labels.items():
        if key not in index:
            report.missing += 1
            bad.append(f"{key} (gone)")
            continue
        conv, position = index[key]
        turn = conv.turns[position]
        if lab.text_sha1 and text_sha1(turn.text) != lab.text_sha1:
            report.changed += 1
            bad.append(f"{key} (text changed)")
            continue
        rows.append({
            "id": key, "text": turn.text, "emotion": lab.emotion, "intent": lab.intent,
            "customer_type": list(lab.customer_type), "split": lab.split, "source": lab.source,
            "conversation_id": conversation_of(key), "turn": position,
            "context": [{"role": t.role, "text": t.text} for t in conv.turns[:position] if t.text.strip()],
        })
    report.rows = len(rows)
    report.examples = tuple(bad[:5])
    return rows, report


def load_real(sources: list[str], shared_data: str | Path | None, skip_bad: bool = False):
    """Examples of the real labelled set for `sources` (with their frozen splits) and a one-line report.

    Raises ``ValueError`` when ``shared_data`` (or $KEFU_SHARED_DATA) is not set or not a folder.
    """
    from kefu_router.training.corpus.weak_labels import resolve_shared_data
    from kefu_router.training.data import examples_from_rows

    root = resolve_shared_data(shared_data)
    if root is None or not root.is_dir():
        raise ValueError(f"real_sources {sources} need the shared data folder: set shared_data or $KEFU_SHARED_DATA "
                         f"(got {root}), or train without them (--set real_sources=[])")
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown real sources {sorted(unknown)}; expected some of {', '.join(SOURCES)}")
    labels = {k: lab for k, lab in all_labels().items() if lab.source in sources}
    rows, build = build_rows(root, labels)
    examples, report = examples_from_rows(list(enumerate(rows, start=1)), f"real set {'+'.join(sources)}", skip_bad)
    return examples, f"{report.summary()} ({build.summary()})"


@app.command("build")
def build(
    shared_data: Path = typer.Option(..., help="the ../shared/data folder"),
    out: Path = typer.Option(Path("runs/real/real.jsonl"), "-o", help="the JSON Lines to write"),
    labels_dir: Path = typer.Option(LABELS_DIR, help="folder of the committed label files"),
) -> None:
    """Join the committed labels with the source texts into a training/evaluation file."""
    rows, report = build_rows(shared_data, all_labels(labels_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    typer.echo(report.summary())
    typer.echo(f"-> {out}")


@app.command("import-answers")
def import_answers(
    answers: Path = typer.Argument(..., help="folder of first-pass answer TSVs (annotate.py format)"),
    shared_data: Path = typer.Option(..., help="the ../shared/data folder"),
    labels_dir: Path = typer.Option(LABELS_DIR),
    seed: int = 13,
) -> None:
    """Turn labellers' answer files into the committed label files, with text digests and frozen splits."""
    from kefu_router.training.corpus.annotate import parse_answer

    existing = all_labels(labels_dir)
    index = index_turns(shared_data)
    new, skipped = dict(existing), 0
    for path in sorted(answers.glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            parsed = parse_answer(line)
            if isinstance(parsed, str) or parsed[0] not in index:
                skipped += 1
                continue
            key, emotion, intent, traits = parsed
            conv, position = index[key]
            new[key] = RealLabel(key, emotion, intent, traits, existing[key].split if key in existing else "",
                                 text_sha1(conv.turns[position].text))
    labels = freeze_splits(list(new.values()), seed)
    write_label_files(labels_dir, labels)
    for source in SOURCES:
        typer.echo(f"{source}: {sum(lab.source == source for lab in labels)} labels")
    typer.echo(f"{skipped} answer lines skipped (SKIP or unknown key)")


SECOND_PASS = REAL_DIR / "second_pass.tsv"
ADJUDICATION = REAL_DIR / "adjudication.tsv"
AGREEMENT = REAL_DIR / "agreement.json"
ADJUDICATION_COLUMNS = ("key", "first", "second", "final", "rationale")


def _labels_of(value: str) -> tuple[str, str, tuple[str, ...]]:
    """'emotion|intent|trait,trait' -> (emotion, intent, traits), checked; LabelError names a bad id."""
    return check_labels(*value.split("|"))


def _as_cell(labels: tuple) -> str:
    return f"{labels[0]}|{labels[1]}|{','.join(sorted(labels[2]))}"


def read_second_pass(path: Path = SECOND_PASS) -> dict[str, tuple]:
    return {lab.key: (lab.emotion, lab.intent, lab.customer_type) for lab in read_labels(path)}


def read_adjudication(path: Path = ADJUDICATION) -> dict[str, dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["key"]: row for row in csv.DictReader(fh, delimiter="\t")}


@app.command("import-second")
def import_second(answers: Path = typer.Argument(..., help="folder of second-pass answer TSVs"),
                  out: Path = typer.Option(SECOND_PASS, "-o")) -> None:
    """The blind second pass's answers as ``second_pass.tsv`` (labels only, no text)."""
    from kefu_router.training.corpus.annotate import parse_answer

    labels = []
    for path in sorted(answers.glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parsed = parse_answer(line) if line.strip() else None
            if parsed and not isinstance(parsed, str):
                labels.append(RealLabel(parsed[0], parsed[1], parsed[2], parsed[3]))
    write_labels(out, sorted(labels, key=lambda lab: _sort_key(lab.key)))
    typer.echo(f"{len(labels)} second-pass labels -> {out}")


def first_pass_labels(labels: dict[str, RealLabel], second: dict[str, tuple], adjudication: dict[str, dict]) -> dict[str, tuple]:
    """The first pass's labels of the doubly labelled keys: the adjudication file keeps the first label of every
    disagreement (the label files hold the final one), and an agreeing key's first label is its second one."""
    first = {}
    for key, labs in second.items():
        if key in adjudication:
            first[key] = _labels_of(adjudication[key]["first"])
        elif key in labels:
            first[key] = (labels[key].emotion, labels[key].intent, labels[key].customer_type)
    return first


@app.command("agreement")
def agreement(labels_dir: Path = typer.Option(LABELS_DIR)) -> None:
    """Cohen's kappa per head and per trait (first vs blind second pass) -> agreement.json; lists every
    disagreement not yet in adjudication.tsv there, with an empty ``final`` for the adjudicator."""
    from kefu_router.training.corpus.agreement import kappa_report

    labels = all_labels(labels_dir)
    second = read_second_pass()
    adjudication = read_adjudication() if ADJUDICATION.is_file() else {}
    first = first_pass_labels(labels, second, adjudication)
    result = kappa_report(first, second)
    by_source = {}
    for source in SOURCES:
        keys = [k for k in first if k.startswith(source + ":")]
        if keys:
            part = kappa_report({k: first[k] for k in keys}, {k: second[k] for k in keys})
            by_source[source] = {"messages": part["messages"], "kappa": {h: part["kappa"][h] for h in ("emotion", "intent")}}
    result["by_source"] = by_source
    result["adjudicated"] = sum(1 for row in adjudication.values() if row.get("final"))
    AGREEMENT.write_text(json.dumps({k: v for k, v in result.items() if k != "disagreements"}, ensure_ascii=False, indent=1),
                         encoding="utf-8")
    pending = {k: v for k, v in result["disagreements"].items() if k not in adjudication}
    if pending:
        rows = list(adjudication.values()) + [
            {"key": k, "first": _as_cell(v["first"]), "second": _as_cell(v["second"]), "final": "", "rationale": ""}
            for k, v in pending.items()]
        with ADJUDICATION.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, ADJUDICATION_COLUMNS, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(sorted(rows, key=lambda r: _sort_key(r["key"])))
    typer.echo(json.dumps({k: result[k] for k in ("messages", "kappa", "by_source")}, ensure_ascii=False, indent=1))
    typer.echo(f"{len(result['disagreements'])} disagreements, {result['adjudicated']} adjudicated; {len(pending)} added to {ADJUDICATION}")


@app.command("apply-adjudication")
def apply_adjudication(labels_dir: Path = typer.Option(LABELS_DIR)) -> None:
    """Write every adjudicated ``final`` label into the label files (splits and digests kept)."""
    labels = all_labels(labels_dir)
    changed = 0
    for key, row in read_adjudication().items():
        if not row.get("final") or key not in labels:
            continue
        emotion, intent, traits = _labels_of(row["final"])
        old = labels[key]
        if (old.emotion, old.intent, old.customer_type) != (emotion, intent, traits):
            labels[key] = RealLabel(key, emotion, intent, traits, old.split, old.text_sha1)
            changed += 1
    write_label_files(labels_dir, labels.values())
    typer.echo(f"{changed} labels changed by adjudication")


DATACARD = REAL_DIR / "DATACARD.md"
SOURCE_NOTES = {
    "jddc_uss": ("JDDC USS valid split (JD.com, 2018), every buyer turn of its 330 dialogues",
                 "none stated; JDDC was distributed by JD for research: research-only"),
    "dataclue_cic": ("DataCLUE CIC train+dev (Taobao/Tmall), a seeded sample of single messages",
                     "none stated; a CLUE research benchmark: research-only"),
    "jddc_baseline": ("JDDC 2018 baseline windows (JD.com), the last buyer bubble of a seeded sample of windows",
                      "none stated; JDDC research data: research-only"),
}


def render_datacard(labels_dir: Path = LABELS_DIR) -> str:
    """The real set's data card, from the committed label, second-pass and agreement files only."""
    from collections import Counter

    from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT

    labels = list(all_labels(labels_dir).values())
    agreement = json.loads(AGREEMENT.read_text(encoding="utf-8")) if AGREEMENT.is_file() else None
    lines = [
        "# Data card: the real labelled set",
        "",
        "Generated by `python -m kefu_router.training.corpus.real_set datacard` from the committed files; do not edit.",
        "Real buyer messages from public corpora, labelled by this team under `shared/spec/labels.md`,",
        "`training/data/GUIDELINE.md` and `LABELLING.md`. Only labels are committed, keyed by the source's own ids;",
        "`real_set build --shared-data ../shared/data` joins them with the text.",
        "",
        "| source | what was labelled | licence as stated | messages | conversations |",
        "|---|---|---|---:|---:|",
    ]
    for source in SOURCES:
        mine = [lab for lab in labels if lab.source == source]
        if mine:
            what, licence = SOURCE_NOTES[source]
            lines.append(f"| {source} | {what} | {licence} | {len(mine):,} | {len({conversation_of(l.key) for l in mine}):,} |")
    lines += ["", "Weights trained on these rows inherit the research-only terms of the text.", "",
              "## Splits", "Frozen per conversation (a JDDC USS dialogue, a run of 25 baseline windows, a CIC message), "
              "stratified on emotion|intent per source. The test split is never used for a choice.", "",
              "| source | train | dev | test |", "|---|---:|---:|---:|"]
    for source in SOURCES:
        counts = Counter(lab.split for lab in labels if lab.source == source)
        if counts:
            lines.append(f"| {source} | {counts['train']:,} | {counts['dev']:,} | {counts['test']:,} |")
    for head, values in (("emotion", EMOTION.labels), ("intent", INTENT.labels)):
        counts = Counter(getattr(lab, head) for lab in labels)
        lines += ["", f"## {head}", "", "| label | messages | share |", "|---|---:|---:|"]
        lines += [f"| {v} | {counts[v]:,} | {counts[v] / max(len(labels), 1):.1%} |" for v in values]
    traits = Counter(t for lab in labels for t in lab.customer_type)
    lines += ["", "## customer_type (traits shown in the message)", "", "| trait | messages |", "|---|---:|"]
    lines += [f"| {t} | {traits[t]:,} |" for t in CUSTOMER_TYPE.labels]
    lines.append(f"| (none) | {sum(1 for lab in labels if not lab.customer_type):,} |")
    if agreement:
        lines += ["", "## Agreement", "",
                  f"A blind second pass over {agreement['messages']:,} messages drawn as whole conversations "
                  "(`second_pass.tsv`), by annotators who never saw the first labels. Both passes were made by "
                  "language-model annotators working from the same guideline, not by two people: the figures "
                  "measure how well-defined the guideline is more than human agreement.",
                  "Every disagreement was adjudicated (`adjudication.tsv`) and the final labels are in `labels/`.", "",
                  "| head | Cohen's kappa | raw agreement |", "|---|---:|---:|"]
        for name, kappa in agreement["kappa"].items():
            raw = agreement["raw_agreement"].get(name)
            lines.append(f"| {name} | {'n/a' if kappa is None else f'{kappa:.3f}'} | {'' if raw is None else f'{raw:.3f}'} |")
        lines += ["", "| source | messages | emotion kappa | intent kappa |", "|---|---:|---:|---:|"]
        lines += [f"| {s} | {v['messages']:,} | {v['kappa']['emotion']:.3f} | {v['kappa']['intent']:.3f} |"
                  for s, v in agreement.get("by_source", {}).items()]
        lines.append(f"\nAdjudicated disagreements: {agreement.get('adjudicated', 0):,}.")
    return "\n".join(lines) + "\n"


@app.command("datacard")
def datacard() -> None:
    """Regenerate training/data/real/DATACARD.md."""
    DATACARD.write_text(render_datacard(), encoding="utf-8")
    typer.echo(f"wrote {DATACARD}")


def _sort_key(key: str):
    return [int(p) if p.isdigit() else p for p in key.split(":")]


if __name__ == "__main__":
    app()
