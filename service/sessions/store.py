"""Where sessions live. `MemoryStore`: this process (the default, nothing to start). The Redis store
(`service.sessions.redis_store`) has the same methods, so the manager does not know which it talks to.

Every change is a compare-and-set on the session's `revision`: `replace` stores the new state only if the
stored one is still the revision it was computed from (in memory, the manager's per-session lock already
guarantees it; in Redis, replicas race and the loser recomputes).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from service.sessions.state import SessionState

TOMBSTONES = 100_000  # ids remembered as expired/evicted/deleted, so a 404 can say which


class SessionStore(Protocol):
    """What the manager needs of a store; `is_busy(id)`: the session is in use (not evictable)."""

    async def get(self, session_id: str) -> SessionState | None: ...
    async def create(self, state: SessionState, is_busy: Callable[[str], bool]) -> None: ...
    async def replace(self, state: SessionState, expected_revision: int) -> bool: ...
    async def touch(self, session_id: str, now: float) -> None: ...
    async def delete(self, session_id: str) -> bool: ...
    async def gone_reason(self, session_id: str) -> str | None: ...
    async def sweep(self) -> None: ...
    async def close(self) -> None: ...
    def counts(self) -> dict[str, float]: ...


class CountingStore:
    """The counters every store keeps (read by the metrics at scrape time)."""

    def __init__(self) -> None:
        self.created = 0
        self.expired = 0
        self.evicted = 0
        self.deleted = 0
        self.active = 0
        self.state_bytes = 0

    def counts(self) -> dict[str, float]:
        return {
            "active": self.active,
            "created": self.created,
            "expired": self.expired,
            "evicted": self.evicted,
            "deleted": self.deleted,
            "state_bytes": self.state_bytes,
        }


class StoreFullError(RuntimeError):
    """Every held session is in use and the store is at its maximum."""


class MemoryStore(CountingStore):
    def __init__(self, max_sessions: int, idle_ttl_s: float, clock: Callable[[], float] = time.time):
        super().__init__()
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()  # least recently used first
        self._gone: OrderedDict[str, str] = OrderedDict()

    def _forget(self, session_id: str, reason: str) -> None:
        state = self._sessions.pop(session_id, None)
        if state is not None:
            self.state_bytes -= state.state_bytes
            self.active = len(self._sessions)
        self._gone[session_id] = reason
        while len(self._gone) > TOMBSTONES:
            self._gone.popitem(last=False)

    def _expired(self, state: SessionState, now: float) -> bool:
        return now - state.last_used > self.idle_ttl_s

    async def get(self, session_id: str) -> SessionState | None:
        state = self._sessions.get(session_id)
        if state is None:
            return None
        if self._expired(state, self._clock()):
            self._forget(session_id, "expired")
            self.expired += 1
            return None
        self._sessions.move_to_end(session_id)
        return state.copy()

    async def create(self, state: SessionState, is_busy: Callable[[str], bool]) -> None:
        await self.sweep()
        if len(self._sessions) >= self.max_sessions:
            victim = next((sid for sid in self._sessions if not is_busy(sid)), None)
            if victim is None:
                raise StoreFullError(f"{self.max_sessions} sessions, all in use")
            self._forget(victim, "evicted")
            self.evicted += 1
        self._sessions[state.session_id] = state.copy()
        self._gone.pop(state.session_id, None)
        self.created += 1
        self.active = len(self._sessions)
        self.state_bytes += state.state_bytes

    async def replace(self, state: SessionState, expected_revision: int) -> bool:
        current = self._sessions.get(state.session_id)
        if current is None or current.revision != expected_revision:
            return False
        self._sessions[state.session_id] = state.copy()
        self._sessions.move_to_end(state.session_id)
        return True

    async def touch(self, session_id: str, now: float) -> None:
        state = self._sessions.get(session_id)
        if state is not None:
            state.last_used = now
            self._sessions.move_to_end(session_id)

    async def delete(self, session_id: str) -> bool:
        if session_id not in self._sessions:
            return False
        self._forget(session_id, "deleted")
        self.deleted += 1
        return True

    async def gone_reason(self, session_id: str) -> str | None:
        return self._gone.get(session_id)

    async def sweep(self) -> None:
        """Expire the idle sessions at the least recently used end."""
        now = self._clock()
        while self._sessions:
            sid, state = next(iter(self._sessions.items()))
            if not self._expired(state, now):
                break
            self._forget(sid, "expired")
            self.expired += 1

    async def close(self) -> None:
        return None
