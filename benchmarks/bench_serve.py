"""Load-test the routing service over loopback, with micro-batching on and off.

    python benchmarks/bench_serve.py --model models/default

1. time the service's Predictor alone (no HTTP) with 1 and with 32 conversations
   per call: what batching gains on the model itself, on this machine;
2. start `kefu-router serve` on 127.0.0.1 (a free port), batching on, then off,
   and wait for /readyz;
3. per concurrency level (1, 8, 32, 64): a few warm-up requests, then a bounded
   number of POST /v1/route requests (customer conversations of 1-3 customer
   turns) from that many concurrent keep-alive connections, stopping early at
   --max-seconds;
4. print p50/p95/p99 latency and requests/s per level, and the throughput
   ratio (batching on / off) at concurrency 32;
5. from the server's Prometheus counters, the share of wall time its inference
   thread was inside ONNX runs (model%: wall time, so it includes waiting for a
   core; summed over --workers) and the mean messages per ONNX run; from /proc, the CPU milliseconds
   per request of the server and of the clients.

The clients run on the same cores as the server, so they are a minimal HTTP/1.1
client on raw asyncio streams, spread over --client-processes processes (the
httpx client this script used before saturated near 160 req/s per process and
took CPU the server needed: the server's figures rose with this client). The issue's target (2-core box, bundled
model): at concurrency 32 batching gives >= 3x the throughput of batching off,
with p99 under 100 ms. This script prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen


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


def start_server(model: Path, batching: bool, port: int, extra_env: dict, workers: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from kefu_router.cli import app; app()", "serve", "--model", str(model),
           "--host", HOST, "--port", str(port), "--batching" if batching else "--no-batching", "--workers", str(workers)]
    env = {**os.environ, **extra_env}
    log = tempfile.TemporaryFile()  # a file, not a pipe: an unread pipe fills up and stalls the server
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            with urlopen(f"http://{HOST}:{port}/readyz", timeout=1):  # 503 until warmed up raises
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready within 120 s")


def inference_totals(base: str) -> tuple[float, float, float]:
    """(seconds in ONNX runs, runs, messages) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {}
    for family in text_string_to_metric_families(urlopen(f"{base}/metrics", timeout=10).read().decode()):
        for sample in family.samples:
            totals[sample.name] = sample.value
    return (totals.get("kefu_inference_seconds_sum", 0.0), totals.get("kefu_inference_seconds_count", 0.0),
            totals.get("kefu_batch_size_sum", 0.0))


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: pre-encoded requests, status and Content-Length parsed,
    nothing else. The load runs on the server's own cores, so every CPU millisecond the client spends
    is taken from the server under test: the table prints the client's CPU per request. Any answer it
    cannot read counts as an error."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "_Connection":
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        if match is None:
            raise ConnectionError("answer without Content-Length")
        return status, await self.reader.readexactly(int(match.group(1)))

    def close(self) -> None:
        self.writer.close()


def encode_request(host: str, port: int, path: str, body: dict) -> bytes:
    payload = json.dumps(body, ensure_ascii=False).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def _client(url: str, concurrency: int, requests: int, start_at: float, max_seconds: float) -> tuple[list[float], int, float, float]:
    """One client process: `concurrency` connections; starts sending at wall-clock `start_at`."""
    parts = urlsplit(url)
    bodies = [encode_request(parts.hostname, parts.port, parts.path, {"turns": turns}) for turns in CONVERSATIONS]
    latencies: list[float] = []
    errors = sent = 0
    connections = [await _Connection.open(parts.hostname, parts.port) for _ in range(concurrency)]
    for i, conn in enumerate(connections[:8]):  # warm-up, not measured; check the answers are routes
        status, answer = await conn.send(bodies[i % len(bodies)])
        if status != 200 or "playbook" not in json.loads(answer):
            raise SystemExit(f"warm-up request failed: {status} {answer[:300]!r}")
    await asyncio.sleep(max(start_at - time.time(), 0))
    stop_at = time.time() + max_seconds
    cpu = time.process_time()

    async def worker(conn: _Connection) -> None:
        nonlocal sent, errors
        while sent < requests and time.time() < stop_at:
            request = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            try:
                status, _ = await conn.send(request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                latencies.append(time.perf_counter() - t0)
                return  # the connection is unusable after a broken answer
            latencies.append(time.perf_counter() - t0)
            errors += status != 200

    await asyncio.gather(*(worker(conn) for conn in connections))
    cpu = time.process_time() - cpu
    for conn in connections:
        conn.close()
    return latencies, errors, time.time(), cpu


def _client_process(job: tuple) -> tuple[list[float], int, float, float]:
    try:
        import uvloop  # installed with the serve extra; the clients use less CPU with it
        return uvloop.run(_client(*job))
    except ImportError:
        return asyncio.run(_client(*job))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process and its live descendants (workers) have used so far;
    NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children")).split()
    except (OSError, ValueError, IndexError):
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu(int(child)) for child in children)


