"""Micro-batching: concurrent requests share one ONNX run, off the event loop.

A request puts its messages on a queue and awaits a future. One worker task
takes the oldest request, then gathers more until `max_batch_size` messages
are collected or `max_wait_ms` has passed since that oldest request arrived
(requests that queued during the previous run have already waited, so under
load batches leave at once). The batch runs in a single inference thread, so
the event loop keeps accepting requests and onnxruntime keeps all cores for
one run. With batching off the same worker runs each request on its own,
which is the baseline the benchmark compares against. When a batched run
fails, each of its requests runs again on its own, so one request the model
cannot take fails alone and the others are answered.

Left out: several inference threads (on a small CPU box one run at a time
using every core is faster) and priority between endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The queue is full or the deadline passed: the client should retry later (503)."""


@dataclass
class _Job:
    messages: Sequence
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[list], list],
        *,
        batching: bool = True,
        max_batch_size: int = 64,
        max_wait_ms: float = 3.0,
        max_queue: int = 2048,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self._predict = predict
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._queued = 0  # messages waiting, for backpressure
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kefu-inference")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="kefu-batcher")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(Overloaded("service is shutting down"))
        self._executor.shutdown(wait=True)

    async def predict(self, messages: Sequence, timeout: float) -> list:
        """Predictions for `messages`, in order; raises Overloaded when full or past `timeout` seconds."""
        if self._worker is None or self._worker.done():
            raise Overloaded("the inference worker is not running")
        if self._queued + len(messages) > self.max_queue:
            raise Overloaded(f"more than {self.max_queue} messages are waiting for the model")
        job = _Job(messages, asyncio.get_running_loop().create_future())
        self._queued += len(messages)
        self._queue.put_nowait(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            raise Overloaded(f"no prediction within {timeout:g} s") from None

    async def _gather(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        size = len(jobs[0].messages)
        if not self.batching:
            return jobs
        deadline = jobs[0].arrived + self.max_wait
        while size < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            else:
                jobs.append(self._queue.get_nowait())
            size += len(jobs[-1].messages)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            self._queued -= sum(len(job.messages) for job in jobs)
            try:
                results = await self._run_batch([m for job in jobs for m in job.messages])
            except Exception as exc:  # a failed run fails its requests, never the worker
                log.exception("inference failed", extra={"batch_size": sum(len(job.messages) for job in jobs)})
                if len(jobs) > 1:
                    await self._run_alone(jobs)  # find the request that broke it; answer the others
                else:
                    self._fail(jobs[0], exc)
                continue
            offset = 0
            for job in jobs:
                n = len(job.messages)
                self._answer(job, results[offset : offset + n])
                offset += n

    async def _run_batch(self, messages: list) -> list:
        started = time.perf_counter()
        results = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, messages)
        self._on_batch(len(messages), time.perf_counter() - started)
        return results

    async def _run_alone(self, jobs: list[_Job]) -> None:
        """Each request of a failed batch in a run of its own: only the requests that fail alone fail."""
        for job in jobs:
            if job.future.done():  # the client has gone away
                continue
            try:
                self._answer(job, await self._run_batch(list(job.messages)))
            except Exception as exc:
                self._fail(job, exc)

    @staticmethod
    def _answer(job: _Job, results: list) -> None:
        if not job.future.done():  # the client may have gone away
            job.future.set_result(results)

    @staticmethod
    def _fail(job: _Job, exc: Exception) -> None:
        if not job.future.done():
            job.future.set_exception(exc)
