"""Weak labels from the public corpora in ../shared/data: optional extra training rows (issue #3).

Nothing here is committed data: the corpora are read through a path (`shared_data`, or
$KEFU_SHARED_DATA) and a source whose files are absent is skipped with a log line.
Only our own reviewed mapping table, training/data/weak/jddc_action_to_intent.tsv, is in the repo.

A weak row labels only the head its source says something about; the others are None and
training masks them (data.label_arrays / train.head_loss). Weak rows always go to the TRAIN
split (split="train", source="weak:<name>", ids starting "weak:<name>:", which the corpus
never uses), and `add_weak_examples` drops any whose text is also a dev or test message.

Sources and the label decisions (the experiment in weak_experiment.py measures each alone):

- `jddc_intent` (jddc_uss): intent from the JD action through the mapping table; actions
  mapped to `-` (OTHER, ambiguous ones) are dropped. Context from `context_window`: each
  "user|||system" turn becomes (customer, user) then (agent, system), empty parts skipped.
- `jddc_displeasure` (jddc_uss): satisfaction 0 means "dissatisfied with the service", not
  "angry" -- most sat-0 turns are plain ("可以", "没有了", "退货"). So a sat-0 turn becomes
  `angry` only when it also carries a hostility cue (labels.md: 差评, 投诉, 什么破, 怎么回事 ...),
  `anxious` when it carries an urgency/worry cue and no hostility cue; all others are dropped.
  Small by construction (~70 rows in the valid split).
- `jddc_sat0` (jddc_uss): the unfiltered variant, every sat-0 turn -> `angry`, kept only so the
  experiment can show what the filter buys; not meant for real training runs.
- `reviews` (online_shopping_10_cats, waimai_10k, chnsenticorp_htl): positive reviews ->
  `satisfied` when they praise (a praise cue, no "but"/complaint cue); negative reviews ->
  `angry` when they carry a hostility cue (差评, 垃圾, 太差, 再也不 ...), otherwise dropped: a
  mild negative review ("有点重") is displeasure, neither angry nor anxious. Reviews longer than
  80 characters are dropped (chat register). Intent stays None: a review is not a request.
- `smp2020_ewect` (Weibo): angry -> angry, fear -> anxious, neutral -> neutral, happy ->
  satisfied only with a thanks/praise cue (Weibo "happy" is mostly cheering, "加油"); sad and
  surprise dropped. Retweet chains (//@...), @mentions and links are removed.
- `cped` (TV dialogue): anger -> angry, worried/fear -> anxious, neutral -> neutral,
  happy/grateful -> satisfied; the rest dropped. Context: the dialogue's previous utterances
  (up to 6), the target speaker's own lines as `customer` turns and the other speakers' as
  `agent` turns, so the model never sees a two-party chat where "customer" lines are someone else.

Each source is sampled to at most `max_rows` rows with a fixed seed, as balanced across the
labels it provides as its pools allow (water-filling: a small class gives all it has).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

from kefu_router.labels import EMOTION, INTENT
from kefu_router.training.data import SPLITS, Example, deduplicate

log = logging.getLogger(__name__)

SHARED_DATA_ENV = "KEFU_SHARED_DATA"
MAPPING_TSV = Path(__file__).resolve().parents[1] / "data" / "weak" / "jddc_action_to_intent.tsv"
CIC_MAP_TSV = MAPPING_TSV.with_name("cic_intent_map.tsv")  # reviewed against the real set's gold CIC labels
JDDC_CSV = "jddc_uss/jddc_uss_valid_user_turns.csv"  # only the valid split is shared; never read a test split
REVIEW_FILES = {
    "online_shopping_10_cats": "online_shopping_10_cats/online_shopping_10_cats.csv",
    "waimai_10k": "waimai_10k/waimai_10k.csv",
    "chnsenticorp_htl": "chnsenticorp_htl/ChnSentiCorp_htl_all.csv",
}
SMP_FILES = ("usual_eval_labeled.txt", "usual_test_labeled.txt", "virus_train.txt", "virus_eval_labeled.txt", "virus_test_labeled.txt")
CPED_FILES = ("valid_split.csv", "test_split.csv")

MAX_CONTEXT = 12  # (role, text) turns kept per weak row; training keeps config.max_context_turns of them
MAX_REVIEW_CHARS = 80
MAX_POST_CHARS = 100

# Cues (labels.md, section 1). Hostility wins over urgency, as in the spec's tie rule.
HOSTILE = re.compile(
    "差评|投诉|举报|12315|工商|消协|曝光|什么破|破东西|破玩意|垃圾|骗子|骗人|欺骗|坑人|坑爹|黑店|黑心|恶心|无语|"
    "太差|真差|差劲|滚|有病|搞什么|什么玩意|再也不|态度差|态度太差|敷衍|忽悠|不要脸|妈的|他妈|tmd|傻|凭什么|欺负|"
    "耍我|气死|太过分|过分了|离谱|服了|怎么回事|什么意思啊",
    re.IGNORECASE,
)
URGENT = re.compile("急|赶紧|尽快|快点|快些|担心|害怕|万一|来不及|等着用|马上要用|今天要用|明天要用|催|怎么还没|还没到|还没收到|还没发货|还没退|等了很久|等很久|等半天")
PRAISE = re.compile("不错|很好|真好|挺好|满意|喜欢|赞|棒|给力|好吃|推荐|谢谢|感谢|好评|超值|物超所值|值得|舒服|划算|完美|开心|高兴|太好了")
BUT = re.compile("但|不过|就是|可惜|只是|差|不好|难吃|一般|失望|不满")
THANKS_OR_PRAISE = re.compile("谢谢|感谢|感恩|满意|喜欢|赞|棒|好评|给力|开心|高兴|太好了|幸福")

# JDDC anonymisation -> the corpus's placeholders; JDDC emoji codes and HTML spaces dropped.
_JDDC_SUBS = [
    (re.compile(r"#E-[a-z]\[数字x\]|#E-[a-z]\d*"), ""),
    (re.compile(r"\[ORDERID_\d+\]"), "[订单x]"),
    (re.compile(r"&nbsp;?"), " "),
    (re.compile(r"\s+"), " "),
]
_PLACEHOLDER = re.compile(r"\[[^\]]{1,8}x\]|\[订单x\]")
_WEIBO_SUBS = [
    (re.compile(r"//@.*$"), ""),  # retweet chain: keep the poster's own words
    (re.compile(r"回复@[^:：\s]+[:：]?"), ""),
    (re.compile(r"@[^:：\s@]+[:：]?"), ""),
    (re.compile(r"https?://\S+"), ""),
    (re.compile(r"#[^#]{1,40}#"), ""),  # hashtag topics
    (re.compile(r"\s+"), " "),
]


def resolve_shared_data(shared_data: str | Path | None) -> Path | None:
    """The shared-data folder: the given path, else $KEFU_SHARED_DATA, else None."""
    value = shared_data or os.environ.get(SHARED_DATA_ENV)
    return Path(value) if value else None


def read_mapping(path: str | Path = MAPPING_TSV) -> dict[int, str | None]:
    """JD action id -> our intent (None for `-`, i.e. drop). Unknown intent ids are an error."""
    mapping = {}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            intent = row["intent"].strip()
            if intent != "-" and intent not in INTENT.labels:
                raise ValueError(f"{path}: action {row['id']} maps to unknown intent {intent!r}")
            mapping[int(row["id"])] = None if intent == "-" else intent
    return mapping


def _clean_jddc(text: str) -> str:
    for pattern, repl in _JDDC_SUBS:
        text = pattern.sub(repl, text)
    return text.strip()


def _has_words(text: str) -> bool:
    """Something besides placeholders, digits and punctuation."""
    return any(ch.isalpha() for ch in _PLACEHOLDER.sub("", text))


def _jddc_context(window: str) -> tuple[tuple[str, str], ...]:
    turns = []
    for turn in json.loads(window or "[]"):
        user, _, system = turn.partition("|||")
        for role, text in (("customer", _clean_jddc(user)), ("agent", _clean_jddc(system))):
            if text:
                turns.append((role, text))
    return tuple(turns[-MAX_CONTEXT:])


def _jddc_rows(root: Path) -> Iterable[dict] | None:
    path = root / JDDC_CSV
    if not path.is_file():
        return None
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("is_overall") == "0"]
    for i, r in enumerate(rows):
        r["row"] = i
        r["text"] = _clean_jddc(r["user_text"])
    return [r for r in rows if r["text"] and _has_words(r["text"])]


def _example(name: str, key: str, text: str, *, conversation: str | None = None, context=(), emotion=None, intent=None) -> Example:
    return Example(
        id=f"weak:{name}:{key}",
        conversation_id=f"weak:{name}:{conversation or key}",
        text=text,
        context=tuple(context),
        emotion=emotion,
        intent=intent,
        customer_type=None,
        split="train",
        source=f"weak:{name}",
    )


def _jddc_intent(root: Path) -> list[Example] | None:
    rows = _jddc_rows(root)
    if rows is None:
        return None
    mapping = read_mapping()
    out = []
    for r in rows:
        intent = mapping.get(int(r["action_id"]))
        if intent:
            out.append(_example("jddc_intent", f"{r['dialogue_idx']}:{r['row']}", r["text"], conversation=r["dialogue_idx"],
                                context=_jddc_context(r["context_window"]), intent=intent))
    return out


def displeasure_emotion(text: str) -> str | None:
    """The cue-filtered reading of a dissatisfied turn: angry, anxious or None (drop)."""
    if HOSTILE.search(text):
        return "angry"
    if URGENT.search(text):
        return "anxious"
    return None


def _jddc_displeasure(root: Path, filtered: bool = True) -> list[Example] | None:
    rows = _jddc_rows(root)
    if rows is None:
        return None
    name = "jddc_displeasure" if filtered else "jddc_sat0"
    out = []
    for r in rows:
        if r["sat3"] != "0":
            continue
        emotion = displeasure_emotion(r["text"]) if filtered else "angry"
        if emotion:
            out.append(_example(name, f"{r['dialogue_idx']}:{r['row']}", r["text"], conversation=r["dialogue_idx"],
                                context=_jddc_context(r["context_window"]), emotion=emotion))
    return out


def review_emotion(label: str, text: str) -> str | None:
    """Positive review that praises -> satisfied; negative review with hostility -> angry; else None."""
    if label == "1":
        return "satisfied" if PRAISE.search(text) and not BUT.search(text) and not HOSTILE.search(text) else None
    if label == "0":
        return "angry" if HOSTILE.search(text) else None
    return None


def _reviews(root: Path) -> list[Example] | None:
    found = {name: root / rel for name, rel in REVIEW_FILES.items() if (root / rel).is_file()}
    if not found:
        return None
    out = []
    for name, path in found.items():
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                text = re.sub(r"\s+", " ", (row.get("review") or "").replace("\ufeff", "")).strip()
                if not 2 <= len(text) <= MAX_REVIEW_CHARS:
                    continue
                emotion = review_emotion(str(row.get("label", "")).strip(), text)
                if emotion:
                    out.append(_example("reviews", f"{name}:{i}", text, emotion=emotion))
    return out


def clean_weibo(text: str) -> str:
    for pattern, repl in _WEIBO_SUBS:
        text = pattern.sub(repl, text)
    return text.strip()


def smp_emotion(label: str, text: str) -> str | None:
    if label == "angry":
        return "angry"
    if label == "fear":
        return "anxious"
    if label == "neutral":
        return "neutral"
    if label == "happy" and THANKS_OR_PRAISE.search(text):
        return "satisfied"
    return None  # sad, surprise, and happy without thanks or praise


def _smp(root: Path) -> list[Example] | None:
    folder = root / "smp2020_ewect"
    found = [folder / f for f in SMP_FILES if (folder / f).is_file()]
    if not found:
        return None
    out = []
    for path in found:
        for i, post in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            text = clean_weibo(str(post.get("content") or ""))
            emotion = smp_emotion(str(post.get("label")), text)
            if emotion and 2 <= len(text) <= MAX_POST_CHARS:
                out.append(_example("smp2020_ewect", f"{path.stem}:{post.get('id', i)}", text, emotion=emotion))
    return out


CPED_EMOTION = {"anger": "angry", "worried": "anxious", "fear": "anxious", "neutral": "neutral", "happy": "satisfied", "grateful": "satisfied"}


def _cped(root: Path, context_turns: int = 6) -> list[Example] | None:
    folder = root / "cped"
    found = [folder / f for f in CPED_FILES if (folder / f).is_file()]
    if not found:
        return None
    out = []
    for path in found:
        dialogues: dict[str, list[dict]] = defaultdict(list)
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                dialogues[row["Dialogue_ID"]].append(row)
        for dialogue_id, rows in dialogues.items():
            rows.sort(key=lambda r: r["Utterance_ID"])
            for i, row in enumerate(rows):
                emotion = CPED_EMOTION.get(row["Emotion"].strip())
                text = row["Utterance"].strip()
                if not emotion or not text:
                    continue
                before = [r for r in rows[max(0, i - context_turns) : i] if r["Utterance"].strip()]
                context = [("customer" if r["Speaker"] == row["Speaker"] else "agent", r["Utterance"].strip()) for r in before]
                out.append(_example("cped", f"{path.stem}:{row['Utterance_ID']}", text, conversation=f"{path.stem}:{dialogue_id}",
                                    context=context, emotion=emotion))
    return out


def read_cic_map(path: str | Path = CIC_MAP_TSV) -> dict[str, tuple[str | None, str | None]]:
    """CIC label id -> (our intent or None, our emotion or None), from the reviewed table; unknown ids are an error."""
    table = {}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh, delimiter="\t"), start=2):
            intent = None if row["intent"] in ("", "-") else row["intent"]
            emotion = None if row["emotion"] in ("", "-") else row["emotion"]
            if (intent and intent not in INTENT.labels) or (emotion and emotion not in EMOTION.labels):
                raise ValueError(f"{path}:{lineno}: unknown label in {row}")
            table[row["cic_label"]] = (intent, emotion)
    return table


def _cic_intent(root: Path) -> list[Example] | None:
    """DataCLUE CIC messages the team did not label, with the intent (and for three intents the emotion) of
    the reviewed table `cic_intent_map.tsv`; messages of the real labelled set are left out."""
    from kefu_router.training.corpus.real_set import all_labels

    folder = root / "dataclue_cic"
    if not (folder / "train.json").is_file():
        return None
    table, labelled = read_cic_map(), set(all_labels())
    out = []
    for name in ("train", "dev"):
        for line in (folder / f"{name}.json").read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else None
            if not row or f"dataclue_cic:{name}:{row['id']}" in labelled:
                continue
            intent, emotion = table.get(str(row["label"]), (None, None))
            if intent or emotion:
                out.append(_example("cic_intent", f"{name}:{row['id']}", row["sentence"], intent=intent, emotion=emotion))
    return out


LOADERS: dict[str, Callable[[Path], list[Example] | None]] = {
    "jddc_intent": _jddc_intent,
    "jddc_displeasure": _jddc_displeasure,
    "jddc_sat0": lambda root: _jddc_displeasure(root, filtered=False),
    "reviews": _reviews,
    "smp2020_ewect": _smp,
    "cped": _cped,
    "cic_intent": _cic_intent,
}
SOURCES: tuple[str, ...] = tuple(LOADERS)


def weak_label(ex: Example) -> str:
    """The label a weak row provides (the balancing key)."""
    return ex.intent if ex.intent is not None else str(ex.emotion)


def balanced_sample(examples: list[Example], max_rows: int, seed: int, key: Callable[[Example], str] = weak_label) -> list[Example]:
    """At most max_rows rows, as even across labels as the pools allow, reproducible for a seed."""
    rng = random.Random(seed)
    pools: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        pools[key(ex)].append(ex)
    labels = sorted(pools)
    for label in labels:
        rng.shuffle(pools[label])
    quota = dict.fromkeys(labels, 0)
    remaining, open_labels = max_rows, list(labels)
    while remaining > 0 and open_labels:
        share = max(1, remaining // len(open_labels))
        for label in list(open_labels):
            take = min(share, len(pools[label]) - quota[label], remaining)
            quota[label] += take
            remaining -= take
            if quota[label] == len(pools[label]):
                open_labels.remove(label)
            if remaining == 0:
                break
    return [ex for label in labels for ex in pools[label][: quota[label]]]


def load_weak(source: str, shared_data: str | Path | None, max_rows: int = 3000, seed: int = 13) -> list[Example]:
    """Weak training rows of one source; [] (with a log line) when its files are absent."""
    if source not in LOADERS:
        raise ValueError(f"unknown weak source {source!r}; expected one of {', '.join(SOURCES)}")
    root = resolve_shared_data(shared_data)
    if root is None or not root.is_dir():
        log.warning("weak:%s skipped: no shared data folder (set shared_data or $%s)", source, SHARED_DATA_ENV)
        return []
    examples = LOADERS[source](root)
    if examples is None:
        log.warning("weak:%s skipped: its files are not under %s", source, root)
        return []
    examples, _ = deduplicate(examples)
    sample = balanced_sample(examples, max_rows, seed)
    counts: dict[str, int] = defaultdict(int)
    for ex in sample:
        counts[weak_label(ex)] += 1
    log.info("weak:%s: %d candidate rows -> %d sampled %s", source, len(examples), len(sample), dict(sorted(counts.items())))
    return sample


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text)


def add_weak_examples(splits: dict[str, list[Example]], config) -> list[str]:
    """Append each of config.weak_sources to splits["train"] (never dev/test); one report line per source.

    A weak row whose text is also a dev or test message is dropped, so weak data cannot carry
    a held-out message into training.
    """
    held_out = {_norm(ex.text) for s in SPLITS if s != "train" for ex in splits.get(s, [])}
    reports = []
    for source in config.weak_sources:
        rows = load_weak(source, config.shared_data, config.weak_max_rows, config.seed)
        kept = [ex for ex in rows if _norm(ex.text) not in held_out]
        splits["train"].extend(kept)
        if not rows:
            where = resolve_shared_data(config.shared_data) or f"shared_data/${SHARED_DATA_ENV} unset"
            reports.append(f"weak:{source}: 0 rows (files absent under {where}, or none passed the filters)")
            continue
        labelled = EMOTION.name if rows[0].emotion is not None else INTENT.name
        reports.append(
            f"weak:{source}: {len(kept)} {labelled}-only rows added to train "
            f"({len(rows) - len(kept)} dropped: same text as a dev/test message)"
        )
    return reports
