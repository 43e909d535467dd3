"""Simulate four weeks of routed traffic with agents' corrections, through the HTTP API, and write the quality report.

    python benchmarks/simulate_feedback_month.py                  # -> runs/feedback_month/{kefu_router.db,quality.html,quality.json}

Traffic: conversations of the corpus's dev and test splits (training/data/kefu_corpus.jsonl), whose gold
labels play the agents' final labels. Each simulated day routes `--per-day` conversations through
POST /v1/route (the bundled model, an in-process TestClient, a SQLite store); agents review 90% of
the flagged decisions and 15% of the others and send POST /v1/feedback with the gold labels of every
customer turn. From week 3 the mix shifts towards after-sales and complaints (post-Double-11), so the
drift figures have something to show, and 30% of the traffic goes to a second bundle version
("-canary": a copy of the same model under another version string, so its figures differ only by traffic).

The service stamps predictions and feedback with the current time; the script replaces the clock of
kefu_router.serve.routes and kefu_router.store.database with the simulated day (this script only).
Then it runs `kefu-router quality report` on the store. It prints what it did; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "training" / "data" / "kefu_corpus.jsonl"


class SimClock(datetime):
    """datetime whose now() is the simulated moment."""

    current = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)

    @classmethod
    def now(cls, tz=None):
        return cls.current if tz is None else cls.current.astimezone(tz)


def conversations(rng: random.Random) -> list[list[dict]]:
    by_id = defaultdict(list)
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("split") in ("dev", "test"):
            by_id[row["conversation_id"]].append(row)
    out = [sorted(rows, key=lambda r: r["turn"]) for rows in by_id.values()]
    out = [c for c in out if any(r.get("role", "customer") == "customer" for r in c)]
    rng.shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "feedback_month")
    ap.add_argument("--per-day", type=int, default=40, help="conversations routed per simulated day")
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    import kefu_router.serve.routes as routes
    import kefu_router.store.database as database
    from kefu_router.bundle import DEFAULT_BUNDLE
    from kefu_router.serve.app import create_app
    from kefu_router.serve.settings import Settings

    rng = random.Random(args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    db = args.out / "kefu_router.db"
    canary = args.out / "canary-bundle"
    shutil.copytree(DEFAULT_BUNDLE, canary)
    meta = json.loads((canary / "metadata.json").read_text(encoding="utf-8"))
    meta["version"] += "-canary"
    (canary / "metadata.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")

    routes.datetime = database.datetime = SimClock  # the simulated clock (see the docstring)
    pool = conversations(rng)
    late = [c for c in pool if any(r.get("intent") in ("after_sales", "complaint") for r in c)]
    start = SimClock.current
    counts = defaultdict(int)
    started = time.perf_counter()
    settings = dict(db=str(db), log_interval_ms=50, threads=1)
    with TestClient(create_app(Settings(**settings))) as main_client, \
            TestClient(create_app(Settings(model=canary, **settings))) as canary_client:
        for day in range(args.days):
            for k in range(args.per_day):
                SimClock.current = start + timedelta(days=day, minutes=k * 20)
                shifted = day >= 14
                conv = rng.choice(late if shifted and rng.random() < 0.6 else pool)
                client = canary_client if shifted and rng.random() < 0.3 else main_client
                cid = f"sim-{day:02d}-{k:03d}"
                turns = [{"role": r.get("role") or "customer", "text": r["text"]} for r in conv]
                answer = client.post("/v1/route", json={"conversation_id": cid, "turns": turns}).json()
                counts["routed"] += 1
                if rng.random() > (0.9 if answer["needs_human_review"] else 0.15):
                    continue
                counts["reviewed"] += 1
                SimClock.current += timedelta(minutes=5)
                for p in answer["predictions"]:
                    gold = conv[p["turn"]]
                    r = client.post("/v1/feedback", json={
                        "prediction_id": p["prediction_id"], "emotion": gold["emotion"], "intent": gold["intent"],
                        "customer_type": gold.get("customer_type") or [], "agent_id": f"agent-{rng.randrange(12):02d}",
                        "idempotency_key": f"{cid}-{p['turn']}"})
                    counts[f"feedback {r.status_code}"] += 1
            print(f"day {day + 1:2d}: {dict(counts)}", file=sys.stderr)
        for c in (main_client, canary_client):
            c.app.state.service.prediction_log.flush(30)
    print(f"simulated {args.days} days in {time.perf_counter() - started:.0f} s: {dict(counts)}")

    from typer.testing import CliRunner

    from kefu_router.cli import app

    end = (start + timedelta(days=args.days)).isoformat()
    result = CliRunner().invoke(app, ["quality", "report", "--db", str(db), "--since", start.isoformat(), "--until", end,
                                      "-o", str(args.out / "quality.html"), "--json", str(args.out / "quality.json")])
    print(result.output)


if __name__ == "__main__":
    main()