def load(url: str, concurrency: int, requests: int, max_seconds: float, processes: int, server_pid: int) -> dict:
    """`concurrency` connections spread over client processes, all starting at the same moment."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    start_at = time.time() + 2 + 0.5 * processes  # after every process has started and warmed up
    jobs = [(url, c, requests * c // concurrency, start_at, max_seconds) for c in shares]
    base = url.rsplit("/v1/", 1)[0]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pending = pool.map_async(_client_process, jobs)
        time.sleep(max(start_at - time.time(), 0))
        before, server_cpu = inference_totals(base), process_cpu(server_pid)
        results = pending.get()
        server_cpu = process_cpu(server_pid) - server_cpu
    after = inference_totals(base)
    elapsed = max(r[2] for r in results) - start_at
    latencies = [x for r in results for x in r[0]]
    seconds, runs, messages = (b - a for a, b in zip(before, after))
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"n": len(latencies), "errors": sum(r[1] for r in results), "rps": len(latencies) / elapsed,
            "p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000,
            "model_share": seconds / elapsed, "per_run": messages / max(runs, 1),
            "server_cpu_ms": server_cpu / len(latencies) * 1000, "client_cpu_ms": sum(r[3] for r in results) / len(latencies) * 1000}


def model_alone(model: Path, settings: dict, seconds: float = 5.0) -> dict[int, float]:
    """Requests/s of the service's Predictor alone (no HTTP, no router), with 1 and 32 of the benchmark's
    conversations per call. Batching saves model time only; HTTP costs the same per request either way,
    so the service's ratio lands near this one, not far above it."""
    from kefu_router.conversation import Conversation
    from kefu_router.serve.app import serving_predictor
    from kefu_router.serve.settings import Settings

    predictor = serving_predictor(Settings(model=model, **settings))
    requests = [list(Conversation.of([(t["role"], t["text"]) for t in turns]).messages) for turns in CONVERSATIONS]
    rates = {}
    for per_call in (1, 32):
        predictor.predict([m for r in requests for m in r])  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            predictor.predict([m for k in range(per_call) for m in requests[(done + k) % len(requests)]])
            done += per_call
        rates[per_call] = done / (time.perf_counter() - started)
    return rates


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
    parser.add_argument("--workers", type=int, default=1, help="server processes (kefu-router serve --workers)")
    parser.add_argument("--client-processes", type=int, default=4, help="load-generating processes (connections spread over them)")
    parser.add_argument("--compare", choices=["batching", "prediction-log"], default="batching",
                        help="batching: on vs off (prediction log on); prediction-log: the log off vs on (batching on), "
                             "alternating off/on --rounds times so both see the same machine")
    parser.add_argument("--rounds", type=int, default=2, help="--compare prediction-log: off/on pairs per level")
    args = parser.parse_args()
    model = resolve_bundle_path(args.model)
    settings = {k: v for k, v in {"max_wait_ms": args.max_wait_ms, "max_batch_size": args.max_batch_size,
                                  "spinning": args.spinning, "threads": args.threads}.items() if v is not None}
    env = {f"KEFU_ROUTER_{name.upper()}": str(value) for name, value in settings.items()}
    print(f"server environment {env or 'defaults'}")
    print(f"model {model}  cpus {os.cpu_count()}  requests/level <= {args.requests}  seconds/level <= {args.max_seconds}  "
          f"client processes <= {args.client_processes}  server workers {args.workers}")
    store_dir = tempfile.TemporaryDirectory(prefix="kefu-bench-")  # the prediction log's SQLite file, never ./kefu_router.db
    env["KEFU_ROUTER_DB"] = str(Path(store_dir.name) / "kefu_router.db")
    if args.compare == "prediction-log":
        compare_prediction_log(model, env, args)
        return
    alone = model_alone(model, settings)
    print(f"model alone, no HTTP: {alone[1]:.0f} req/s with one conversation per call, {alone[32]:.0f} req/s "
          f"with 32 per call: {alone[32] / alone[1]:.2f}x from batching", flush=True)
    print(f"{'batching':>8} {'conc':>5} {'n':>6} {'err':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'model%':>7} {'msg/run':>8} {'srv CPU':>8} {'cli CPU':>8}")
    print(f"{'':>67}{'ms/req':>8} {'ms/req':>8}")
    results: dict[tuple[bool, int], dict] = {}
    for batching in (True, False):
        port = free_port()
        server = start_server(model, batching, port, env, args.workers)
        try:
            for c in args.concurrency:
                r = load(f"http://{HOST}:{port}/v1/route", c, args.requests, args.max_seconds, args.client_processes, server.pid)
                results[(batching, c)] = r
                print(f"{'on' if batching else 'off':>8} {c:>5} {r['n']:>6} {r['errors']:>4} {r['rps']:>8.1f} "
                      f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} {r['model_share']:>7.0%} {r['per_run']:>8.1f} "
                      f"{r['server_cpu_ms']:>8.2f} {r['client_cpu_ms']:>8.2f}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    if (True, 32) in results and (False, 32) in results:
        ratio = results[(True, 32)]["rps"] / results[(False, 32)]["rps"]
        print(f"throughput ratio at concurrency 32 (batching on / off): {ratio:.2f}x; "
              f"p99 with batching {results[(True, 32)]['p99']:.1f} ms")


