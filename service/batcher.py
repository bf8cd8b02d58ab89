"""Dynamic micro-batching: concurrent requests for one model version are coalesced into one onnxruntime run.

Semantics (Triton's dynamic batcher, counted in ROWS):

- A worker task takes queued requests in arrival order into one run of at most `max_batch_size` rows (a
  single request larger than that runs alone, in chunks of `max_batch_size`).
- `max_queue_delay_s = 0` (the default) adds no latency: a lone request starts at once; a batch forms from
  whatever queued while the previous run was busy. A positive delay is opt-in: the worker waits up to that
  long after the FIRST queued request for the batch to fill (to the largest preferred size, else to
  `max_batch_size`).
- `preferred_batch_sizes` (Triton's preferred_batch_size): a run takes the largest preferred size that the
  queued rows fill; when they fill none, it takes what is there (up to `max_batch_size`).
- `workers` runs of the model may compute at once (Triton's instance count); they need an executor with as
  many threads, and `inline_max_rows = 0` (an inline run holds the event loop).
- The queue is bounded (`max_queue_rows`): `submit` raises `QueueFullError` at once (HTTP 503 + Retry-After).
- Every request has a deadline; one that expires while queued is answered `DeadlineExceededError` (504)
  and never computed. A request whose caller went away (its awaiting task cancelled, e.g. the client
  disconnected) is dropped before compute.
- onnxruntime runs in the given executor, so health and metrics stay fast while a long run computes, except
  for runs of at most `inline_max_rows` rows, which run on the event loop itself: a small run (tens of
  microseconds) costs less than the two thread hand-offs and GIL exchanges of the executor round trip, which
  dominated the latency of a lone request, and under load more CPU per request than the overlap with request
  parsing gives back (measured: docs/benchmarks.md). 0 turns this off. Such a request
  that finds nothing queued and nothing running is run at once in its caller's task (nothing could join it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service.metrics import Metrics

log = logging.getLogger("service.batcher")

RunFn = Callable[[np.ndarray], dict[str, np.ndarray]]


class BatcherError(RuntimeError):
    pass


class QueueFullError(BatcherError):
    """The bounded queue has no room for these rows; retry later."""


class DeadlineExceededError(BatcherError):
    """The request's deadline passed before its result was ready."""


class BatcherClosedError(BatcherError):
    """The batcher is shutting down and accepts no new work."""


@dataclass(eq=False)
class _Pending:
    tokens: np.ndarray  # (n, T)
    future: asyncio.Future[dict[str, np.ndarray]]
    deadline: float  # time.monotonic()
    enqueued: float = field(default_factory=time.monotonic)
    queued: bool = True

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])


