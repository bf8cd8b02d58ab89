"""Triton's sequence semantics for the stream model over V2: the request's parameters carry
`sequence_id` (int or string), `sequence_start` and `sequence_end`; the state lives server-side per id.

- `sequence_start`: the sequence begins (any state kept under that id is replaced by the empty memory).
- A request without it continues the sequence's state; an id never started (or expired) is a 400.
- A chunk that holds the query mark ('??k') is a question: it is answered on the stored state, which it
  does not change, so a sequence can be asked any number of times.
- `sequence_end`: the state is dropped after this request.

One row per request (Triton's sequence batcher sends each sequence's steps one at a time); steps of several
sequences still share onnxruntime runs through the batcher.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from contract import OUTPUT_ATTENTION, OUTPUT_LOGITS
from contract.stream import OUTPUT_STATE_H, OUTPUT_STATE_MEMORY
from contract.vocab import QUERY_MARK
from service.errors import ApiError
from service.sessions.errors import SessionBusyError
from service.sessions.manager import SessionManager
from service.sessions.state import SessionState
from service.sessions.store import StoreFullError
from service.sessions.stream_model import StreamModel

MAX_ID_LENGTH = 128


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def sequence_key(parameters: Mapping[str, Any]) -> str:
    """The store key of the request's sequence: ints and strings are different ids, as in Triton."""
    sid = parameters.get("sequence_id")
    if isinstance(sid, bool) or sid is None or sid == 0 or sid == "":
        raise _bad(
            "this model is stateful: send parameters.sequence_id (a non-zero int or a non-empty string)"
        )
    if isinstance(sid, int):
        return f"v2:int:{sid}"
    if isinstance(sid, str) and len(sid) <= MAX_ID_LENGTH:
        return f"v2:str:{sid}"
    raise _bad(f"sequence_id must be an int or a string of at most {MAX_ID_LENGTH} characters")


def _flag(parameters: Mapping[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise _bad(f"parameters.{name} must be a boolean")
    return value


async def sequence_infer(
    manager: SessionManager | None, model: StreamModel, tokens: np.ndarray, parameters: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """One V2 request on the stream model: tokens (1, C) int64 -> {"logits", "memory_attention"}."""
    if manager is None:
        raise _bad(f"model {model.info.name!r} is stateful and this server serves no sessions (FWS_SESSIONS)")
    key = sequence_key(parameters)
    start, end = _flag(parameters, "sequence_start"), _flag(parameters, "sequence_end")
    if tokens.shape[0] != 1:
        raise _bad(f"a sequence takes one row per request, got {tokens.shape[0]}")
    pad_id = model.info.pad_id
    row = [int(t) for t in tokens[0]]
    first_real = next((i for i, t in enumerate(row) if t != pad_id), len(row))
    real = row[first_real:]
    if pad_id in real:
        raise _bad("tokens: PAD may only come before the chunk's tokens (left padding)")
    question = model.vocab.index[QUERY_MARK] in real
    async with manager.serialized(key):
        state = None if start else await manager.store.get(key)
        if state is None:
            if not start:
                reason = await manager.store.gone_reason(key)
                why = f" ({reason})" if reason else ""
                raise _bad(f"sequence {parameters['sequence_id']!r} is not started{why}: send sequence_start")
            state = manager.empty_state(model, key)
            await manager.store.delete(key)  # a restart replaces what was kept
            try:
                await manager.store.create(state, manager.is_busy)
            except StoreFullError:
                raise ApiError(503, "too_many_sessions", "too many sequences held; retry later") from None
        state = await manager.refreshed(model, state)  # a reload since the last step: replayed, stored once
        limit = 2 * manager.max_pairs(model) + (3 if question else 0)
        if len(state.tokens) + len(real) > limit:
            raise _bad(
                f"sequence {parameters['sequence_id']!r} would hold {len(state.tokens) + len(real)} tokens; "
                f"the stream model holds at most {2 * manager.max_pairs(model)} (then a query '??k')"
            )
        out = await manager.run_chunk(model, state, real) if real else _unchanged(model, state)
        if end:
            await manager.store.delete(key)
        elif question:
            await manager.store.touch(key, time.time())
        elif real:
            revision = state.revision
            state.h, state.memory = out[OUTPUT_STATE_H][0], out[OUTPUT_STATE_MEMORY][0]
            state.tokens.extend(real)
            state.revision, state.last_used = revision + 1, time.time()
            if not await manager.store.replace(state, revision):  # another replica changed it meanwhile
                raise SessionBusyError(str(parameters["sequence_id"]), manager.settings.retry_after_s)
    return {OUTPUT_LOGITS: out[OUTPUT_LOGITS], OUTPUT_ATTENTION: out[OUTPUT_ATTENTION]}


def _unchanged(model: StreamModel, state: SessionState) -> dict[str, np.ndarray]:
    """An all-PAD chunk: nothing runs; the head's answer on the current h is not needed, so zeros."""
    classes = len(model.info.answer_classes)
    return {
        OUTPUT_LOGITS: np.zeros((1, classes), dtype=np.float32),
        OUTPUT_ATTENTION: np.zeros((1, model.shape.memory_len + 1), dtype=np.float32),
        OUTPUT_STATE_H: state.h[None],
        OUTPUT_STATE_MEMORY: state.memory[None],
    }
