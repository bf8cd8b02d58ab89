"""Memory sessions: create, append, query, read, delete — free of HTTP.

A session is the stream model's state after the pairs appended so far (`SessionState`); an append runs
only the new pairs through the stream model (one call per chunk, steps of concurrent sessions sharing one
onnxruntime run through the registry's batcher), a query runs '??k' on a copy and stores nothing.

Exactly once: each append carries the client's sequence number. The number the session expects is applied
and remembered with its answer; the same number again with the same pairs is a retry and gets that answer
again without running anything; any other number is a `SequenceMismatchError` (409) saying what is
expected. Appends to one session are serialised by a per-session lock in this process, and across replicas
by the store's compare-and-set on the session's revision (the loser reads the new state and decides again,
so it answers as a retry or a mismatch, never applies twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from contract import OUTPUT_ATTENTION, OUTPUT_LOGITS
from contract.stream import OUTPUT_STATE_H, OUTPUT_STATE_MEMORY, stream_model_name
from contract.vocab import KEYS, QUERY_MARK, VALUES, ParsedQuery, SequenceError, from_pairs
from service.config import Settings
from service.predictor import decode
from service.registry import ModelNotFoundError, ModelNotReadyError, ModelRegistry
from service.retrieval import Answer
from service.sessions.errors import (
    SequenceMismatchError,
    SessionBusyError,
    SessionFullError,
    SessionNotFoundError,
    SessionsNotServedError,
    SessionsUnavailableError,
    SessionTooLargeError,
    TooManySessionsError,
)
from service.sessions.state import SessionState
from service.sessions.store import SessionStore, StoreFullError
from service.sessions.stream_model import StreamModel

log = logging.getLogger("service.sessions")

CAS_ATTEMPTS = 8  # compare-and-set retries of one update before answering 503 session_busy


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fingerprint(pairs: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(pairs)).encode()).hexdigest()[:16]


def checked_pairs(raw: Sequence[Sequence[str]], field: str = "pairs") -> list[tuple[str, str]]:
    """[key, value] lists -> pairs, each a letter and a digit, no key twice (SequenceError otherwise)."""
    if not raw:
        return []
    try:
        parsed = from_pairs(raw, str(raw[0][0]) if raw[0] else "", field=field)
    except SequenceError as exc:
        if exc.code != "query_not_found":  # the query is ours (the first key): only the pairs matter here
            raise
        raise SequenceError("malformed", f"{field}[0]: key must be one letter a-z", f"{field}[0]") from None
    return list(parsed.pairs)


def pairs_of_sequence(sequence: str, field: str = "sequence") -> list[tuple[str, str]]:
    """'c9k8' (pairs only, no '??') -> [("c", "9"), ("k", "8")]."""
    if len(sequence) % 2 or any(
        k not in KEYS or v not in VALUES for k, v in zip(sequence[::2], sequence[1::2], strict=True)
    ):
        raise SequenceError(
            "malformed", "sequence must be key/value pairs like 'c9k8' (letter, digit)", field
        )
    return checked_pairs([[sequence[i], sequence[i + 1]] for i in range(0, len(sequence), 2)], field)


class SessionManager:
    def __init__(self, settings: Settings, registry: ModelRegistry, store: SessionStore):
        self.settings = settings
        self.registry = registry
        self.store = store
        self._locks: dict[str, list[Any]] = {}  # session id -> [lock, holders and waiters]
        self._sweeper: asyncio.Task[None] | None = None
        self.appends_applied = 0
        self.appends_retried = 0
        self.states_replayed = 0  # sessions run again through a newly loaded stream model version

    # -- life cycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="sessions:sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.store.close()

    async def _sweep_forever(self) -> None:
        period = max(0.05, min(30.0, self.settings.session_idle_ttl_s / 4))
        while True:
            await asyncio.sleep(period)
            try:
                await self.store.sweep()
            except Exception:  # a store hiccup must not end the sweeping
                log.exception("session sweep failed")

    # -- the model ----------------------------------------------------------------------------------------

    def stream_model(self, family: str | None = None) -> StreamModel:
        family = family or self.settings.default_family
        return self.stream_model_named(stream_model_name(family), family)

    def stream_model_named(self, name: str, family: str | None = None) -> StreamModel:
        """The serving version of the stream model `name` (a session's `state.model`)."""
        try:
            model = self.registry.get(name)
        except ModelNotFoundError:
            raise SessionsNotServedError(family or name) from None
        except ModelNotReadyError as exc:
            raise SessionsUnavailableError(f"memory sessions need the stream model: {exc}") from None
        assert isinstance(model, StreamModel)
        return model

    def max_pairs(self, model: StreamModel) -> int:
        cap = model.shape.max_pairs
        return min(cap, self.settings.session_max_pairs) if self.settings.session_max_pairs else cap

    def limits(self, family: str | None = None) -> dict[str, Any]:
        model = self.stream_model(family)
        return {
            "model": model.info.family,
            "stream_model": model.info.name,
            "version": model.info.version,
            "max_pairs": self.max_pairs(model),
            "max_sessions": self.settings.session_max,
            "idle_ttl_s": self.settings.session_idle_ttl_s,
            "max_bytes": self.settings.session_max_bytes,
            "state_bytes": model.shape.state_bytes,
            "store": "redis" if self.settings.session_store.startswith("redis") else "memory",
        }

    # -- running the stream model -------------------------------------------------------------------------

    async def run_chunk(
        self, model: StreamModel, state: SessionState, chunk: list[int]
    ) -> dict[str, np.ndarray]:
        """One call: `chunk` (<= C real tokens, left padded here) on `state`'s h and memory."""
        C = model.shape.chunk_len
        tokens = np.full((1, C), model.info.pad_id, dtype=np.int64)
        tokens[0, C - len(chunk) :] = chunk
        rows = model.pack(tokens, state.h[None], state.memory[None])
        # That exact version: a reload that lands meanwhile must not run this state through other weights.
        return await self.registry.infer_rows(model.info.name, rows, version=model.info.version)

    async def _advance(self, model: StreamModel, state: SessionState, tokens: list[int]) -> None:
        """Append `tokens` to `state` in place, a whole number of pairs per call where they fit."""
        C = model.shape.chunk_len
        step = C - C % 2 if len(tokens) % 2 == 0 else C
        for lo in range(0, len(tokens), step):
            out = await self.run_chunk(model, state, tokens[lo : lo + step])
            state.h, state.memory = out[OUTPUT_STATE_H][0], out[OUTPUT_STATE_MEMORY][0]
        state.tokens.extend(tokens)

    @staticmethod
    def is_current(model: StreamModel, state: SessionState) -> bool:
        """Whether `model` (name and version) computed `state`'s h and memory."""
        return state.model == model.info.name and state.version == model.info.version

    async def current_state(self, model: StreamModel, state: SessionState) -> SessionState:
        """A copy of `state` whose h and memory are `model`'s: after a hot reload to another version, the
        session's tokens run again through it (one call per pair: at most 26), so no answer mixes two
        versions' weights. The bookkeeping (sequence numbers, last answer, revision) is kept."""
        new = state.copy()
        if self.is_current(model, state):
            return new
        empty = self.empty_state(model, state.session_id)
        new.model, new.version, new.tokens = model.info.name, model.info.version, []
        new.h, new.memory = empty.h, empty.memory
        if state.tokens:
            await self._advance(model, new, list(state.tokens))
        self.states_replayed += 1
        return new

    async def refreshed(self, model: StreamModel, state: SessionState) -> SessionState:
        """`state` as `model` computes it, stored once (compare-and-set on the revision: when another writer
        got there first, its state stands and this one is only used for the answer at hand). Call it holding
        the session's lock."""
        if self.is_current(model, state):
            return state
        new = await self.current_state(model, state)
        new.revision = state.revision + 1
        await self.store.replace(new, state.revision)
        return new

    def _ids(self, model: StreamModel, pairs: Sequence[tuple[str, str]]) -> list[int]:
        index = model.vocab.index
        return [index[t] for pair in pairs for t in pair]

    def _pairs(self, model: StreamModel, state: SessionState) -> list[tuple[str, str]]:
        toks = model.vocab.tokens
        return [
            (toks[state.tokens[i]], toks[state.tokens[i + 1]]) for i in range(0, len(state.tokens) - 1, 2)
        ]

    # -- the API ------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serialized(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session's lock; the lock lives while anyone holds or awaits it (a count, not
        `locked()`, which is briefly False while a woken waiter has not yet taken it)."""
        entry = self._locks.get(session_id)
        if entry is None:
            entry = self._locks[session_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[session_id]

    def is_busy(self, session_id: str) -> bool:
        return session_id in self._locks

    async def _load(self, session_id: str) -> SessionState:
        state = await self.store.get(session_id)
        if state is None:
            raise SessionNotFoundError(session_id, await self.store.gone_reason(session_id))
        return state

    def info(self, model: StreamModel, state: SessionState) -> dict[str, Any]:
        return {
            "session_id": state.session_id,
            "model": model.info.family,
            "version": state.version,
            "num_pairs": len(state.tokens) // 2,
            "pairs": [list(p) for p in self._pairs(model, state)],
            "next_seq": state.next_seq,
            "max_pairs": self.max_pairs(model),
            "bytes": self._size(state),
            "created_at": _iso(state.created_at),
            "expires_at": _iso(state.last_used + self.settings.session_idle_ttl_s),
        }

    def _size(self, state: SessionState) -> int:
        return state.state_bytes + len(state.tokens)

    def _check_capacity(self, model: StreamModel, state: SessionState, new: list[tuple[str, str]]) -> None:
        held = len(state.tokens) // 2
        limit = self.max_pairs(model)
        if held + len(new) > limit:
            raise SessionFullError(held, len(new), limit)
        stored = {k: (i, v) for i, (k, v) in enumerate(self._pairs(model, state))}
        for j, (key, _) in enumerate(new):
            if key in stored:
                i, v = stored[key]
                raise SequenceError(
                    "duplicate_key",
                    f"key {key!r} is already in the session (pair {i}: [{key!r}, {v!r}]); keys are distinct",
                    f"pairs[{j}]",
                )
        size = self._size(state) + 2 * len(new)
        if size > self.settings.session_max_bytes:
            raise SessionTooLargeError(size, self.settings.session_max_bytes)

    def empty_state(self, model: StreamModel, session_id: str) -> SessionState:
        """A session with no tokens yet: h and the memory all zeros (the stream model's initial state)."""
        s, now = model.shape, time.time()
        h = np.zeros(s.hidden_size, dtype=np.float32)
        memory = np.zeros((s.memory_len, s.hidden_size), dtype=np.float32)
        return SessionState(
            session_id, model.info.name, model.info.version, [], h, memory, created_at=now, last_used=now
        )

    async def create(
        self, pairs: Sequence[tuple[str, str]] = (), family: str | None = None
    ) -> dict[str, Any]:
        model = self.stream_model(family)
        state = self.empty_state(model, secrets.token_urlsafe(16))
        self._check_capacity(model, state, list(pairs))
        async with self.serialized(state.session_id):
            if pairs:
                await self._advance(model, state, self._ids(model, pairs))
            try:
                await self.store.create(state, self.is_busy)
            except StoreFullError:
                raise TooManySessionsError(self.settings.session_max, self.settings.retry_after_s) from None
        return self.info(model, state)

    async def append(self, session_id: str, pairs: Sequence[tuple[str, str]], seq: int) -> dict[str, Any]:
        self.stream_model()  # sessions are served here at all (else 404 sessions_not_served)
        if not pairs:
            raise SequenceError("empty", "nothing to append: give at least one pair", "pairs")
        fingerprint = _fingerprint(pairs)
        async with self.serialized(session_id):
            for _ in range(CAS_ATTEMPTS):
                state = await self._load(session_id)
                model = self.stream_model_named(state.model)
                if seq == state.last_seq and fingerprint == state.last_fingerprint:
                    self.appends_retried += 1
                    return dict(state.last_answer)  # a retry of the append applied last: its answer
                if seq != state.next_seq:
                    detail = (
                        "that number was already used by an earlier append with other pairs"
                        if seq < state.next_seq
                        else "a gap: an earlier append is missing"
                    )
                    raise SequenceMismatchError(session_id, seq, state.next_seq, detail)
                self._check_capacity(model, state, list(pairs))
                revision = state.revision
                new = await self.current_state(model, state)
                await self._advance(model, new, self._ids(model, pairs))
                new.next_seq, new.last_seq, new.last_fingerprint = seq + 1, seq, fingerprint
                new.revision, new.last_used = revision + 1, time.time()
                new.last_answer = self.info(model, new)
                if await self.store.replace(new, revision):
                    self.appends_applied += 1
                    return dict(new.last_answer)
            raise SessionBusyError(session_id, self.settings.retry_after_s)

    async def query(self, session_id: str, key: str, top_k: int = 1, explain: bool = False) -> Answer:
        self.stream_model()  # sessions are served here at all (else 404 sessions_not_served)
        state = await self._load(session_id)
        model = self.stream_model_named(state.model)
        if not self.is_current(model, state):  # a reload since the last append: replay and store, once
            async with self.serialized(session_id):
                state = await self.refreshed(model, await self._load(session_id))
        pairs = self._pairs(model, state)
        if not pairs:
            raise SequenceError("empty", "the session holds no pairs yet: append some first", "session_id")
        parsed: ParsedQuery = from_pairs(pairs, key, field="pairs")
        index = model.vocab.index
        out = await self.run_chunk(model, state, [index[QUERY_MARK], index[QUERY_MARK], index[key]])
        await self.store.touch(session_id, time.time())
        (prediction,) = decode(
            [parsed],
            out[OUTPUT_LOGITS],
            out[OUTPUT_ATTENTION],
            model.info.answer_classes,
            top_k=top_k,
            explain=explain,
        )
        return Answer(prediction, len(pairs), model.info.name, state.version)  # bucket: the stream model

    async def read(self, session_id: str) -> dict[str, Any]:
        self.stream_model()
        state = await self._load(session_id)
        return self.info(self.stream_model_named(state.model), state)

    async def delete(self, session_id: str) -> None:
        if not await self.store.delete(session_id):
            raise SessionNotFoundError(session_id, await self.store.gone_reason(session_id))
