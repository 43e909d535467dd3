"""Load-test the routing service over loopback, with micro-batching on and off.

    python benchmarks/bench_serve.py --model models/default

1. start `kefu-router serve` on 127.0.0.1 (a free port), batching on, then off;
2. wait for /readyz;
3. per concurrency level (1, 8, 32, 64): a few warm-up requests, then a bounded
   number of POST /v1/route requests (customer conversations of 1-3 customer
   turns) from that many concurrent clients, stopping early at --max-seconds;
4. print p50/p95/p99 latency and requests/s per level, and the throughput
   ratio (batching on / off) at concurrency 32;
5. from the server's own Prometheus counters, the share of wall time its
   inference thread was inside ONNX runs (model%: wall time, so it includes
   waiting for a core) and the mean messages per ONNX run.

The clients run on the same machine and take CPU from the server, so figures
are a floor for what a separate load generator would see. They are spread over
--client-processes processes: a single Python client saturates near 160 req/s
here and would hide the server's behaviour at high concurrency. The issue's target
(2-core box, bundled model): at concurrency 32 batching gives >= 3x the
throughput of batching off, with p99 under 100 ms. This script prints; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kefu_router.bundle import resolve_bundle_path

HOST = "127.0.0.1"  # loopback only, never another address
CONVERSATIONS = [
    [{"role": "customer", "text": "这条裙子有L码吗"}],
    [{"role": "customer", "text": "我买的杯子收到就是碎的"}, {"role": "agent", "text": "亲，非常抱歉，麻烦发一下照片"},
     {"role": "customer", "text": "什么破东西 我要投诉你们"}],
    [{"role": "customer", "text": "我的快递到哪了"}, {"role": "agent", "text": "包裹已到杭州中转站"},
     {"role": "customer", "text": "怎么还没到 明天就要用啊"}],
    [{"role": "customer", "text": "A款和B款哪个好 纠结"}, {"role": "agent", "text": "两款面料不同，您主要什么场合穿呢"},
     {"role": "customer", "text": "上班穿，再考虑下"}, {"role": "agent", "text": "上班推荐A款"}, {"role": "customer", "text": "好的"}],
    [{"role": "customer", "text": "能便宜点吗 别家更便宜"}],
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model: Path, batching: bool, port: int, extra_env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from kefu_router.cli import app; app()", "serve", "--model", str(model),
           "--host", HOST, "--port", str(port), "--batching" if batching else "--no-batching"]
    env = {**os.environ, **extra_env}
    log = tempfile.TemporaryFile()  # a file, not a pipe: an unread pipe fills up and stalls the server
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready within 120 s")


def inference_totals(base: str) -> tuple[float, float, float]:
    """(seconds in ONNX runs, runs, messages) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        for sample in family.samples:
            totals[sample.name] = sample.value
    return (totals.get("kefu_inference_seconds_sum", 0.0), totals.get("kefu_inference_seconds_count", 0.0),
            totals.get("kefu_batch_size_sum", 0.0))


async def _client(url: str, concurrency: int, requests: int, start_at: float, max_seconds: float) -> tuple[list[float], int, float]:
    """One client process: `concurrency` connections; starts sending at wall-clock `start_at`."""
    latencies: list[float] = []
    errors = sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for i in range(min(concurrency, 8)):  # warm-up: open connections, not measured
            await client.post(url, json={"turns": CONVERSATIONS[i % len(CONVERSATIONS)]})
        await asyncio.sleep(max(start_at - time.time(), 0))
        stop_at = time.time() + max_seconds

        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests and time.time() < stop_at:
                body = {"turns": CONVERSATIONS[sent % len(CONVERSATIONS)]}
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.time()


def _client_process(job: tuple) -> tuple[list[float], int, float]:
    return asyncio.run(_client(*job))


def load(url: str, concurrency: int, requests: int, max_seconds: float, processes: int) -> dict:
    """`concurrency` connections spread over client processes (one Python client tops out near 150-200
    requests/s on a small CPU, below what the server can answer), all starting at the same moment."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    start_at = time.time() + 2 + 0.5 * processes  # after every process has started and warmed up
    jobs = [(url, c, requests * c // concurrency, start_at, max_seconds) for c in shares]
    base = url.rsplit("/v1/", 1)[0]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pending = pool.map_async(_client_process, jobs)
        time.sleep(max(start_at - time.time(), 0))
        before = inference_totals(base)
        results = pending.get()
    after = inference_totals(base)
    elapsed = max(r[2] for r in results) - start_at
    latencies = [x for r in results for x in r[0]]
    seconds, runs, messages = (b - a for a, b in zip(before, after))
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"n": len(latencies), "errors": sum(r[1] for r in results), "rps": len(latencies) / elapsed,
            "p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000,
            "model_share": seconds / elapsed, "per_run": messages / max(runs, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle directory (default: the bundled model)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=int, default=600, help="requests per level (upper bound)")
    parser.add_argument("--max-seconds", type=float, default=20, help="time bound per level")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="KEFU_ROUTER_MAX_WAIT_MS for the server")
    parser.add_argument("--max-batch-size", type=int, default=None, help="KEFU_ROUTER_MAX_BATCH_SIZE for the server")
    parser.add_argument("--spinning", choices=["true", "false"], default=None, help="KEFU_ROUTER_SPINNING for the server")
    parser.add_argument("--threads", type=int, default=None, help="KEFU_ROUTER_THREADS (onnxruntime intra-op threads)")
    parser.add_argument("--client-processes", type=int, default=4, help="load-generating processes (connections spread over them)")
    args = parser.parse_args()
    model = resolve_bundle_path(args.model)
    env = {k: str(v) for k, v in {"KEFU_ROUTER_MAX_WAIT_MS": args.max_wait_ms,
                                  "KEFU_ROUTER_MAX_BATCH_SIZE": args.max_batch_size, "KEFU_ROUTER_SPINNING": args.spinning,
                                  "KEFU_ROUTER_THREADS": args.threads}.items() if v is not None}
    print(f"server environment {env or 'defaults'}")
    print(f"model {model}  cpus {os.cpu_count()}  requests/level <= {args.requests}  seconds/level <= {args.max_seconds}  "
          f"client processes <= {args.client_processes}")
    print(f"{'batching':>8} {'conc':>5} {'n':>6} {'err':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'model%':>7} {'msg/run':>8}")
    results: dict[tuple[bool, int], dict] = {}
    for batching in (True, False):
        port = free_port()
        server = start_server(model, batching, port, env)
        try:
            for c in args.concurrency:
                r = load(f"http://{HOST}:{port}/v1/route", c, args.requests, args.max_seconds, args.client_processes)
                results[(batching, c)] = r
                print(f"{'on' if batching else 'off':>8} {c:>5} {r['n']:>6} {r['errors']:>4} {r['rps']:>8.1f} "
                      f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} {r['model_share']:>7.0%} {r['per_run']:>8.1f}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    if (True, 32) in results and (False, 32) in results:
        ratio = results[(True, 32)]["rps"] / results[(False, 32)]["rps"]
        print(f"throughput ratio at concurrency 32 (batching on / off): {ratio:.2f}x; "
              f"p99 with batching {results[(True, 32)]['p99']:.1f} ms")


if __name__ == "__main__":
    main()
