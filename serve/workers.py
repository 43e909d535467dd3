"""Several server processes behind one port: `kefu-router serve --workers N`.

On a small CPU one process tops out where its event loop and the model's
threads fight for the same cores; N processes with 1/N of the cores' ONNX
threads each serve more requests (docs/serving.md has the figures). Every
worker loads its own model and batches its own requests. Settings reach the
workers through the environment (uvicorn starts them as fresh processes), and
Prometheus runs in multiprocess mode so that `/metrics`, whichever worker
answers it, adds up all of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from kefu_router.serve.settings import Settings

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def run_workers(settings: Settings, overrides: dict, workers: int, *, host: str, port: int) -> None:
    import uvicorn

    for name, value in overrides.items():  # command-line options, as the workers' Settings() reads them
        os.environ[f"KEFU_ROUTER_{name.upper()}"] = str(value)
    if settings.threads is None:  # split the cores, or N processes x all cores oversubscribe them
        os.environ["KEFU_ROUTER_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    metrics_dir = tempfile.mkdtemp(prefix="kefu-router-metrics-")
    os.environ[MULTIPROC_DIR] = metrics_dir
    try:
        uvicorn.run("kefu_router.serve.workers:worker_app", factory=True, workers=workers, host=host, port=port,
                    log_config=None, access_log=False)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app():
    """The app of one worker process: settings from the environment, JSON logs like the parent's."""
    from kefu_router.serve.app import create_app
    from kefu_router.serve.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
