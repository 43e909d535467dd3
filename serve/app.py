"""The FastAPI app factory.

    app = create_app()                    # settings from the environment (KEFU_ROUTER_*)
    uvicorn.run(app)                      # or: kefu-router serve

The model and playbooks load in the lifespan hook, never at import, so tests
and tools can import the app cheaply; a missing or corrupt bundle or a bad
playbooks file stops start-up with its own message. `/readyz` turns ready only
after a warm-up prediction. A Predictor and a Router built elsewhere (the CLI
builds them to fail early with a clear error) can be handed in.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Optional, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kefu_router.predictor import Predictor
from kefu_router.routing import Router
from kefu_router.serve.batcher import MicroBatcher, Overloaded
from kefu_router.serve.observability import Metrics, ServiceMiddleware
from kefu_router.serve.routes import health, v1_router
from kefu_router.serve.settings import Settings
from kefu_router.text import Message

log = logging.getLogger("kefu_router.serve")


def _package_version() -> str:
    try:
        return version("kefu-router")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"

WARM_UP = [Message.of("在吗"), Message.of("我买的杯子收到就是碎的，什么时候能给我退款？", [("agent", "您好，请问有什么可以帮您")])]


def serving_predictor(settings: Settings) -> Predictor:
    """The Predictor the service runs, built from its settings (the CLI builds it before start-up to fail early)."""
    # ONNX runs of 16 messages: on a small CPU the model is compute-bound and longer
    # padded batches waste more than they save (bench_serve: 0.70x -> 0.91x at concurrency 32).
    return Predictor(settings.model, precision=settings.precision, threads=settings.threads, batch_size=16,
                     spinning=settings.spinning)


class Service:
    """What the routes share: settings, model, router, batcher, metrics, readiness."""

    def __init__(self, settings: Settings, predictor: Optional[Predictor], router: Optional[Router]):
        self.settings = settings
        self.predictor = predictor
        self.router = router
        self.metrics = Metrics()
        self.batcher: Optional[MicroBatcher] = None
        self.store = None  # kefu_router.store.Store, when the prediction log is on
        self.prediction_log = None  # kefu_router.store.writer.PredictionLog
        self._gauges: Optional[asyncio.Task] = None
        self.ready = False

    async def start(self) -> None:
        s = self.settings
        if self.predictor is None:
            self.predictor = serving_predictor(s)
        if self.router is None:
            self.router = Router(s.playbooks, window=s.window, review_below=self.predictor.bundle.review_below)
        self.batcher = MicroBatcher(
            self.predictor.predict, batching=s.batching, max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms, max_queue=s.max_queue, on_batch=self.metrics.observe_batch,
        )
        self.predictor.predict(WARM_UP)  # first runs are slow (allocations, kernel choice): pay before ready
        # What start-up allocated (model, tokenizer, app, schemas) lives as long as the process: moved out
        # of the collector's reach, full collections under load stop walking it (shorter latency tail).
        gc.collect()
        gc.freeze()
        self.batcher.start()
        if s.prediction_log:
            await asyncio.get_running_loop().run_in_executor(None, self._open_store)
            self._gauges = asyncio.get_running_loop().create_task(self._refresh_agreement(), name="kefu-agreement")
        self.ready = True
        log.info("ready", extra={"model_version": self.predictor.version, "precision": self.predictor.precision,
                                 "batching": s.batching, "max_batch_size": s.max_batch_size, "max_wait_ms": s.max_wait_ms,
                                 "playbooks": self.router.playbooks.source})

    def _open_store(self) -> None:
        """Open and migrate the store; a database that is down is logged, and the log's thread keeps trying."""
        from kefu_router.store import Store, StoreUnavailable
        from kefu_router.store.writer import PredictionLog

        s, m = self.settings, self.metrics
        self.store = Store(s.db)  # ValueError for a URL that is not one: start-up fails with it
        migrated = True
        try:
            self.store.migrate()
            m.store_up.set(1)
        except StoreUnavailable as exc:
            log.error("prediction store unavailable at start-up; predictions are served and queued",
                      extra={"store": repr(self.store), "reason": str(exc)})
            migrated = False
            m.store_up.set(0)
        key = s.text_hmac_key.get_secret_value().encode() if s.text_hmac_key else None
        self.prediction_log = PredictionLog(
            self.store, migrated=migrated, text_key=key, store_text=s.store_text, max_text_chars=s.max_text_chars,
            batch_size=s.log_batch_size, interval_s=s.log_interval_ms / 1000, max_pending=s.log_max_pending,
            on_write=m.observe_log_write, on_health=lambda up: m.store_up.set(int(up)), on_drop=m.log_dropped.inc,
        )
        m.log_pending.set_function(lambda: self.prediction_log.pending)
        self.prediction_log.start()
        log.info("prediction log on", extra={"store": repr(self.store), "store_text": s.store_text, "text_hmac": key is not None})

    @property
    def keeps_text(self) -> bool:
        """Whether log rows need the message text (for its HMAC or its masked copy)."""
        return self.settings.store_text or self.settings.text_hmac_key is not None

    def log_predictions(self, rows: list[dict]) -> None:
        if self.prediction_log is not None:
            self.prediction_log.put(rows)

    def add_feedback(self, **fields):
        """Store.add_feedback, waiting for the prediction log once when the prediction may still be queued (sync)."""
        from kefu_router.store import UnknownPrediction

        try:
            return self.store.add_feedback(**fields)
        except UnknownPrediction:
            if not self.prediction_log.flush(timeout=2.0):  # not written yet: a 404 would be wrong
                from kefu_router.store import StoreUnavailable

                raise StoreUnavailable(f"predictions are still waiting to be written ({self.prediction_log.last_error})") from None
            return self.store.add_feedback(**fields)

    async def _refresh_agreement(self) -> None:
        """Every minute: the agreement gauges from the store, over the last `quality_window_days`."""
        from kefu_router.quality.figures import agreement_by_head

        while True:
            try:
                since = datetime.now(timezone.utc) - timedelta(days=self.settings.quality_window_days)
                rows = await asyncio.get_running_loop().run_in_executor(
                    None, self.store.corrected_messages, since, datetime.now(timezone.utc) + timedelta(seconds=1))
                for head, value in agreement_by_head(rows).items():
                    self.metrics.agreement.labels(head).set(value["agreement"] if value["n"] else float("nan"))
            except Exception as exc:  # the store being down must not end the task
                log.warning("agreement gauges not refreshed", extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})
            await asyncio.sleep(60)

    async def stop(self) -> None:
        self.ready = False
        if self.batcher:
            await self.batcher.stop()
        if self._gauges:
            self._gauges.cancel()
            await asyncio.gather(self._gauges, return_exceptions=True)
        if self.prediction_log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.prediction_log.stop)
        if self.store is not None:
            self.store.close()

    async def predict(self, messages: Sequence[Message]) -> list[dict]:
        predictions = await self.batcher.predict(messages, timeout=self.settings.request_timeout_s)
        self.metrics.count_predictions(predictions)
        return predictions


