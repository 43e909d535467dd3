"""`PredictionLog`: prediction rows leave the event loop through a queue and are written in batches by one thread.

    log = PredictionLog(store, text_key=b"...", store_text=False)
    log.start()
    log.put(rows)        # from the event loop: appends to a deque, never touches the database
    log.flush(2.0)       # wait until everything put so far is committed (False on timeout)
    log.stop()           # write what is left (bounded by `stop_timeout_s`), then end the thread

A batch is up to `batch_size` rows, written every `interval_s` at most (sooner when a full batch is
waiting). A row's `text` (the message as received) is turned into `text_hmac` and, when
`store_text` is on, a PII-masked `text_masked` here, in the thread; the raw text is dropped then.
When the database is down the batch is kept and retried with back-off (0.5 s doubling to 10 s),
so predictions are still served; beyond `max_pending` waiting rows the oldest are dropped and
counted (`dropped`, and the service's kefu_prediction_log_dropped_total). Feedback is never
queued: POST /v1/feedback commits before it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Optional

from kefu_router.privacy import mask_pii
from kefu_router.store.database import Store, StoreUnavailable, text_hmac

log = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, store: Store, *, migrated: bool = True, text_key: Optional[bytes] = None, store_text: bool = False,
                 max_text_chars: int = 2000, batch_size: int = 500, interval_s: float = 0.2,
                 max_pending: int = 200_000, stop_timeout_s: float = 10.0,
                 on_write: Callable[[int, float], None] | None = None,
                 on_health: Callable[[bool], None] | None = None, on_drop: Callable[[int], None] | None = None):
        self.store = store
        self.text_key = text_key
        self.store_text = store_text
        self.max_text_chars = max_text_chars
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.stop_timeout_s = stop_timeout_s
        self._on_write = on_write or (lambda rows, seconds: None)
        self._on_health = on_health or (lambda up: None)
        self._on_drop = on_drop or (lambda n: None)
        self._pending: deque[dict] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Condition()
        self._put = 0  # rows put so far (event loop), and rows written or dropped (thread): flush compares them
        self._settled = 0
        self.dropped = 0
        self.healthy: Optional[bool] = None  # None until the first write or migration
        self.last_error: Optional[str] = None
        self._migrated = migrated  # False: the thread migrates first (the database was down at start-up)
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kefu-prediction-log", daemon=True)
        self._thread.start()

    def put(self, rows: list[dict]) -> None:
        """Queue prediction rows (tables.Prediction columns, plus an optional raw `text`); O(len(rows)), no I/O."""
        self._pending.extend(rows)
        self._put += len(rows)
        overflow = len(self._pending) - self.max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped += overflow
            self._settle(overflow)
            self._on_drop(overflow)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self, timeout: float) -> bool:
        """Wait until every row put before this call is written (or dropped); False when `timeout` s pass first."""
        target = self._put
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._settled >= target, timeout)

    def stop(self) -> None:
        """Write what is waiting (at most `stop_timeout_s`), then end the thread; rows still unwritten are counted as dropped."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s + 1)
        left = len(self._pending)
        if left:
            log.error("prediction log stopped with unwritten rows", extra={"rows": left, "reason": self.last_error})
            self.dropped += left
            self._on_drop(left)

    def _settle(self, n: int) -> None:
        with self._done:
            self._settled += n
            self._done.notify_all()

    def _run(self) -> None:
        delay = 0.0
        stop_deadline: Optional[float] = None
        while True:
            if self._stopping.is_set():
                stop_deadline = stop_deadline or time.monotonic() + self.stop_timeout_s
                if not self._pending or time.monotonic() > stop_deadline:
                    return
            else:
                self._wake.wait(delay or self.interval_s)
                self._wake.clear()
            if not self._migrated:
                try:
                    self.store.migrate()
                    self._migrated = True
                except StoreUnavailable as exc:
                    self._failed(str(exc))
                    delay = min(10.0, max(0.5, delay * 2))
                    continue
            batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
            if not batch:
                continue
            rows = [self._prepare(row) for row in batch]
            started = time.perf_counter()
            try:
                self.store.insert_predictions(rows)
            except StoreUnavailable as exc:
                self._pending.extendleft(reversed(batch))  # keep the order; retried after the back-off
                self._failed(str(exc))
                delay = min(10.0, max(0.5, delay * 2))
                if stop_deadline is not None:
                    time.sleep(min(delay, max(0.0, stop_deadline - time.monotonic())))
                continue
            except Exception as exc:  # the database refused the batch (a data error): retry its rows one by one
                refused, unsent = self._insert_one_by_one(rows)
                if unsent:  # the store went away meanwhile: keep what was not written for the back-off
                    self._pending.extendleft(reversed(unsent))  # (prepared rows: preparing again changes nothing)
                    delay = min(10.0, max(0.5, delay * 2))
                    self._settle(len(batch) - len(unsent))
                    if refused:
                        self.dropped += refused
                        self._on_drop(refused)
                    continue
                if refused:
                    log.error("prediction log rows refused; dropped", extra={"rows": refused, "batch": len(batch),
                                                                             "reason": f"{type(exc).__name__}: {exc}"[:300]})
                    self.dropped += refused
                    self._on_drop(refused)
                if refused == len(batch):
                    self._settle(len(batch))
                    self._failed(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                self._on_write(len(rows) - refused, time.perf_counter() - started)
                self._settle(len(batch))
                continue
            delay = 0.0
            if self.healthy is not True:
                log.info("prediction log is writing", extra={"store": repr(self.store)})
            self.healthy, self.last_error = True, None
            self._on_health(True)
            self._on_write(len(rows), time.perf_counter() - started)
            self._settle(len(batch))

    def _insert_one_by_one(self, rows: list[dict]) -> tuple[int, list[dict]]:
        """Insert rows one at a time, so a row the database refuses (e.g. NUL in text on PostgreSQL) costs only
        itself: (rows refused, rows not tried because the store became unavailable)."""
        refused = 0
        for n, row in enumerate(rows):
            try:
                self.store.insert_predictions([row])
            except StoreUnavailable as exc:
                self._failed(str(exc))
                return refused, rows[n:]
            except Exception:
                refused += 1
        return refused, []

    def _failed(self, reason: str) -> None:
        if self.healthy is not False:
            log.error("prediction log cannot write; keeping rows and retrying", extra={"reason": reason})
        self.healthy, self.last_error = False, reason
        self._on_health(False)

    def _prepare(self, row: dict) -> dict:
        text = row.pop("text", None)
        if text is None:
            return row
        if self.text_key is not None:
            row["text_hmac"] = text_hmac(self.text_key, text)
        if self.store_text:
            row["text_masked"] = mask_pii(text[: self.max_text_chars]).replace("\x00", "")  # PostgreSQL refuses NUL
        return row