def compare_prediction_log(model: Path, env: dict, args) -> None:
    """Batching on; per concurrency level, `--rounds` pairs of runs with the prediction log off, then on (SQLite)."""
    print(f"{'log':>4} {'conc':>5} {'n':>6} {'err':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'srv CPU ms/req':>15}")
    totals: dict[tuple[bool, int], list[dict]] = {}
    servers = {}
    try:
        for logging_on in (False, True):
            port = free_port()
            servers[logging_on] = (port, start_server(model, True, port, {**env, "KEFU_ROUTER_PREDICTION_LOG": str(logging_on).lower()}, args.workers))
        for c in args.concurrency:
            for _ in range(args.rounds):
                for logging_on in (False, True):
                    port, server = servers[logging_on]
                    r = load(f"http://{HOST}:{port}/v1/route", c, args.requests, args.max_seconds, args.client_processes, server.pid)
                    totals.setdefault((logging_on, c), []).append(r)
                    print(f"{'on' if logging_on else 'off':>4} {c:>5} {r['n']:>6} {r['errors']:>4} {r['rps']:>8.1f} {r['p50']:>8.1f} "
                          f"{r['p95']:>8.1f} {r['p99']:>8.1f} {r['server_cpu_ms']:>15.2f}", flush=True)
        rows = urlopen(f"http://{HOST}:{servers[True][0]}/metrics", timeout=5).read().decode()
        written = re.search(r"^kefu_prediction_log_rows_total ([0-9.e+]+)", rows, re.M)
        print(f"prediction rows written by the logging server: {written.group(1) if written else '?'}")
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(timeout=30)
    for c in args.concurrency:
        off, on = ([statistics.mean(r[k] for r in totals[(flag, c)]) for k in ("rps", "p50")] for flag in (False, True))
        print(f"concurrency {c}: {off[0]:.1f} -> {on[0]:.1f} req/s ({on[0] / off[0] - 1:+.1%}), "
              f"p50 {off[1]:.1f} -> {on[1]:.1f} ms with the prediction log on (mean of {args.rounds} runs each)")


if __name__ == "__main__":
    main()