class Batcher:
    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        name: str,
        max_batch_size: int = 256,
        max_queue_delay_s: float = 0.0,
        max_queue_rows: int = 4096,
        default_timeout_s: float = 10.0,
        inline_max_rows: int = 0,
        metrics: Metrics | None = None,
        preferred_batch_sizes: tuple[int, ...] = (),
        workers: int = 1,
        own_executor: bool = False,
    ):
        self._run = run
        self._executor = executor
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_rows = max_queue_rows
        self.default_timeout_s = default_timeout_s
        self.inline_max_rows = inline_max_rows
        self.preferred_batch_sizes = tuple(sorted(b for b in preferred_batch_sizes if b <= max_batch_size))
        self.workers = workers
        self._own_executor = own_executor  # shut it down on close (a model's own instance threads)
        self._metrics = metrics
        if metrics is not None:  # this model's children, looked up once (labels() costs a lock and a hash)
            self._m_batch_requests = metrics.batch_requests.labels(name)
            self._m_queue_wait = metrics.queue_wait.labels(name)
            self._m_inference_time = metrics.inference_time.labels(name)
            self._m_batch_rows = metrics.batch_rows.labels(name)
            # Read at scrape time. A weak reference: an unloaded model's batcher (and its session) must not be
            # kept alive by the gauge; a newer batcher of the same model replaces the function.
            batcher = weakref.ref(self)
            metrics.queue_rows.labels(name).set_function(
                lambda: b._queued_rows if (b := batcher()) is not None else 0
            )
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.runs = 0  # onnxruntime runs done (for tests and logs)
        self._running = 0  # runs (inline or in the executor) in progress
        self._probing = False  # a lone request is yielding once before running directly

    # -- public -------------------------------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._worker(), name=f"batcher:{self.name}:{i}") for i in range(self.workers)
            ]

    async def submit(self, tokens: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        """Queue `tokens` (n, T) and wait for their outputs {"logits": (n, C), "memory_attention": (n, T)}.

        `deadline` is an absolute `time.monotonic()` value (default: now + default_timeout_s).
        Raises QueueFullError, DeadlineExceededError, BatcherClosedError, or the run's own exception.
        """
        if self._closing:
            self._count_rejected("shutting_down")
            raise BatcherClosedError(f"model {self.name!r} is shutting down")
        rows = int(tokens.shape[0])
        if rows == 0:
            raise ValueError("empty batch")
        # An oversized request is still accepted into an empty queue; otherwise it could never run.
        if self._queued_rows and self._queued_rows + rows > self.max_queue_rows:
            self._count_rejected("queue_full")
            raise QueueFullError(
                f"model {self.name!r}: queue full "
                f"({self._queued_rows} rows waiting, limit {self.max_queue_rows})"
            )
        probed = False
        if (
            rows <= self.inline_max_rows
            and self.max_queue_delay_s <= 0
            and self._alone()
            and not self._probing
        ):
            # A lone small request yields once, so that requests already received get to submit too. If none
            # did (they would have queued: only one request probes at a time), nothing could join this run:
            # it runs now, in the caller's task, without the queue/worker/future round trip. Otherwise it
            # queues with them and they share one run.
            self._probing = True
            try:
                await asyncio.sleep(0)
            finally:
                self._probing = False
            if self._alone() and not self._closing:
                if self._metrics is not None:
                    self._m_batch_requests.observe(1)
                    self._m_queue_wait.observe(0.0)
                return self._run_and_observe(tokens)
            probed = True  # it arrived before the requests it now queues with: it goes first
        now = time.monotonic()
        deadline = now + self.default_timeout_s if deadline is None else deadline
        if deadline <= now:
            self._count_rejected("deadline")
            raise DeadlineExceededError("deadline already passed")
        loop = asyncio.get_running_loop()
        item = _Pending(tokens, loop.create_future(), deadline, now)
        if probed:
            self._queue.appendleft(item)
        else:
            self._queue.append(item)
        self._queued_rows += rows
        self._arrived.set()
        # One timer per request (cheaper than wait_for + shield): at the deadline a request still waiting is
        # answered 504, and one still queued is dropped there and then (its rows are never computed).
        timer = loop.call_at(loop.time() + (deadline - now), self._expire, item, deadline - now)
        try:
            return await item.future
        except asyncio.CancelledError:
            if item.future.cancelled():  # the caller went away (its task was cancelled while waiting)
                self._abandon(item, "client_gone")
            raise
        finally:
            timer.cancel()

    async def close(self, drain: bool = True) -> None:
        """Stop accepting work; with `drain`, finish everything already queued, else fail it."""
        self._closing = True
        if not drain:
            while self._queue:
                item = self._queue.popleft()
                self._dequeue(item)
                if not item.future.done():
                    item.future.set_exception(BatcherClosedError(f"model {self.name!r} was unloaded"))
        self._arrived.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # -- worker -------------------------------------------------------------------------------------------

    def _alone(self) -> bool:
        return not self._queue and not self._running

    def _expire(self, item: _Pending, waited_s: float) -> None:
        if item.future.done():
            return
        item.future.set_exception(DeadlineExceededError(f"deadline exceeded after {waited_s:.3f}s"))
        self._abandon(item, "deadline")

    def _abandon(self, item: _Pending, reason: str) -> None:
        """The caller stopped waiting: a still-queued request frees its room at once and is never computed."""
        if not item.future.done():
            item.future.cancel()
        if item.queued:
            self._dequeue(item)
            self._count_rejected(reason)

    def _dequeue(self, item: _Pending) -> None:
        if item.queued:
            item.queued = False
            self._queued_rows -= item.rows

    async def _worker(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            if self.max_queue_delay_s > 0:
                await self._wait_for_fill()
            batch = self._take_batch()
            if batch:
                await self._run_batch(batch)

    async def _wait_for_fill(self) -> None:
        """Opt-in delay: wait until a full batch is queued (the largest preferred size, else max_batch_size)
        or the first request is delay old."""
        first = self._queue[0]
        until = first.enqueued + self.max_queue_delay_s
        full = self.preferred_batch_sizes[-1] if self.preferred_batch_sizes else self.max_batch_size
        while self._queued_rows < full and not self._closing:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _batch_limit(self) -> int:
        """Rows for the next run: the largest preferred size the queue fills, else max_batch_size."""
        filled = [b for b in self.preferred_batch_sizes if b <= self._queued_rows]
        return filled[-1] if filled else self.max_batch_size

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        now = time.monotonic()
        limit = self._batch_limit()
        while self._queue:
            item = self._queue[0]
            if not item.queued or item.future.done():  # cancelled while waiting: dropped, not computed
                self._queue.popleft()
                self._dequeue(item)
                continue
            if item.deadline <= now:
                self._queue.popleft()
                self._dequeue(item)
                item.future.set_exception(DeadlineExceededError("deadline exceeded while queued"))
                self._count_rejected("deadline")
                continue
            if batch and rows + item.rows > limit:
                break
            self._queue.popleft()
            self._dequeue(item)
            batch.append(item)
            rows += item.rows
            if rows >= limit:
                break
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        self._running += 1
        try:
            await self._run_batch_now(batch)
        finally:
            self._running -= 1

    async def _run_batch_now(self, batch: list[_Pending]) -> None:
        tokens = batch[0].tokens if len(batch) == 1 else np.concatenate([b.tokens for b in batch], axis=0)
        start = time.monotonic()
        if self._metrics is not None:
            self._m_batch_requests.observe(len(batch))
            for item in batch:
                self._m_queue_wait.observe(start - item.enqueued)
        try:
            if tokens.shape[0] <= self.inline_max_rows:
                outputs = self._run_and_observe(tokens)
            else:
                outputs, runs = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run_chunked, tokens
                )
                self._observe(runs)
        except Exception as exc:
            log.exception("inference failed", extra={"model": self.name, "rows": int(tokens.shape[0])})
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        offset = 0
        for item in batch:
            end = offset + item.rows
            if not item.future.done():
                item.future.set_result({k: v[offset:end] for k, v in outputs.items()})
            offset = end

    def _run_chunked(self, tokens: np.ndarray) -> tuple[dict[str, np.ndarray], list[tuple[float, int]]]:
        """One run per max_batch_size rows (in the executor thread, or inline). Returns the outputs and
        (seconds, rows) of each run, for the caller to record on the event loop's thread."""
        parts: list[dict[str, np.ndarray]] = []
        runs: list[tuple[float, int]] = []
        for lo in range(0, tokens.shape[0], self.max_batch_size):
            chunk = tokens[lo : lo + self.max_batch_size]
            t0 = time.perf_counter()
            parts.append(self._run(chunk))
            runs.append((time.perf_counter() - t0, chunk.shape[0]))
            self.runs += 1
        if len(parts) == 1:
            return parts[0], runs
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}, runs

    def _run_and_observe(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        outputs, runs = self._run_chunked(tokens)
        self._observe(runs)
        return outputs

    def _observe(self, runs: list[tuple[float, int]]) -> None:
        if self._metrics is not None:
            for seconds, rows in runs:
                self._m_inference_time.observe(seconds)
                self._m_batch_rows.observe(rows)

    def _count_rejected(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected.labels(self.name, reason).inc()
