"""Labelling packets for the real set, and the checker of a labeller's answer file.

A packet is a plain-text file of whole conversations (text never leaves the machine it was built on: packets are
written outside the repository). Every buyer turn to label carries its key; labellers answer with one TSV line
per key::

    key <TAB> emotion <TAB> intent <TAB> traits (comma-separated, or -) [<TAB> note]

``build_packets`` draws the first-pass set (every JDDC USS buyer turn, a seeded sample of DataCLUE CIC messages
and of JDDC baseline windows) and a blind second pass of whole conversations, disjoint packets for each.
``check_answers`` validates an answer file against its packet: every key once, every label id known.

    python -m kefu_router.training.corpus.annotate build --shared-data ../shared/data -o /tmp/packets
    python -m kefu_router.training.corpus.annotate check PACKET.txt ANSWERS.tsv
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import typer

from kefu_router.labels import check_labels
from kefu_router.training.corpus.real_sources import RealConversation, read_source

ROLE_ZH = {"customer": "买家", "agent": "客服"}
KEY_LINE = re.compile(r"<<(\S+)>>")
SKIP = "SKIP"  # an answer line "key<TAB>SKIP<TAB>reason": the turn is not a buyer message (a splitter error)

app = typer.Typer(add_completion=False, help=__doc__)


def render(conv: RealConversation, show_hints: bool) -> str:
    """One conversation as packet text; keyed buyer turns are marked ``<<key>>``."""
    lines = [f"=== {conv.source} {conv.conversation_id} ==="]
    for turn in conv.turns:
        text = turn.text.replace("\n", " ")
        if turn.key:
            hint = f"   (source hint: {turn.hint})" if show_hints and turn.hint else ""
            lines.append(f"<<{turn.key}>> {ROLE_ZH[turn.role]}: {text}{hint}")
        else:
            lines.append(f"    {ROLE_ZH[turn.role]}: {text}")
    return "\n".join(lines)


def _sample(convs: list[RealConversation], n: int, rng: random.Random, dedupe) -> list[RealConversation]:
    seen, picked = set(), []
    for conv in rng.sample(convs, len(convs)):
        key = dedupe(conv)
        if key in seen:
            continue
        seen.add(key)
        picked.append(conv)
        if len(picked) == n:
            break
    return picked


def draw(shared_data: Path, n_cic: int, n_baseline: int, seed: int) -> dict[str, list[RealConversation]]:
    """The conversations to label per source: all JDDC USS dialogues, seeded samples of the other two."""
    rng = random.Random(seed)
    cic = list(read_source("dataclue_cic", shared_data))
    baseline = list(read_source("jddc_baseline", shared_data))
    last_two = lambda c: tuple(t.text for t in c.turns[-2:])  # noqa: E731 - overlapping windows repeat turns
    return {
        "jddc_uss": list(read_source("jddc_uss", shared_data)),
        "dataclue_cic": _sample(cic, n_cic, rng, lambda c: c.turns[-1].text),
        "jddc_baseline": _sample(baseline, n_baseline, rng, last_two),
    }


def _chunks(convs: list[RealConversation], turns_per_packet: int) -> list[list[RealConversation]]:
    out, current, count = [], [], 0
    for conv in convs:
        current.append(conv)
        count += len(conv.customer_turns())
        if count >= turns_per_packet:
            out.append(current)
            current, count = [], 0
    if current:
        out.append(current)
    return out


PACKET_TURNS = {"jddc_uss": 250, "dataclue_cic": 500, "jddc_baseline": 200}


@app.command("build")
def build(
    shared_data: Path = typer.Option(..., help="the ../shared/data folder"),
    out: Path = typer.Option(..., "-o", help="output folder, outside the repository"),
    n_cic: int = 3000,
    n_baseline: int = 1600,
    second_share: float = 0.15,
    seed: int = 2026,
) -> None:
    """Write first-pass and blind second-pass packets (the second pass: whole conversations, no hints)."""
    rng = random.Random(seed + 1)
    drawn = draw(shared_data, n_cic, n_baseline, seed)
    for kind in ("first", "second"):
        (out / kind).mkdir(parents=True, exist_ok=True)
    counts = {"first": 0, "second": 0}
    for source, convs in drawn.items():
        second = rng.sample(convs, max(1, round(len(convs) * second_share)))
        for kind, chosen in (("first", convs), ("second", second)):
            for chunk in _chunks(chosen, PACKET_TURNS[source]):
                counts[kind] += 1
                (out / kind / f"{counts[kind]:03d}_{source}.txt").write_text(
                    "\n\n".join(render(c, show_hints=kind == "first") for c in chunk) + "\n", encoding="utf-8")
        turns = sum(len(c.customer_turns()) for c in convs)
        typer.echo(f"{source}: {len(convs)} conversations, {turns} buyer turns to label")
    typer.echo(f"{counts['first']} first-pass and {counts['second']} second-pass packets in {out}")


def packet_keys(packet: Path) -> list[str]:
    return KEY_LINE.findall(packet.read_text(encoding="utf-8"))


def parse_answer(line: str) -> tuple[str, str, str, tuple[str, ...]] | str:
    """``(key, emotion, intent, traits)`` for a label line, the key alone for a SKIP line; ValueError if bad."""
    parts = line.rstrip("\n").split("\t")
    if len(parts) >= 2 and parts[1] == SKIP:
        return parts[0]
    if len(parts) < 4:
        raise ValueError(f"expected key, emotion, intent, traits separated by tabs, got {len(parts)} fields")
    key, emotion, intent, traits = (p.strip() for p in parts[:4])
    return (key, *check_labels(emotion, intent, "" if traits == "-" else traits))  # LabelError is a ValueError


def check_answers(packet: Path, answers: Path) -> list[str]:
    """Every problem of an answer file against its packet, as ``file:line: reason`` strings (empty when fine)."""
    expected = packet_keys(packet)
    problems, seen = [], set()
    for lineno, line in enumerate(answers.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed = parse_answer(line)
        except ValueError as exc:
            problems.append(f"{answers.name}:{lineno}: {exc}")
            continue
        key = parsed if isinstance(parsed, str) else parsed[0]
        if key not in expected:
            problems.append(f"{answers.name}:{lineno}: key {key} is not in {packet.name}")
        elif key in seen:
            problems.append(f"{answers.name}:{lineno}: key {key} answered twice")
        seen.add(key)
    missing = [k for k in expected if k not in seen]
    if missing:
        problems.append(f"{answers.name}: {len(missing)} keys unanswered, first {missing[:3]}")
    return problems


@app.command("check")
def check(packet: Path, answers: Path) -> None:
    """Validate ANSWERS (TSV) against PACKET; exit 1 listing every problem."""
    problems = check_answers(packet, answers)
    for p in problems:
        typer.echo(p)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {len(packet_keys(packet))} keys answered")


@app.command("adjudication-packet")
def adjudication_packet(
    shared_data: Path = typer.Option(..., help="the ../shared/data folder"),
    out: Path = typer.Option(..., "-o", help="packet file to write, outside the repository"),
) -> None:
    """Every pending disagreement of adjudication.tsv with its conversation up to the turn and both labels."""
    from kefu_router.training.corpus.real_set import index_turns, read_adjudication

    pending = {k: row for k, row in read_adjudication().items() if not row.get("final")}
    index = index_turns(shared_data)
    blocks = []
    for key, row in pending.items():
        conv, position = index[key]
        lines = [f"=== {key} ==="]
        for turn in conv.turns[: position + 1]:
            mark = f"<<{turn.key}>> " if turn.key == key else "    "
            lines.append(f"{mark}{ROLE_ZH[turn.role]}: {turn.text}")
        lines.append(f"    A: {row['first']}    B: {row['second']}")
        blocks.append("\n".join(lines))
    out.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    typer.echo(f"{len(blocks)} disagreements -> {out}")


if __name__ == "__main__":
    app()
