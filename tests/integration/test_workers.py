"""`python -m service --workers N` (and FWS_WORKERS): a real supervisor with real worker processes."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import psutil

from tests.integration.server import start_server

QUERY = {"sequence": "c9k8j3f1??c"}


def _workers(parent_pid: int) -> list[psutil.Process]:
    """The worker processes (those holding the service's listening socket), not multiprocessing's helpers."""
    found = []
    for child in psutil.Process(parent_pid).children():
        try:
            if any(c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp")):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _established(worker: psutil.Process) -> int:
    return sum(c.status == psutil.CONN_ESTABLISHED for c in worker.net_connections("tcp"))


def _owner(workers: list[psutil.Process], local_port: int) -> int | None:
    """The pid of the worker holding the server side of the client connection from `local_port`."""
    for worker in workers:
        for conn in worker.net_connections("tcp"):
            if conn.raddr and conn.raddr.port == local_port:
                return worker.pid
    return None


def test_two_workers_from_the_cli_both_answer_and_sigterm_drains_them_and_exits_0() -> None:
    with start_server({"FWS_SIMULATED_RUN_DELAY_MS": "300"}, args=["--workers", "2"]) as server:
        workers = _workers(server.pid)
        assert len(workers) == 2, server.logs()[-2000:]
        # New connections until each worker has answered one (the kernel hands them out): bounded.
        served: set[int] = set()
        for _ in range(60):
            with httpx.Client(base_url=server.url, timeout=10) as client:
                response = client.post("/v1/retrieve", json=QUERY)
                assert response.status_code == 200 and response.json()["value"] == "9"
                sock = client._transport._pool.connections[0]._connection._network_stream  # type: ignore[attr-defined]
                port = sock.get_extra_info("socket").getsockname()[1]
                owner = _owner(workers, port)
                assert owner is not None
                served.add(owner)
            if len(served) == 2:
                break
        assert served == {w.pid for w in workers}
        # SIGTERM with requests in flight on both workers: every one is answered, then everything exits 0.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(httpx.post, f"{server.url}/v1/retrieve", json=QUERY, timeout=20) for _ in range(8)
            ]
            deadline = time.monotonic() + 10  # until the workers hold all 8 connections (accepted, in flight)
            while sum(_established(w) for w in workers) < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            started = time.monotonic()
            assert server.stop(timeout=30) == 0, server.logs()[-3000:]
            statuses = [f.result().status_code for f in futures]
        assert statuses == [200] * 8
        assert time.monotonic() - started < 15
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_fws_workers_sets_the_worker_count() -> None:
    with start_server({"FWS_WORKERS": "2"}) as server:
        assert len(_workers(server.pid)) == 2
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    assert server.returncode == 0
