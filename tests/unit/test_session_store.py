"""The in-process session store: LRU eviction among idle sessions, idle expiry, compare-and-set, bytes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.sessions.state import SessionState
from service.sessions.store import MemoryStore, StoreFullError


def state(sid: str, now: float = 0.0) -> SessionState:
    rng = np.random.default_rng(len(sid))
    return SessionState(
        sid, "fastweights_stream", "1", [3, 30], rng.random(50, dtype=np.float32),
        rng.random((26, 50), dtype=np.float32), created_at=now, last_used=now,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


def test_a_state_survives_its_byte_form_exactly() -> None:
    s = state("abc")
    s.last_answer = {"num_pairs": 1}
    back = SessionState.from_bytes(s.to_bytes())
    assert np.array_equal(back.h, s.h) and np.array_equal(back.memory, s.memory)
    assert (back.tokens, back.last_answer, back.revision) == (s.tokens, s.last_answer, s.revision)


def test_the_least_recently_used_idle_session_is_evicted_at_the_limit() -> None:
    async def go() -> None:
        store = MemoryStore(2, 100.0, Clock())
        await store.create(state("a"), lambda sid: False)
        await store.create(state("b"), lambda sid: False)
        await store.get("a")  # a used last: b goes
        await store.create(state("c"), lambda sid: False)
        assert await store.get("b") is None and await store.gone_reason("b") == "evicted"
        assert await store.get("a") is not None
        # a busy session is never evicted; when all are busy the store refuses
        await store.create(state("d"), lambda sid: sid == "c")
        assert await store.get("c") is not None and await store.gone_reason("a") == "evicted"
        with pytest.raises(StoreFullError):
            await store.create(state("e"), lambda sid: True)
        assert store.counts()["evicted"] == 2 and store.counts()["active"] == 2

    run(go())


def test_an_idle_session_expires_after_its_ttl_and_a_touch_keeps_it() -> None:
    async def go() -> None:
        clock = Clock()
        store = MemoryStore(10, 5.0, clock)
        await store.create(state("a"), lambda sid: False)
        await store.create(state("b"), lambda sid: False)
        clock.now = 4.0
        await store.touch("a", 4.0)
        clock.now = 6.0
        await store.sweep()
        assert await store.gone_reason("b") == "expired" and await store.get("a") is not None
        clock.now = 9.5
        assert await store.get("a") is None and await store.gone_reason("a") == "expired"
        assert store.counts()["expired"] == 2 and store.counts()["state_bytes"] == 0

    run(go())


def test_replace_is_a_compare_and_set_on_the_revision() -> None:
    async def go() -> None:
        store = MemoryStore(10, 100.0, Clock())
        await store.create(state("a"), lambda sid: False)
        s = await store.get("a")
        assert s is not None
        s.revision = 1
        assert await store.replace(s, expected_revision=0)
        assert not await store.replace(s, expected_revision=0)  # stale: someone else's change won
        assert (await store.get("a")).revision == 1  # type: ignore[union-attr]

    run(go())
