"""The dynamic batcher without HTTP or onnxruntime: a fake model whose runs we can hold and inspect."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from service.batcher import Batcher, BatcherClosedError, DeadlineExceededError, QueueFullError
from service.metrics import Metrics

T = 3


class FakeModel:
    """Echo model: logits row = the row's first token (so a mixed-up answer is visible). Runs can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # first-token ids of every run, in order
        self.threads: list[int] = []  # the thread of every run
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail = False

    def run(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        self.started.set()
        assert self.gate.wait(10), "test forgot to open the gate"
        self.batches.append(tokens[:, 0].tolist())
        self.threads.append(threading.get_ident())
        if self.fail:
            raise RuntimeError("boom")
        return {
            "logits": tokens[:, :1].astype(np.float32) * 1.0,
            "memory_attention": tokens.astype(np.float32),
        }


def rows(*ids: int) -> np.ndarray:
    return np.array([[i] * T for i in ids], dtype=np.int64)


def run_async(
    body: Callable[[Batcher, FakeModel], Awaitable[Any]], metrics: Metrics | None = None, **kwargs: Any
) -> Any:
    async def main() -> Any:
        model = FakeModel()
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(model.run, pool, name="m", metrics=metrics, **kwargs)
            batcher.start()
            try:
                return await body(batcher, model)
            finally:
                model.gate.set()
                await batcher.close()

    return asyncio.run(main())


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_a_lone_request_runs_at_once_with_the_default_zero_delay() -> None:
    async def body(b: Batcher, m: FakeModel) -> float:
        t0 = time.perf_counter()
        out = await b.submit(rows(7))
        assert out["logits"].tolist() == [[7.0]]
        return time.perf_counter() - t0

    assert run_async(body) < 0.05


def test_requests_queued_while_a_run_is_busy_are_coalesced_into_one_run_and_never_mixed() -> None:
    async def body(b: Batcher, m: FakeModel) -> None:
        m.gate.clear()
        first = asyncio.ensure_future(b.submit(rows(1)))
        await until(m.started.is_set)  # run 1 is busy with request 1
        waiting = [asyncio.ensure_future(b.submit(rows(10 + i, 20 + i))) for i in range(5)]
        await until(lambda: b.queued_rows == 10)
        m.gate.set()
        assert (await first)["logits"].tolist() == [[1.0]]
        for i, fut in enumerate(waiting):
            out = await fut
            assert out["logits"][:, 0].tolist() == [10 + i, 20 + i]
            assert out["memory_attention"].shape == (2, T)
        assert m.batches == [[1], [10, 20, 11, 21, 12, 22, 13, 23, 14, 24]]

    run_async(body)


def test_batches_are_capped_at_max_batch_size_rows_not_requests() -> None:
    async def body(b: Batcher, m: FakeModel) -> None:
        m.gate.clear()
        first = asyncio.ensure_future(b.submit(rows(0)))
        await until(m.started.is_set)
        futs = [asyncio.ensure_future(b.submit(rows(i, i))) for i in range(1, 6)]  # 5 requests x 2 rows
        await until(lambda: b.queued_rows == 10)
        m.gate.set()
        await first
        await asyncio.gather(*futs)
        assert [len(x) for x in m.batches] == [1, 4, 4, 2]

    run_async(body, max_batch_size=4)


def test_a_request_larger_than_max_batch_size_runs_alone_in_chunks() -> None:
    async def body(b: Batcher, m: FakeModel) -> None:
        out = await b.submit(rows(*range(10)))
        assert out["logits"][:, 0].tolist() == list(range(10))
        assert [len(x) for x in m.batches] == [4, 4, 2]

    run_async(body, max_batch_size=4)


def test_a_positive_queue_delay_waits_for_the_batch_to_fill() -> None:
    async def body(b: Batcher, m: FakeModel) -> None:
        futs = [asyncio.ensure_future(b.submit(rows(i))) for i in range(3)]
        for i, f in enumerate(futs):
            assert (await f)["logits"].tolist() == [[float(i)]]
        assert m.batches == [[0, 1, 2]]

    run_async(body, max_queue_delay_s=0.2)


def test_the_queue_delay_ends_early_when_a_full_batch_is_waiting() -> None:
    async def body(b: Batcher, m: FakeModel) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(b.submit(rows(1, 2)), b.submit(rows(3, 4)))
        return time.perf_counter() - t0

    assert run_async(body, max_queue_delay_s=5.0, max_batch_size=4) < 1.0


def test_a_full_queue_rejects_at_once() -> None:
    metrics = Metrics()

    async def body(b: Batcher, m: FakeModel) -> None:
        m.gate.clear()
        running = asyncio.ensure_future(b.submit(rows(0)))
        await until(m.started.is_set)
        queued = asyncio.ensure_future(b.submit(rows(1, 2, 3)))
        await until(lambda: b.queued_rows == 3)
        t0 = time.perf_counter()
        with pytest.raises(QueueFullError, match="queue full"):
            await b.submit(rows(4, 5))
        assert time.perf_counter() - t0 < 0.05
        m.gate.set()
        await running
        await queued

    run_async(body, metrics=metrics, max_queue_rows=4)
    assert metrics.rejected.labels("m", "queue_full")._value.get() == 1


def test_an_oversized_request_is_accepted_into_an_empty_queue() -> None:
    async def body(b: Batcher, m: FakeModel) -> None:
        out = await b.submit(rows(*range(6)))
        assert out["logits"].shape == (6, 1)

    run_async(body, max_queue_rows=2)


def test_a_request_whose_deadline_passes_in_the_queue_gets_504_and_is_never_computed() -> None:
    metrics = Metrics()

    async def body(b: Batcher, m: FakeModel) -> None:
        m.gate.clear()
        running = asyncio.ensure_future(b.submit(rows(0)))
        await until(m.started.is_set)
        with pytest.raises(DeadlineExceededError):
            await b.submit(rows(99), deadline=time.monotonic() + 0.05)
        assert b.queued_rows == 0
        m.gate.set()
        await running
        await b.submit(rows(1))
        assert m.batches == [[0], [1]]

    run_async(body, metrics=metrics)
    assert metrics.rejected.labels("m", "deadline")._value.get() == 1


def test_a_request_whose_caller_went_away_is_dropped_before_compute() -> None:
    metrics = Metrics()

    async def body(b: Batcher, m: FakeModel) -> None:
        m.gate.clear()
        running = asyncio.ensure_future(b.submit(rows(0)))
        await until(m.started.is_set)
        gone = asyncio.ensure_future(b.submit(rows(50, 51)))
        stays = asyncio.ensure_future(b.submit(rows(60)))
        await until(lambda: b.queued_rows == 3)
        gone.cancel()  # what the route does when the client disconnects
        await until(lambda: b.queued_rows == 1)
        m.gate.set()
        await running
        assert (await stays)["logits"].tolist() == [[60.0]]
        assert m.batches == [[0], [60]]

    run_async(body, metrics=metrics)
    assert metrics.rejected.labels("m", "client_gone")._value.get() == 1


def test_a_failed_run_fails_only_the_requests_in_it() -> None:
    async def body(b: Batcher, m: FakeModel) -> None:
        m.fail = True
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit(rows(1))
        m.fail = False
        assert (await b.submit(rows(2)))["logits"].tolist() == [[2.0]]

    run_async(body)


def test_close_drains_queued_requests_and_then_refuses_new_ones() -> None:
    async def main() -> None:
        model = FakeModel()
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(model.run, pool, name="m")
            b.start()
            model.gate.clear()
            running = asyncio.ensure_future(b.submit(rows(0)))
            await until(model.started.is_set)
            queued = asyncio.ensure_future(b.submit(rows(1)))
            await until(lambda: b.queued_rows == 1)
            closing = asyncio.ensure_future(b.close(drain=True))
            await asyncio.sleep(0.01)
            with pytest.raises(BatcherClosedError):
                await b.submit(rows(2))
            model.gate.set()
            await closing
            assert (await running)["logits"].tolist() == [[0.0]]
            assert (await queued)["logits"].tolist() == [[1.0]]

    asyncio.run(main())


def test_metrics_count_rows_per_run_and_requests_per_run() -> None:
    metrics = Metrics()

    async def body(b: Batcher, m: FakeModel) -> None:
        m.gate.clear()
        first = asyncio.ensure_future(b.submit(rows(0)))
        await until(m.started.is_set)
        rest = [asyncio.ensure_future(b.submit(rows(i, i, i))) for i in range(1, 4)]
        await until(lambda: b.queued_rows == 9)
        m.gate.set()
        await first
        await asyncio.gather(*rest)

    run_async(body, metrics=metrics)
    sample = metrics.registry.get_sample_value
    assert sample("fws_batch_size_rows_sum", {"model": "m"}) == 10  # runs of 1 and 9 rows
    assert sample("fws_batch_size_rows_count", {"model": "m"}) == 2
    assert sample("fws_batch_size_requests_sum", {"model": "m"}) == 4
    assert sample("fws_queue_depth_rows", {"model": "m"}) == 0


def test_small_runs_execute_on_the_event_loop_and_larger_ones_in_the_executor() -> None:
    async def body(b: Batcher, m: FakeModel) -> tuple[int, list[int]]:
        small = await b.submit(rows(1, 2))
        large = await b.submit(rows(3, 4, 5))
        assert small["logits"].tolist() == [[1.0], [2.0]] and large["logits"].tolist() == [
            [3.0],
            [4.0],
            [5.0],
        ]
        return threading.get_ident(), m.threads

    loop_thread, threads = run_async(body, inline_max_rows=2)
    assert threads[0] == loop_thread
    assert threads[1] != loop_thread


def test_with_inline_runs_off_every_run_uses_the_executor() -> None:
    async def body(b: Batcher, m: FakeModel) -> tuple[int, list[int]]:
        await b.submit(rows(1))
        return threading.get_ident(), m.threads

    loop_thread, threads = run_async(body, inline_max_rows=0)
    assert threads == [threads[0]] and threads[0] != loop_thread


def test_a_failed_inline_run_fails_its_requests_and_the_batcher_keeps_serving() -> None:
    async def body(b: Batcher, m: FakeModel) -> list[list[float]]:
        m.fail = True
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit(rows(1))
        m.fail = False
        return (await b.submit(rows(2)))["logits"].tolist()

    assert run_async(body, inline_max_rows=4) == [[2.0]]


def test_small_requests_arriving_during_a_run_still_wait_and_coalesce() -> None:
    """The direct inline run is only for a request that finds nothing queued and nothing running."""

    async def body(b: Batcher, m: FakeModel) -> list[list[int]]:
        m.gate.clear()
        large = asyncio.ensure_future(b.submit(rows(3, 4, 5)))  # 3 rows > inline_max_rows: executor
        await until(m.started.is_set)
        small = [asyncio.ensure_future(b.submit(rows(i))) for i in (1, 2)]
        await until(lambda: b.queued_rows == 2)
        m.gate.set()
        outs = await asyncio.gather(large, *small)
        assert [o["logits"][:, 0].tolist() for o in outs] == [[3.0, 4.0, 5.0], [1.0], [2.0]]
        alone = await b.submit(rows(9))
        assert alone["logits"].tolist() == [[9.0]]
        return m.batches

    assert run_async(body, inline_max_rows=2) == [[3, 4, 5], [1, 2], [9]]


def test_small_requests_submitted_together_share_one_run_even_when_the_batcher_is_idle() -> None:
    async def body(b: Batcher, m: FakeModel) -> list[list[int]]:
        outs = await asyncio.gather(*(b.submit(rows(i)) for i in (1, 2, 3)))
        assert [o["logits"].tolist() for o in outs] == [[[1.0]], [[2.0]], [[3.0]]]
        await b.submit(rows(4))  # alone: runs at once, by itself
        return m.batches

    assert run_async(body, inline_max_rows=4) == [[1, 2, 3], [4]]


def test_the_queue_gauge_reads_the_live_batcher_and_does_not_keep_a_closed_one_alive() -> None:
    import gc
    import weakref

    metrics = Metrics()
    depth = {}

    async def main() -> weakref.ref[Batcher]:
        model = FakeModel()
        model.gate.clear()
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(model.run, pool, name="m", metrics=metrics, inline_max_rows=0)
            batcher.start()
            first = asyncio.ensure_future(batcher.submit(rows(1)))
            await until(model.started.is_set)  # the first run holds the executor
            queued = [asyncio.ensure_future(batcher.submit(rows(2, 3))) for _ in range(2)]
            await until(lambda: batcher.queued_rows == 4)
            depth["busy"] = metrics.registry.get_sample_value("fws_queue_depth_rows", {"model": "m"})
            model.gate.set()
            await asyncio.gather(first, *queued)
            depth["idle"] = metrics.registry.get_sample_value("fws_queue_depth_rows", {"model": "m"})
            await batcher.close()
            return weakref.ref(batcher)

    gone = asyncio.run(main())
    gc.collect()
    assert depth == {"busy": 4, "idle": 0}
    assert gone() is None  # the gauge's function holds no strong reference (it would keep the session)
    assert metrics.registry.get_sample_value("fws_queue_depth_rows", {"model": "m"}) == 0


def test_runs_take_the_largest_preferred_batch_size_the_queue_fills() -> None:
    async def body(b: Batcher, m: FakeModel) -> None:
        m.gate.clear()
        first = asyncio.ensure_future(b.submit(rows(0)))
        await until(m.started.is_set)
        futs = [asyncio.ensure_future(b.submit(rows(i))) for i in range(1, 12)]  # 11 one-row requests
        await until(lambda: b.queued_rows == 11)
        m.gate.set()
        await first
        await asyncio.gather(*futs)
        # 11 queued: the preferred 6, then 5 left fill the preferred 4, then 1 left fills none: all of it
        assert [len(x) for x in m.batches] == [1, 6, 4, 1]

    run_async(body, max_batch_size=8, preferred_batch_sizes=(4, 6))


def test_with_a_delay_the_batch_waits_only_until_the_largest_preferred_size_is_queued() -> None:
    async def body(b: Batcher, m: FakeModel) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(b.submit(rows(i)) for i in range(4)))
        return time.perf_counter() - t0

    # 4 rows fill the preferred size: far less than the 10 s delay (max_batch_size 8 is not waited for)
    assert run_async(body, max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_s=10.0) < 5.0


def test_instances_run_side_by_side_on_their_own_threads() -> None:
    async def main() -> int:
        active, most = 0, 0
        lock = threading.Lock()
        both = threading.Barrier(2, timeout=5)

        def run(tokens: np.ndarray) -> dict[str, np.ndarray]:
            nonlocal active, most
            with lock:
                active += 1
                most = max(most, active)
            both.wait()  # returns only when two runs are in progress at the same time
            with lock:
                active -= 1
            return {"logits": tokens[:, :1].astype(np.float32), "memory_attention": tokens.astype(np.float32)}

        pool = ThreadPoolExecutor(2)
        b = Batcher(run, pool, name="m", max_batch_size=1, workers=2, own_executor=True)
        b.start()
        try:
            await asyncio.gather(b.submit(rows(1)), b.submit(rows(2)))
        finally:
            await b.close()
        assert pool._shutdown  # the batcher shut its own executor down
        return most

    assert asyncio.run(main()) == 2
