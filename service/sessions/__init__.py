"""Memory sessions: the fast memory served as a memory (append pairs over time, query at any time).

stream_model.py  the stateful `<family>_stream` graph in onnxruntime (packed rows for the batcher)
state.py         one session as stored (tokens, h, memory, exactly-once bookkeeping)
store.py         where sessions live: in this process (default) ...
redis_store.py   ... or in Redis, shared by replicas (FWS_SESSION_STORE=redis://...)
manager.py       create / append / query / read / delete, free of HTTP
sequences.py     the V2 sequence flow (sequence_id, sequence_start, sequence_end) of the stream model
metrics.py       Prometheus view of the store
"""

from __future__ import annotations

from service.config import Settings
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.sessions.manager import SessionManager
from service.sessions.store import MemoryStore, SessionStore


def build_store(settings: Settings) -> SessionStore:
    if settings.session_store.startswith(("redis://", "rediss://", "unix://")):
        from service.sessions.redis_store import RedisStore

        return RedisStore(settings.session_store, settings.session_max, settings.session_idle_ttl_s)
    if settings.session_store != "memory":
        raise ValueError(
            f"FWS_SESSION_STORE must be 'memory' or 'redis://...', got {settings.session_store!r}"
        )
    return MemoryStore(settings.session_max, settings.session_idle_ttl_s)


def build_sessions(settings: Settings, registry: ModelRegistry, metrics: Metrics) -> SessionManager:
    from service.sessions.metrics import register

    manager = SessionManager(settings, registry, build_store(settings))
    register(metrics, manager)
    return manager
