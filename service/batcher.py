"""Micro-batcher: coalesces concurrent requests into one encoder call, run in ONE worker thread.

Requests enqueue decoded float32 batches; a single asyncio task collects jobs until ``max_batch_size``
items or until the oldest job has waited ``max_wait_ms``, hands the concatenation to the worker thread
(so torch never blocks the event loop) and resolves each job's future with its slice. Jobs queued
while the worker is busy go out in the next batch without further waiting, so under load batches fill
up by themselves and the wait only costs latency when the service is idle. The queue is bounded in
items; beyond it ``submit`` raises 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from service.encoder import Encoder
from service.errors import ErrorCode, ServiceError, overloaded

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    encoder: Encoder
    batch: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default=0.0)


def _set_torch_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


class MicroBatcher:
    """Coalesce ``embed`` calls from concurrent requests; see the module docstring."""

    def __init__(
        self,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 4096,
        torch_threads: int | None = None,
        observe: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._torch_threads = torch_threads
        self._observe = observe  # (batch size, queue seconds of each job) -> metrics
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._pending = 0  # items queued and not yet handed to the worker
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> int:
        return self._pending

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="encoder",
            initializer=_set_torch_threads,
            initargs=(self._torch_threads,),
        )
        self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(ServiceError(ErrorCode.NO_MODEL, "the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def embed(self, encoder: Encoder, batch: np.ndarray) -> np.ndarray:
        """Embed a decoded batch ``(n, *input_shape)``; returns ``(n, embedding_dim)`` float32."""
        if self._task is None:
            raise ServiceError(ErrorCode.NO_MODEL, "the encoder is not running")
        n = len(batch)
        if self._pending and self._pending + n > self.max_queue:
            raise overloaded()
        loop = asyncio.get_running_loop()
        job = _Job(encoder, batch, loop.create_future(), loop.time())
        self._pending += n
        self._queue.put_nowait(job)
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            jobs, n = [first], len(first.batch)
            deadline = first.enqueued + self.max_wait
            while n < self.max_batch_size:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                if job.encoder is not first.encoder or n + len(job.batch) > self.max_batch_size:
                    carry = job  # starts the next batch (another model, or would overflow this one)
                    break
                jobs.append(job)
                n += len(job.batch)
            await self._run(jobs, loop)

    async def _run(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        self._pending -= sum(len(j.batch) for j in jobs)
        live = [j for j in jobs if not j.future.done()]  # a cancelled request (client gone) is skipped
        if not live:
            return
        started = loop.time()
        if self._observe is not None:
            self._observe(sum(len(j.batch) for j in live), [started - j.enqueued for j in live])
        batch = live[0].batch if len(live) == 1 else np.concatenate([j.batch for j in live])
        try:
            assert self._executor is not None
            out = await loop.run_in_executor(self._executor, self._forward, live[0].encoder, batch)
        except Exception as exc:  # noqa: BLE001 - the failure belongs to the requests, not the loop
            logger.exception("encoder failed on a batch of %d items", len(batch))
            for j in live:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        offset = 0
        for j in live:
            part = out[offset : offset + len(j.batch)]
            offset += len(j.batch)
            if not j.future.done():
                j.future.set_result(part)

    def _forward(self, encoder: Encoder, batch: np.ndarray) -> np.ndarray:
        """Runs in the worker thread; a single huge request still goes through in max_batch_size chunks."""
        step = self.max_batch_size
        if len(batch) <= step:
            return encoder.embed(batch)
        return np.concatenate([encoder.embed(batch[i : i + step]) for i in range(0, len(batch), step)])
