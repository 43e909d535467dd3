"""Quality figures from the prediction log and agents' feedback, split by model version.

Input rows come from `Store.messages` (message predictions with the agent's latest label feedback as
`final`) and `Store.decisions` (routing decisions with `final_playbook`). Per model version:

- `agreement[head]`: among messages an agent gave a final label for that head, the share the model
  predicted (customer_type: the same set of traits), overall and per ISO week (weeks start on Monday, UTC);
- `confusion[head]` for emotion and intent: counts, rows = the model's label, columns = the final label;
- `review_flag`: rate = flagged routing decisions / decisions; over routed messages an agent reviewed,
  precision = flagged that were corrected / flagged, recall = corrected that were flagged / corrected
  (corrected: any head the agent gave differs from the model);
- `playbook`: agreement of the routed playbook with the agent's final playbook;
- `drift[head]`: per week, the predicted label distribution and its population stability index against
  the training distribution, PSI = sum((p - q) * ln(p / q)) over labels, each share floored at 1e-4;
  `warning` when PSI > the threshold (0.2 by default: the usual "significant shift"). customer_type
  shares are over trait mentions plus "(none)" for a message without a trait.

A share with nothing to divide is None, never 0.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Iterable, Mapping, Optional

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT

from kefu_router.bundle_files import NO_TRAIT  # noqa: E402  (one spelling of "no trait")
PSI_FLOOR = 1e-4
HEAD_NAMES = tuple(h.name for h in HEADS)


def week_of(moment: datetime) -> str:
    """The ISO week of a UTC time, as the date of its Monday: '2026-11-02'."""
    return (moment - timedelta(days=moment.weekday())).date().isoformat()


def _share(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 4) if whole else None


def _predicted(row: Mapping, head: str):
    value = row.get(head)
    return tuple(value or ()) if head == CUSTOMER_TYPE.name else value


def _final(row: Mapping, head: str):
    final = row.get("final") or {}
    value = final.get(head)
    if value is None:
        return None
    return tuple(value) if head == CUSTOMER_TYPE.name else value


def is_corrected(row: Mapping) -> bool:
    """Whether the agent's final labels differ from the model's on any head the agent gave."""
    return any((f := _final(row, h)) is not None and f != _predicted(row, h) for h in HEAD_NAMES)


def agreement_by_head(rows: Iterable[Mapping]) -> dict[str, dict]:
    """{head: {n, agreed, agreement}} over rows with a final label for that head."""
    counts = {h: [0, 0] for h in HEAD_NAMES}
    for row in rows:
        for h in HEAD_NAMES:
            final = _final(row, h)
            if final is not None:
                counts[h][0] += 1
                counts[h][1] += final == _predicted(row, h)
    return {h: {"n": n, "agreed": a, "agreement": _share(a, n)} for h, (n, a) in counts.items()}


def distribution(rows: Iterable[Mapping], head: str) -> Counter:
    """Label counts of the model's predictions for one head (customer_type: trait mentions and '(none)')."""
    counts: Counter = Counter()
    for row in rows:
        if head == CUSTOMER_TYPE.name:
            counts.update(row.get(head) or [NO_TRAIT])
        else:
            counts[row.get(head)] += 1
    return counts


def bins(head: str) -> tuple[str, ...]:
    return (*CUSTOMER_TYPE.labels, NO_TRAIT) if head == CUSTOMER_TYPE.name else {h.name: h for h in HEADS}[head].labels


def psi(actual: Mapping[str, float], expected: Mapping[str, float], labels: Iterable[str]) -> float:
    """Population stability index of count (or share) maps over `labels`; shares floored at 1e-4."""
    labels = list(labels)
    a_total, e_total = sum(actual.get(k, 0) for k in labels), sum(expected.get(k, 0) for k in labels)
    if not a_total or not e_total:
        raise ValueError("PSI needs two non-empty distributions")
    total = 0.0
    for k in labels:
        p = max(actual.get(k, 0) / a_total, PSI_FLOOR)
        q = max(expected.get(k, 0) / e_total, PSI_FLOOR)
        total += (p - q) * math.log(p / q)
    return total


def _confusion(rows: list[Mapping], head) -> dict:
    index = head.label2id
    matrix = [[0] * head.size for _ in range(head.size)]
    for row in rows:
        final = _final(row, head.name)
        if final is not None and row.get(head.name) in index:
            matrix[index[row[head.name]]][index[final]] += 1
    return {"labels": list(head.labels), "zh": list(head.zh), "rows": "model", "columns": "agent", "matrix": matrix}


