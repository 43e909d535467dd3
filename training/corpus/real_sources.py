"""Readers for the real buyer-text corpora in ``../shared/data``, as conversations of keyed turns.

Every customer turn gets a key made of the source's own ids, so labels can be committed without text:

- ``jddc_uss:<split>:<dialogue_idx>:<turn>``: JDDC USS dialogues rebuilt from their sliding windows; ``turn``
  is the 0-based position of the buyer turn in the dialogue (the first three turns of each dialogue appear only
  as context in the source, they get keys too).
- ``dataclue_cic:<file>:<id>``: DataCLUE CIC single messages (``file`` is ``train`` or ``dev``), no context.
- ``jddc_baseline:<file>:<line>``: the last buyer block of one JDDC 2018 baseline window (``line`` is 1-based in
  ``<file>.enc``); the window's earlier blocks are its context, split into roles by :func:`split_window`.

Only the files this project may read are opened: the JDDC USS *valid* split, DataCLUE ``train.json`` and
``dev.json``, and the baseline's ``train.enc`` / ``test.enc``. Raises ``FileNotFoundError`` naming the file
when a source is missing.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SOURCES = ("jddc_uss", "dataclue_cic", "jddc_baseline")


@dataclass
class RealTurn:
    role: str  # "customer" | "agent"
    text: str
    key: str | None = None  # customer turns only
    hint: str | None = None  # the source's own label for this turn, shown to labellers as a hint


@dataclass
class RealConversation:
    source: str
    conversation_id: str
    turns: list[RealTurn] = field(default_factory=list)

    def customer_turns(self) -> list[tuple[int, RealTurn]]:
        return [(i, t) for i, t in enumerate(self.turns) if t.key]


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is ../shared/data beside the repository?)")
    return path


# ---------------------------------------------------------------- JDDC USS ---------------------------------------

def _split_pair(element: str) -> tuple[str, str]:
    user, _, system = element.partition("|||")
    return user.strip(), system.strip()


def read_jddc_uss(root: Path, split: str = "valid") -> Iterator[RealConversation]:
    """Rebuild each JDDC USS dialogue from its sliding windows (``<split>_jddc.txt``, ``valid`` only here).

    Each line is ``[window of 'user|||system' pairs] TAB [action ids] TAB satisfaction``; the last pair's user
    part is the new buyer turn, and the next line fills in the agent's reply to it. A dialogue ends with the
    ``OVERALL`` line. The hint of a turn is its JD action name and satisfaction (0 dissatisfied .. 2 satisfied).
    """
    if split != "valid":
        raise ValueError("only the JDDC USS valid split may be read; its test split is reserved for evaluation")
    folder = Path(root) / "jddc_uss"
    actions = _jddc_action_names(folder)
    pairs: list[list[str]] = []  # [user, system] per dialogue turn
    hints: dict[int, str] = {}
    index = 0
    lines = _need(folder / f"{split}_jddc.txt").read_text(encoding="utf-8").splitlines()
    for raw in lines:
        if not raw.strip():
            continue
        window_text, action_text, sat = raw.split("\t")
        window = [_split_pair(e) for e in ast.literal_eval(window_text)]
        action_ids = ast.literal_eval(action_text)
        if window[-1][0] == "OVERALL":
            if pairs and window[-2][1]:
                pairs[-1][1] = window[-2][1]
            yield _uss_conversation(split, index, pairs, hints)
            pairs, hints, index = [], {}, index + 1
            continue
        if not pairs:
            pairs = [list(p) for p in window]
        else:
            if len(window) >= 2 and window[-2][1]:
                pairs[-1][1] = window[-2][1]
            pairs.append(list(window[-1]))
        hints[len(pairs) - 1] = f"{actions.get(action_ids[-1], action_ids[-1])} sat={sat.strip()}"
    if pairs:
        yield _uss_conversation(split, index, pairs, hints)


def _jddc_action_names(folder: Path) -> dict[int, str]:
    names = {}
    path = folder / "act_jddc.txt"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split()
            if len(parts) >= 2 and parts[-1].isdigit():
                names[int(parts[-1])] = " ".join(parts[:-1])
            elif len(parts) >= 2 and parts[0].isdigit():
                names[int(parts[0])] = " ".join(parts[1:])
    return names


def _uss_conversation(split: str, index: int, pairs: list[list[str]], hints: dict[int, str]) -> RealConversation:
    conv = RealConversation("jddc_uss", f"{split}:{index}")
    for turn, (user, system) in enumerate(pairs):
        conv.turns.append(RealTurn("customer", user, key=f"jddc_uss:{split}:{index}:{turn}", hint=hints.get(turn)))
        if system:
            conv.turns.append(RealTurn("agent", system))
    return conv


# ---------------------------------------------------------------- DataCLUE CIC -----------------------------------

def read_dataclue_cic(root: Path) -> Iterator[RealConversation]:
    """Each CIC message (``train.json``, ``dev.json``) as a one-turn conversation; hint = its noisy intent."""
    for name in ("train", "dev"):
        path = _need(Path(root) / "dataclue_cic" / f"{name}.json")
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = f"dataclue_cic:{name}:{row['id']}"
            conv = RealConversation("dataclue_cic", f"{name}:{row['id']}")
            conv.turns.append(RealTurn("customer", row["sentence"], key=key, hint=row.get("label_des")))
            yield conv


# ---------------------------------------------------------------- JDDC baseline ----------------------------------

# Agent turns in JD chats follow templates; a buyer rarely writes these.
_AGENT_CUES = re.compile(
    r"亲爱的|亲亲|小妹|妹子|请您稍等|请稍等|稍等一下|为您|帮您|给您|您好|您的|您是|您可以|您看|请问|还请|"
    r"麻烦您|抱歉|谅解|感谢您|有什么问题我可以|还有其他|#E-s|客官|[哦呢哈]~|建议您|核实|为您查询|正在为您|"
    r"^亲[，,~ ]|系统|已经.{0,4}(?:申请|提交|备注|登记|催促)|耐心等待|[哦哈呢]$"
)
_BUYER_CUES = re.compile(
    r"^(?:咨询订单号|订单编号|https?://)|我的|我要|我想|我买|我在|我这|怎么还|为什么|什么时候|多久|能不能|可以吗|"
    r"[吗啊呀么嘛][?？]?$|[?？]$"
)


def agent_score(utterance: str) -> float:
    """How agent-like one utterance is: +1 per agent cue, -1 per buyer cue (a heuristic, not a label).

    An utterance with no cue leans slightly towards the buyer: buyers write short, unmarked bubbles.
    """
    score = len(_AGENT_CUES.findall(utterance)) - len(_BUYER_CUES.findall(utterance))
    return score if score else -0.1


def split_window(window: str, blocks: int = 5) -> list[tuple[str, list[str]]]:
    """Split one JDDC baseline window into its blocks Q,A,Q,A,Q (buyer, agent, ...), each a list of utterances.

    The source joins utterances with ',' and does not mark block boundaries. Each utterance gets an
    :func:`agent_score`; the split into ``blocks`` contiguous non-empty blocks that alternate buyer/agent,
    starting and ending with the buyer, is the one that maximises the agent score inside agent blocks minus the
    score inside buyer blocks (dynamic programming over boundaries). Returns ``[(role, utterances), ...]``.
    Raises ``ValueError`` when the window has fewer utterances than blocks.
    """
    utterances = [u.strip() for u in window.rstrip().rstrip(",").split(",")]
    utterances = [u for u in utterances if u]
    n = len(utterances)
    if n < blocks:
        raise ValueError(f"window has {n} utterances, fewer than {blocks} blocks")
    scores = [agent_score(u) for u in utterances]
    prefix = [0.0]
    for s in scores:
        prefix.append(prefix[-1] + s)
    neg = float("-inf")
    # best[b][i]: best value with the first i utterances split into b blocks; block b-1 (0-based) is agent if odd.
    best = [[neg] * (n + 1) for _ in range(blocks + 1)]
    back = [[0] * (n + 1) for _ in range(blocks + 1)]
    best[0][0] = 0.0
    for b in range(1, blocks + 1):
        sign = 1.0 if (b - 1) % 2 == 1 else -1.0
        for i in range(b, n + 1):
            for j in range(b - 1, i):
                if best[b - 1][j] == neg:
                    continue
                value = best[b - 1][j] + sign * (prefix[i] - prefix[j])
                if value > best[b][i]:
                    best[b][i], back[b][i] = value, j
    bounds, i = [], n
    for b in range(blocks, 0, -1):
        j = back[b][i]
        bounds.append((j, i))
        i = j
    bounds.reverse()
    return [("agent" if k % 2 else "customer", utterances[j:i]) for k, (j, i) in enumerate(bounds)]


def read_jddc_baseline(root: Path, files: tuple[str, ...] = ("train", "test")) -> Iterator[RealConversation]:
    """Each baseline window as a conversation whose last utterance (one buyer bubble) is the one keyed turn.

    A window always ends with a buyer block, so its last utterance is the buyer's whatever the splitter decides;
    the other utterances are context, their roles from :func:`split_window` (a heuristic: it can be wrong).
    Consecutive utterances of one role are joined into one turn. A window the splitter cannot split (fewer than
    five utterances) is skipped.
    """
    for name in files:
        path = _need(Path(root) / "jddc_baseline" / f"{name}.enc")
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                blocks = split_window(line)
            except ValueError:
                continue
            conv = RealConversation("jddc_baseline", f"{name}:{lineno}")
            *earlier, (_, last_block) = blocks
            earlier.append(("customer", last_block[:-1]))
            for role, utterances in earlier:
                if utterances:
                    conv.turns.append(RealTurn(role, "，".join(utterances)))
            conv.turns.append(RealTurn("customer", last_block[-1], key=f"jddc_baseline:{name}:{lineno}"))
            yield conv


READERS = {"jddc_uss": read_jddc_uss, "dataclue_cic": read_dataclue_cic, "jddc_baseline": read_jddc_baseline}


def read_source(name: str, root: str | Path) -> Iterator[RealConversation]:
    """The conversations of one real source under ``root`` (``../shared/data``); ``name`` in :data:`SOURCES`."""
    if name not in READERS:
        raise ValueError(f"unknown real source {name!r}; expected one of {', '.join(SOURCES)}")
    return READERS[name](Path(root))