def create_app(
    settings: Optional[Settings] = None, *, predictor: Optional[Predictor] = None, router: Optional[Router] = None
) -> FastAPI:
    settings = settings or Settings()
    svc = Service(settings, predictor, router)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            await svc.start()
        except Exception as exc:
            log.error("start-up failed: %s", exc)
            await svc.stop()
            raise
        yield
        await svc.stop()

    app = FastAPI(
        title="kefu-router",
        version=_package_version(),
        summary="把电商客服对话路由到处理方案（playbook）：情绪、意图、客户类型与理由。",
        description="Route Chinese e-commerce customer-service chats to playbooks. "
        "`/v1/*` needs an API key when KEFU_ROUTER_API_KEY is set. The review console is at `/console`.",
        lifespan=lifespan,
    )
    app.state.service = svc
    app.include_router(health)
    app.include_router(v1_router(settings))
    if settings.console:
        from kefu_router.serve.console import console_router  # jinja2 is imported only when the console is on

        app.include_router(console_router(settings))
    app.add_middleware(ServiceMiddleware, metrics=svc.metrics, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad input back, which fails to encode for lone surrogates
        # and can return customer text; field, reason and error type are enough.
        return JSONResponse({"detail": [_error(e) for e in exc.errors()]}, status_code=422)

    return app


def _error(e: dict) -> dict:
    """One validation error as the API reports it: type, where, and why (the JSON parser's reason included)."""
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "json_invalid" and e.get("ctx", {}).get("error"):
        msg = f"{msg}: {e['ctx']['error']}"
    return {"type": e["type"], "loc": list(e["loc"]), "msg": msg}
