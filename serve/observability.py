"""Prometheus metrics, JSON logs, and the ASGI middleware that records both and limits body size.

Every app gets its own metrics registry, so tests can build several apps in one
process. Logs are one JSON object per line; request logs carry method, path,
status, latency, request id and what the handler adds (counts, playbook, rule),
never message text: handlers may add PII-masked text only when
KEFU_ROUTER_LOG_MASKED_TEXT is on.

The body limit is a small middleware of our own rather than FastAPI's
`max_body_size`, which only recent FastAPI releases have.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT

log = logging.getLogger("kefu_router.serve.access")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = {"registry": self.registry}
        self.requests = Counter("kefu_requests", "HTTP requests", ["endpoint", "status"], **reg)
        self.latency = Histogram(
            "kefu_request_seconds", "HTTP request latency", ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 10), **reg,
        )
        self.batch_size = Histogram(
            "kefu_batch_size", "messages per ONNX run", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), **reg
        )
        self.inference = Histogram(
            "kefu_inference_seconds", "time of one ONNX run (tokenising included)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1), **reg,
        )
        self.labels = Counter("kefu_predicted_labels", "predicted labels per head", ["head", "label"], **reg)
        self.routed = Counter("kefu_routed", "routing decisions per playbook", ["playbook", "needs_human_review"], **reg)
        self.log_rows = Counter("kefu_prediction_log_rows", "prediction rows written to the store", **reg)
        self.log_dropped = Counter("kefu_prediction_log_dropped", "prediction rows dropped (store down too long, or refused)", **reg)
        self.log_write = Histogram("kefu_prediction_log_write_seconds", "time of one batched write to the store",
                                   buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), **reg)
        self.log_pending = Gauge("kefu_prediction_log_pending", "prediction rows waiting to be written",
                                 multiprocess_mode="livesum", **reg)
        self.store_up = Gauge("kefu_store_up", "1 when the last write to the prediction store succeeded",
                              multiprocess_mode="livemin", **reg)
        self.agreement = Gauge("kefu_feedback_agreement", "share of agent-reviewed messages whose final label the model "
                               "predicted, per head, over KEFU_ROUTER_QUALITY_WINDOW_DAYS", ["head"],
                               multiprocess_mode="livemax", **reg)
        for head in (EMOTION, INTENT, CUSTOMER_TYPE):  # expose zeros so dashboards see every label
            for label in head.labels:
                self.labels.labels(head.name, label)

    def exposition(self) -> bytes:
        """The text /metrics serves: this process's metrics, or every worker's when several run."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # set by `serve --workers N` before workers start
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def observe_log_write(self, rows: int, seconds: float) -> None:
        self.log_rows.inc(rows)
        self.log_write.observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def count_predictions(self, predictions: Iterable[dict]) -> None:
        for p in predictions:
            self.labels.labels("emotion", p["emotion"]["label"]).inc()
            self.labels.labels("intent", p["intent"]["label"]).inc()
            for trait in p["customer_type"]:
                self.labels.labels("customer_type", trait["label"]).inc()


_RECORD_FIELDS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send all logs (uvicorn's included) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class ServiceMiddleware:
    """Per request: 413 over `max_body_bytes`, a request id, metrics and one structured log line."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        status = 500
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # a body sent without (or beyond) its Content-Length
                    raise HTTPException(413, too_large)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        too_large = f"request body larger than {self.max_body_bytes} bytes"
        declared = headers.get(b"content-length")
        try:
            if declared is not None and not declared.isdigit():
                await JSONResponse({"detail": "bad Content-Length header"}, status_code=400)(scope, receive, send_with_id)
            elif declared is not None and int(declared) > self.max_body_bytes:
                await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            if endpoint not in ("/metrics", "/healthz", "/readyz"):
                fields = scope.get("state", {}).get("log", {})
                log.info(
                    "request",
                    extra={"request_id": request_id, "method": scope["method"], "path": scope["path"], "status": status,
                           "ms": round(seconds * 1000, 2), **fields},
                )
