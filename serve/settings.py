"""Service settings, read from the environment (prefix KEFU_ROUTER_) or passed to `create_app`.

KEFU_ROUTER_MODEL and KEFU_ROUTER_PLAYBOOKS are the same variables the library
reads, so one environment configures the CLI, the tagger and the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_ROUTER_", extra="ignore", protected_namespaces=())

    model: Optional[Path] = Field(None, description="bundle directory, or `default` / `accurate` for a bundled model; default: `default`")
    precision: Literal["int8", "fp32"] = "int8"
    threads: Optional[int] = Field(None, ge=1, description="onnxruntime intra-op threads; default: all cores")
    spinning: bool = Field(False, description="onnxruntime threads busy-wait between runs (off: the event loop keeps the CPU)")
    playbooks: Optional[Path] = Field(None, description="playbooks YAML; default: the packaged playbooks.yaml")
    window: int = Field(5, ge=1, description="recent customer turns read for the conversation's emotion")

    batching: bool = Field(True, description="gather concurrent requests into one ONNX run")
    max_batch_size: int = Field(64, ge=1, description="messages per ONNX run")
    # 0: no waiting; requests that queued while the previous batch ran still share the next run, so
    # batches form under load without adding latency at low load (bench_serve: p50 at concurrency 1
    # 9.8 ms with a 3 ms wait, 5.1 ms without; throughput at concurrency 32 higher too).
    max_wait_ms: float = Field(0.0, ge=0, le=1000, description="longest a request waits for others to join its batch")
    max_queue: int = Field(2048, ge=1, description="messages waiting for the model before requests get 503")
    request_timeout_s: float = Field(10.0, gt=0, description="inference deadline per request (503 after it)")

    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger bodies get 413")
    max_messages: int = Field(64, ge=1, description="messages per /v1/classify request")
    max_turns: int = Field(50, ge=1, description="turns per conversation (and context turns per message)")
    max_text_chars: int = Field(2000, ge=1, description="longer texts are cut to this and flagged truncated")

    api_key: Optional[SecretStr] = Field(None, description="when set, /v1/* needs X-API-Key or a Bearer token")
    log_level: str = "INFO"
    log_masked_text: bool = Field(False, description="log message text, PII-masked (off: no text is logged)")

    # prediction log and feedback store (kefu_router.store); docs/serving.md "Prediction log and feedback"
    prediction_log: bool = Field(True, description="log every prediction and accept /v1/feedback (off: no database is opened)")
    db: str = Field("kefu_router.db", description="SQLite file (created on first start) or SQLAlchemy URL, "
                    "e.g. postgresql+psycopg://user:password@host/db")
    store_text: bool = Field(False, description="store each message's text, PII-masked (off: no text is stored)")
    text_hmac_key: Optional[SecretStr] = Field(None, description="key of the HMAC-SHA256 of each message's normalised "
                                               "text, stored so exports can check a chat export against it")
    log_batch_size: int = Field(500, ge=1, description="prediction rows per database write")
    log_interval_ms: float = Field(200.0, gt=0, le=60_000, description="longest a prediction row waits to be written")
    log_max_pending: int = Field(200_000, ge=1, description="prediction rows kept while the database is down; older ones are dropped and counted")
    quality_window_days: int = Field(28, ge=1, le=366, description="days /v1/quality and the agreement gauges look back")
    psi_warning: float = Field(0.2, gt=0, description="PSI above which a head's weekly label distribution is flagged as drift")

    # the review console (kefu_router.serve.console); docs/serving.md "Review console"
    console: bool = Field(True, description="serve the review console at /console (behind API_KEY when one is set)")
    console_timezone: str = Field("Asia/Shanghai", description="time zone of the console's dates and times (IANA name)")
