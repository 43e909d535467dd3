"""CPU cost of the prediction log's two halves, without HTTP: what a /v1/route request adds on the event loop, and
what one logged row costs the log's thread (Store.insert_predictions on 500-row batches).

    python benchmarks/bench_prediction_log.py                       # SQLite in a temp dir
    python benchmarks/bench_prediction_log.py --db postgresql://kefu:kefu@127.0.0.1/kefu_test

Rows look like the service's: a routing decision and two message predictions with 4-decimal scores for every
label. Process CPU time, so the figure includes the database driver's own work. It prints; it asserts nothing.
`benchmarks/bench_serve.py --compare prediction-log` measures the same cost end to end, through the service.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import timeit
import types
from datetime import datetime, timezone
from pathlib import Path

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT
from kefu_router.serve.routes import _message_row

try:
    from kefu_router.serve.routes import new_prediction_id
except ImportError:  # the code before os.urandom ids, for a before/after comparison
    import uuid

    def new_prediction_id() -> str:
        return uuid.uuid4().hex
from kefu_router.store import Store
from kefu_router.store.writer import PredictionLog


def prediction() -> dict:
    scores = lambda head: {label: round(random.random(), 4) for label in head.labels}  # noqa: E731
    return {"emotion": {"label": "angry", "score": 0.5, "scores": scores(EMOTION)},
            "intent": {"label": "complaint", "score": 0.5, "scores": scores(INTENT)},
            "customer_type": [{"label": "impatient", "zh": "急躁", "score": 0.7}], "customer_type_scores": scores(CUSTOMER_TYPE)}


def request_rows(svc, predictions: list[dict]) -> list[dict]:
    """What the /v1/route handler logs for one conversation (serve/routes.py)."""
    now, decision_id = datetime.now(timezone.utc), new_prediction_id()
    logged = [_message_row(svc, p, now, "在吗", conversation_id="c-1", turn=2 * i, decision_id=decision_id, needs_human_review=False)
              for i, p in enumerate(predictions)]
    return [{"id": decision_id, "kind": "route", "created_at": now, "model_version": "v1", "conversation_id": "c-1",
             "playbook": "logistics_tracking", "rule": "r1", "needs_human_review": False}, *(row for _, row in logged)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=None, help="SQLite file or URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    svc = types.SimpleNamespace(predictor=types.SimpleNamespace(version="v1"), keeps_text=False)
    predictions = [prediction(), prediction()]
    log = PredictionLog(store=None)  # put() only: no thread started

    def one_request():
        log.put(request_rows(svc, predictions))
        log._pending.clear()

    n = 50_000
    print(f"event loop: {timeit.timeit(one_request, number=n) / n * 1e6:.1f} us per /v1/route request with 2 customer turns (3 rows)")

    with tempfile.TemporaryDirectory(prefix="kefu-bench-log-") as tmp:
        store = Store(args.db or str(Path(tmp) / "log.db"))
        store.migrate()
        batches = [[row for _ in range(167) for row in request_rows(svc, predictions)] for _ in range(args.batches + 1)]
        store.insert_predictions(batches[0])  # connect, warm up
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in batches[1:]:
            store.insert_predictions(batch)
        rows = sum(map(len, batches[1:]))
        print(f"log thread: {(time.process_time() - cpu) / rows * 1e6:.1f} us CPU, {(time.perf_counter() - wall) / rows * 1e6:.1f} us wall "
              f"per row ({rows} rows in batches of {len(batches[1])}, {store!r})")
        store.close()


if __name__ == "__main__":
    main()
