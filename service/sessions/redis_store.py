"""Sessions in Redis, shared by every replica (FWS_SESSION_STORE=redis://host:port/db).

    fws:session:{id}   hash {rev, blob}: the revision and `SessionState.to_bytes()`; expires when idle
    fws:sessions       sorted set id -> last use (the LRU order, and where expiries are noticed)
    fws:gone:{id}      why a session is gone ("expired", "evicted", "deleted"), kept a day

Every change is one Lua script, so it is atomic in Redis: `replace` writes only if the stored revision is the
one the change was computed from (two replicas appending at once: one wins, the other re-reads and decides
again), `create` refuses an id that exists. Any replica serves any session, and a session outlives the
replica that made it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from service.sessions.state import SessionState
from service.sessions.store import CountingStore, StoreFullError

PREFIX = "fws:"
GONE_TTL_S = 24 * 3600
EVICTION_CANDIDATES = 16  # the least recently used ids looked at for one not busy in this replica

# KEYS: session key, LRU set. ARGV: expected revision, new revision, blob, ttl ms, now, id.
_REPLACE = """
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'blob', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
return 1
"""
# KEYS: session key, LRU set, gone key. ARGV: revision, blob, ttl ms, now, id.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[1], 'blob', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('DEL', KEYS[3])
return 1
"""
# KEYS: session key, LRU set, gone key. ARGV: reason, gone ttl s, id. Returns 1 if the session was there.
_FORGET = """
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2])
return existed
"""


def _text(value: Any) -> str:
    """A Redis reply (bytes: the client does not decode, the state is binary) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore(CountingStore):
    def __init__(self, url: str, max_sessions: int, idle_ttl_s: float):
        super().__init__()
        self.url = url
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self._ttl_ms = max(1, int(idle_ttl_s * 1000))
        self._redis = aioredis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self._replace = self._redis.register_script(_REPLACE)
        self._create = self._redis.register_script(_CREATE)
        self._forget = self._redis.register_script(_FORGET)
        self._lru = PREFIX + "sessions"
        self._state_size = 0

    def _key(self, session_id: str) -> str:
        return f"{PREFIX}session:{session_id}"

    def _gone(self, session_id: str) -> str:
        return f"{PREFIX}gone:{session_id}"

    async def _drop(self, session_id: str, reason: str) -> bool:
        keys = [self._key(session_id), self._lru, self._gone(session_id)]
        return bool(await self._forget(keys=keys, args=[reason, GONE_TTL_S, session_id]))

    async def get(self, session_id: str) -> SessionState | None:
        blob = await self._redis.hget(self._key(session_id), "blob")
        if blob is None:
            if await self._redis.zscore(self._lru, session_id) is not None:  # Redis expired it: say so
                await self._drop(session_id, "expired")
                self.expired += 1
            return None
        return SessionState.from_bytes(blob if isinstance(blob, bytes) else _text(blob).encode())

    async def create(self, state: SessionState, is_busy: Callable[[str], bool]) -> None:
        await self.sweep()
        held = await self._redis.zcard(self._lru)
        if held >= self.max_sessions:
            oldest = await self._redis.zrange(self._lru, 0, EVICTION_CANDIDATES - 1)
            victim = next((_text(i) for i in oldest if not is_busy(_text(i))), None)
            if victim is None:
                raise StoreFullError(f"{self.max_sessions} sessions, the least recently used in use")
            if await self._drop(victim, "evicted"):
                self.evicted += 1
        keys = [self._key(state.session_id), self._lru, self._gone(state.session_id)]
        args: list[Any] = [state.revision, state.to_bytes(), self._ttl_ms, state.last_used, state.session_id]
        if not await self._create(keys=keys, args=args):
            raise RuntimeError(f"session id {state.session_id!r} already exists")
        self.created += 1
        self._state_size = state.state_bytes
        await self._count()

    async def replace(self, state: SessionState, expected_revision: int) -> bool:
        keys = [self._key(state.session_id), self._lru]
        args: list[Any] = [
            expected_revision,
            state.revision,
            state.to_bytes(),
            self._ttl_ms,
            state.last_used,
            state.session_id,
        ]
        return bool(await self._replace(keys=keys, args=args))

    async def touch(self, session_id: str, now: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.pexpire(self._key(session_id), self._ttl_ms)
            pipe.zadd(self._lru, {session_id: now}, xx=True)
            await pipe.execute()

    async def delete(self, session_id: str) -> bool:
        if not await self._redis.exists(self._key(session_id)) or not await self._drop(session_id, "deleted"):
            return False
        self.deleted += 1
        await self._count()
        return True

    async def gone_reason(self, session_id: str) -> str | None:
        reason = await self._redis.get(self._gone(session_id))
        return _text(reason) if reason is not None else None

    async def sweep(self) -> None:
        """Notice the sessions Redis expired (their LRU entries are older than the TTL)."""
        stale = await self._redis.zrangebyscore(self._lru, "-inf", time.time() - self.idle_ttl_s, 0, 1000)
        for raw in stale:
            sid = _text(raw)
            if not await self._redis.exists(self._key(sid)):
                await self._drop(sid, "expired")
                self.expired += 1
        await self._count()

    async def _count(self) -> None:
        self.active = int(await self._redis.zcard(self._lru))
        self.state_bytes = self.active * self._state_size

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
