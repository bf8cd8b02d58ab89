"""Memory sessions in a real redis-server shared by two real replicas: any replica serves any session,
simultaneous appends are applied exactly once, a session outlives a replica's restart, and a replica killed
mid-stream behind a failover balancer loses and doubles nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.sessions.state import SessionState
from tests.integration.server import Server, free_port, start_server
from tests.integration.test_sessions import fresh_rows, same_answer


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make redis` (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield url
    client.close()
    proc.terminate()
    proc.wait(10)


def replica(redis_url: str, repository: Path, **env: str) -> Server:
    return start_server({"FWS_SESSION_STORE": redis_url, **env}, repository=repository)


@pytest.fixture(scope="module")
def replicas(redis_url: str, model_repository: Path) -> Iterator[list[Server]]:
    servers = [replica(redis_url, model_repository) for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


def test_the_store_is_redis_and_any_replica_serves_any_session(replicas: list[Server]) -> None:
    a, b = (httpx.Client(base_url=s.url, timeout=30.0) for s in replicas)
    assert a.get("/v1/sessions").json()["limits"]["store"] == "redis"
    for k in (1, 5, 12):
        for pairs, _ in fresh_rows(k, 2):
            sid = a.post("/v1/sessions").json()["session_id"]
            for seq, pair in enumerate(pairs):  # appends alternate between the replicas
                r = (a, b)[seq % 2].post(f"/v1/sessions/{sid}/pairs", json={"pairs": [pair], "seq": seq})
                assert r.status_code == 200, r.text
            for key, _ in pairs:
                ask = {"query": key, "top_k": 3, "explain": True}
                want = a.post("/v1/retrieve", json={"pairs": pairs, **ask}).json()
                for c in (a, b):
                    same_answer(c.post(f"/v1/sessions/{sid}/query", json=ask).json(), want)
    a.close()
    b.close()


def test_the_same_append_sent_to_both_replicas_at_once_is_applied_once(replicas: list[Server]) -> None:
    with httpx.Client(base_url=replicas[0].url, timeout=30.0) as c:
        sid = c.post("/v1/sessions").json()["session_id"]
    letters = "abcdefghijkl"
    for seq, key in enumerate(letters):
        answers: list[httpx.Response] = []
        gate = threading.Barrier(2)

        def send(
            url: str, key: str = key, seq: int = seq, gate: threading.Barrier = gate, answers: list = answers
        ) -> None:
            with httpx.Client(base_url=url, timeout=30.0) as c:
                gate.wait()
                answers.append(c.post(f"/v1/sessions/{sid}/pairs", json={"pairs": [[key, "7"]], "seq": seq}))

        threads = [threading.Thread(target=send, args=(s.url,)) for s in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert answers[0].json() == answers[1].json()  # the loser of the race answers as a retry
    with httpx.Client(base_url=replicas[1].url, timeout=30.0) as c:
        info = c.get(f"/v1/sessions/{sid}").json()
    assert info["num_pairs"] == info["next_seq"] == len(letters)
    assert [k for k, _ in info["pairs"]] == list(letters)


def test_concurrent_appends_through_both_replicas_lose_nothing(replicas: list[Server]) -> None:
    with httpx.Client(base_url=replicas[0].url, timeout=30.0) as c:
        sid = c.post("/v1/sessions").json()["session_id"]
    keys = "mnopqrst"
    errors: list[str] = []

    def writer(i: int) -> None:
        with httpx.Client(base_url=replicas[i % 2].url, timeout=30.0) as c:
            for _ in range(300):
                seq = c.get(f"/v1/sessions/{sid}").json()["next_seq"]
                r = c.post(f"/v1/sessions/{sid}/pairs", json={"pairs": [[keys[i], str(i)]], "seq": seq})
                if r.status_code == 200:
                    return
                if r.status_code not in (409, 503):
                    errors.append(r.text)
                    return
            errors.append(f"writer {i} never got its turn")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with httpx.Client(base_url=replicas[1].url, timeout=30.0) as c:
        info = c.get(f"/v1/sessions/{sid}").json()
    assert info["num_pairs"] == info["next_seq"] == len(keys)
    assert sorted(info["pairs"]) == [[k, str(i)] for i, k in enumerate(keys)]


class Balancer:
    """Round robin over the replicas with failover, as nginx's proxy_next_upstream does: a request that
    gets no answer (connection refused or cut) is sent again to the next replica, unchanged."""

    def __init__(self, urls: list[str]):
        self.clients = [httpx.Client(base_url=u, timeout=10.0) for u in urls]
        self.turn = 0
        self.failovers = 0

    def post(self, path: str, body: dict) -> httpx.Response:
        for _ in range(50):
            client = self.clients[self.turn % len(self.clients)]
            self.turn += 1
            try:
                r = client.post(path, json=body)
            except httpx.TransportError:
                self.failovers += 1
                time.sleep(0.02)
                continue
            if r.status_code in (502, 503):
                time.sleep(0.02)
                continue
            return r
        raise AssertionError(f"no replica answered {path}")

    def close(self) -> None:
        for c in self.clients:
            c.close()


def test_a_replica_killed_mid_stream_loses_and_doubles_nothing(
    redis_url: str, model_repository: Path
) -> None:
    victim, survivor = replica(redis_url, model_repository), replica(redis_url, model_repository)
    lb = Balancer([victim.url, survivor.url])
    rows = [pairs for k in (6, 12, 26) for pairs, _ in fresh_rows(k, 3)]
    sessions = [lb.post("/v1/sessions", {}).json()["session_id"] for _ in rows]
    killed = restarted = None
    try:
        for step in range(max(len(pairs) for pairs in rows)):  # up to 26 pairs, the served capacity
            for sid, pairs in zip(sessions, rows, strict=True):
                if step < len(pairs):
                    r = lb.post(f"/v1/sessions/{sid}/pairs", {"pairs": [pairs[step]], "seq": step})
                    assert r.status_code == 200, r.text
                    assert r.json()["num_pairs"] == step + 1
            if step == 3:  # mid-stream: SIGKILL, no drain, requests in flight are cut
                os.kill(victim.pid, signal.SIGKILL)
                victim.proc.wait(10)
                killed = step
            if step == 7:  # the replica comes back (a restart) and takes traffic again
                restarted = replica(redis_url, model_repository)
                lb.clients[0] = httpx.Client(base_url=restarted.url, timeout=10.0)
        assert killed == 3 and restarted is not None and lb.failovers > 0
        with httpx.Client(base_url=restarted.url, timeout=30.0) as c:
            for sid, pairs in zip(sessions, rows, strict=True):
                info = c.get(f"/v1/sessions/{sid}").json()
                assert info["pairs"] == pairs and info["next_seq"] == len(pairs)  # nothing lost or doubled
                for key, _ in pairs:
                    ask = {"query": key, "top_k": 3, "explain": True}
                    want = c.post("/v1/retrieve", json={"pairs": pairs, **ask}).json()
                    same_answer(c.post(f"/v1/sessions/{sid}/query", json=ask).json(), want)
    finally:
        lb.close()
        survivor.stop()
        if restarted is not None:
            restarted.stop()
        victim.stop()


def test_the_redis_store_evicts_the_least_recently_used_and_notices_expiry(redis_url: str) -> None:
    from service.sessions.redis_store import RedisStore

    def state(sid: str) -> SessionState:
        return SessionState(sid, "m", "1", [1, 2], np.ones(50, np.float32), np.ones((26, 50), np.float32))

    async def go() -> None:
        store = RedisStore(redis_url.replace("/0", "/3"), 2, 1.0)
        await store._redis.flushdb()
        for sid in ("a", "b"):
            await store.create(state(sid), lambda s: False)
            await asyncio.sleep(0.01)
        await store.touch("a", time.time())
        await store.create(state("c"), lambda s: False)
        assert await store.get("b") is None and await store.gone_reason("b") == "evicted"
        got = await store.get("a")
        assert got is not None and np.array_equal(got.memory, state("a").memory)
        stale = await store.get("a")
        assert stale is not None
        stale.revision = 5
        assert await store.replace(stale, 0) and not await store.replace(stale, 0)  # compare-and-set
        await asyncio.sleep(1.3)
        assert await store.get("c") is None and await store.gone_reason("c") == "expired"
        assert store.counts()["evicted"] == 1 and store.counts()["expired"] >= 1
        await store.close()

    asyncio.run(go())
