"""Dynamic batching, overload, deadlines, disconnects and drain, against real servers.

Some servers run with FWS_SIMULATED_RUN_DELAY_MS: every onnxruntime run then also sleeps that long in the
executor, which makes "the model is busy" deterministic on a 2-core CI machine.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model.data import generate
from tests.integration.server import Server, repository_with, start_server

# Simulated run time of the `slow` server. Timing bounds below are fractions of it, so they hold on a
# loaded 2-core machine: anything that waited behind a run would take at least the rest of that run.
RUN_S = 0.5


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def slow(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Runs take >= RUN_S; up to 64 rows per run (the configs' max_batch_size); a queue of 16 rows."""
    env = {"FWS_SIMULATED_RUN_DELAY_MS": str(int(RUN_S * 1000)), "FWS_MAX_QUEUE_ROWS": "16"}
    repo = repository_with(tmp_path_factory.mktemp("slow"), model_repository, max_batch_size=64)
    with start_server(env, repository=repo) as srv:
        yield srv


def test_concurrent_requests_are_coalesced_and_answers_never_mixed(slow: Server) -> None:
    sequences = generate(12, 1, 8, seed=4242).sequences()

    async def main() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=slow.url, timeout=30) as c:
            singles = await asyncio.gather(*(c.post("/v1/retrieve", json={"sequence": s}) for s in sequences))
            # Reference: the same sequences answered in one batch request, afterwards.
            reference = await c.post(
                "/v1/retrieve/batch", json={"items": [{"sequence": s} for s in sequences]}
            )
            return list(singles), reference

    singles, reference = asyncio.run(main())
    ref = reference.json()["results"]
    for single, expected, seq in zip(singles, ref, sequences, strict=True):
        assert single.status_code == 200, single.text
        got = single.json()
        assert got["num_pairs"] == (len(seq) - 3) // 2
        assert got["value"] == expected["value"]
        assert got["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
    text = httpx.get(slow.url + "/metrics").text
    # Several single-row requests shared one onnxruntime run: some run had more than one request/row.
    runs = sum(metric(text, "fws_batch_size_requests_count", model=f"fastweights_t{t}") for t in (5, 11, 19))
    single_request_runs = sum(
        metric(text, "fws_batch_size_requests_bucket", model=f"fastweights_t{t}", le="1.0")
        for t in (5, 11, 19)
    )
    assert runs > single_request_runs, text
    rows_sum = sum(metric(text, "fws_batch_size_rows_sum", model=f"fastweights_t{t}") for t in (5, 11, 19))
    rows_count = sum(
        metric(text, "fws_batch_size_rows_count", model=f"fastweights_t{t}") for t in (5, 11, 19)
    )
    assert rows_sum / rows_count > 1.0


def test_overload_is_answered_503_with_retry_after_at_once(slow: Server) -> None:
    # All in one bucket (T=5); the first run takes >= RUN_S while 16 rows fill the queue.
    async def main() -> list[tuple[int, float, httpx.Response]]:
        async with httpx.AsyncClient(base_url=slow.url, timeout=30) as c:

            async def one(i: int) -> tuple[int, float, httpx.Response]:
                t0 = time.perf_counter()
                r = await c.post("/v1/retrieve/batch", json={"items": [{"sequence": "a1??a"}] * 8})
                return i, time.perf_counter() - t0, r

            return await asyncio.gather(*(one(i) for i in range(8)))

    results = asyncio.run(main())
    rejected = [(dt, r) for _, dt, r in results if r.status_code == 503]
    ok = [r for _, _, r in results if r.status_code == 200]
    assert rejected and ok, [r.status_code for *_, r in results]
    for dt, r in rejected:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        assert dt < 0.8 * RUN_S  # answered before even one run could finish
    text = httpx.get(slow.url + "/metrics").text
    assert metric(text, "fws_requests_rejected_total", model="fastweights_t5", reason="queue_full") >= len(
        rejected
    )


def test_health_and_metrics_stay_fast_while_the_model_is_saturated(slow: Server) -> None:
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=slow.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/retrieve/batch", json={"items": [{"sequence": "a1b2??a"}] * 4})
                if r.status_code == 503:
                    time.sleep(0.05)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(RUN_S)
        depth = 0.0  # the most rows seen waiting: the queue empties for an instant whenever a run starts
        with httpx.Client(base_url=slow.url, timeout=5) as c:
            for path in ("/v2/health/ready", "/v2/health/live", "/metrics") * 3:
                t0 = time.perf_counter()
                r = c.get(path)
                assert r.status_code == 200
                assert time.perf_counter() - t0 < 0.5 * RUN_S, path
                if path == "/metrics":
                    depth = max(depth, metric(r.text, "fws_queue_depth_rows", model="fastweights_t11"))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert depth > 0  # really saturated while we measured


def test_a_request_whose_client_went_away_is_not_computed(slow: Server) -> None:
    before = metric(
        httpx.get(slow.url + "/metrics").text, "fws_requests_rejected_total", reason="client_gone"
    )

    async def main() -> str:
        async with httpx.AsyncClient(base_url=slow.url, timeout=30) as c:
            busy = asyncio.ensure_future(c.post("/v1/retrieve", json={"sequence": "a1b2c3d4e5f6g7h8i9??i"}))
            await asyncio.sleep(0.1)  # the 9-pair bucket's run is busy now; the next request queues behind it
            with pytest.raises(httpx.ReadTimeout):
                await c.post("/v1/retrieve", json={"sequence": "a1b2c3d4e5f6g7h8i9??a"}, timeout=0.1)
            done = await busy
            assert done.status_code == 200
            return str(done.json()["bucket"])

    bucket = asyncio.run(main())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = httpx.get(slow.url + "/metrics").text
        if metric(text, "fws_requests_rejected_total", model=bucket, reason="client_gone") > before:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the abandoned request was not dropped")
    assert 'status="499"' in text


def test_a_request_past_its_deadline_gets_504(model_repository: Path) -> None:
    env = {"FWS_SIMULATED_RUN_DELAY_MS": "1500", "FWS_REQUEST_TIMEOUT_S": "0.2"}
    with start_server(env, repository=model_repository) as srv:
        t0 = time.perf_counter()
        r = httpx.post(srv.url + "/v1/retrieve", json={"sequence": "a1??a"}, timeout=10)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "deadline_exceeded"
        assert time.perf_counter() - t0 < 1.2  # answered at the deadline, not after the run


def test_sigterm_drains_in_flight_requests_and_exits_0(model_repository: Path) -> None:
    srv = start_server({"FWS_SIMULATED_RUN_DELAY_MS": "800"}, repository=model_repository)
    try:
        results: list[httpx.Response] = []

        def call() -> None:
            results.append(httpx.post(srv.url + "/v1/retrieve", json={"sequence": "c9k8j3f1??c"}, timeout=30))

        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(0.3)  # the request is being computed
        t0 = time.perf_counter()
        srv.terminate()
        worker.join(30)
        assert results and results[0].status_code == 200 and results[0].json()["value"] == "9"
        assert srv.proc.wait(30) == 0
        assert time.perf_counter() - t0 < 10
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/v2/health/live", timeout=2)
        assert '"msg":"stopped"' in srv.logs()
    finally:
        srv.stop()