def _version_figures(messages: list[Mapping], decisions: list[Mapping], training: Optional[Mapping],
                     psi_warning: float) -> dict:
    reviewed = [r for r in messages if r.get("final")]
    weeks = sorted({week_of(r["created_at"]) for r in messages} | {week_of(r["created_at"]) for r in decisions})
    by_week = defaultdict(list)
    for r in reviewed:
        by_week[week_of(r["created_at"])].append(r)
    overall = agreement_by_head(reviewed)
    weekly = {w: agreement_by_head(by_week[w]) for w in weeks}
    agreement = {h: {**overall[h], "weekly": [{"week": w, **weekly[w][h]} for w in weeks]} for h in HEAD_NAMES}

    routed = [r for r in reviewed if r.get("needs_human_review") is not None]
    flagged = [r for r in routed if r["needs_human_review"]]
    corrected = [r for r in routed if is_corrected(r)]
    both = sum(1 for r in flagged if is_corrected(r))
    flag = {
        "decisions": len(decisions), "flagged": sum(1 for d in decisions if d.get("needs_human_review")),
        "reviewed_routed_messages": len(routed), "flagged_reviewed": len(flagged), "corrected": len(corrected),
        "flagged_and_corrected": both,
    }
    flag.update(rate=_share(flag["flagged"], flag["decisions"]), precision=_share(both, len(flagged)),
                recall=_share(both, len(corrected)))
    played = [d for d in decisions if d.get("final_playbook")]
    playbook = {"n": len(played), "agreed": sum(d["playbook"] == d["final_playbook"] for d in played)}
    playbook["agreement"] = _share(playbook["agreed"], playbook["n"])

    drift: dict = {}
    msg_by_week = defaultdict(list)
    for r in messages:
        msg_by_week[week_of(r["created_at"])].append(r)
    for h in HEAD_NAMES:
        labels = bins(h)
        expected = (training or {}).get(h)
        points = []
        for w in weeks:
            counts = distribution(msg_by_week[w], h)
            n = sum(counts.values())
            value = round(psi(counts, expected, labels), 4) if expected and n else None
            points.append({"week": w, "messages": len(msg_by_week[w]),
                           "distribution": {k: _share(counts.get(k, 0), n) for k in labels},
                           "psi": value, "warning": value is not None and value > psi_warning})
        drift[h] = {"weekly": points}
    return {
        "messages": len(messages), "reviewed": len(reviewed), "corrected": sum(map(is_corrected, reviewed)),
        "agreement": agreement, "confusion": {h.name: _confusion(reviewed, h) for h in (EMOTION, INTENT)},
        "review_flag": flag, "playbook": playbook, "drift": drift,
    }


def quality_figures(messages: list[Mapping], decisions: list[Mapping], *, since: datetime, until: datetime,
                    training: Optional[Mapping] = None, training_source: Optional[str] = None,
                    psi_warning: float = 0.2) -> dict:
    """All figures, per model version (newest first), plus the warnings to show on top.

    `training`: {head: {label: count}} of the reference bundle's training data (None: no drift figures,
    and a warning says so). Times are UTC datetimes.
    """
    versions: dict[str, dict[str, list]] = defaultdict(lambda: {"messages": [], "decisions": []})
    for r in messages:
        versions[r["model_version"]]["messages"].append(r)
    for d in decisions:
        versions[d["model_version"]]["decisions"].append(d)
    last_seen = {v: max(r["created_at"] for r in rows["messages"] + rows["decisions"]) for v, rows in versions.items()}
    order = sorted(versions, key=last_seen.get, reverse=True)
    per_version = {v: _version_figures(versions[v]["messages"], versions[v]["decisions"], training, psi_warning) for v in order}
    warnings = []
    if training is None:
        warnings.append("drift not computed: the bundle's metadata has no label_distribution "
                        "(re-export it, or pass --training-distribution FILE)")
    for v, fig in per_version.items():
        for h, d in fig["drift"].items():
            for point in d["weekly"]:
                if point["warning"]:
                    warnings.append(f"{v}: {h} drift in the week of {point['week']}: PSI {point['psi']:.3f} > {psi_warning:g}")
    return {
        "since": since.isoformat(), "until": until.isoformat(), "psi_warning": psi_warning,
        "training_distribution": {"source": training_source, "available": training is not None},
        "model_versions": order, "versions": per_version, "warnings": warnings,
    }
