"""One memory session as stored: its tokens so far, the stream model's state after them, and the
bookkeeping that makes appends exactly-once. Serialised to bytes for a shared store (Redis)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SessionState:
    session_id: str
    model: str  # the stream model's repository name, e.g. "fastweights_stream"
    version: str  # the stream model version that computed the state
    tokens: list[int]  # every real token appended (a pair is two), oldest first
    h: np.ndarray  # (H,) float32
    memory: np.ndarray  # (P, H) float32
    next_seq: int = 0  # the sequence number the next append must carry
    # the last applied append: its seq, a fingerprint of its body and its answer (a retry gets it again)
    last_seq: int | None = None
    last_fingerprint: str = ""
    last_answer: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    revision: int = 0  # bumped on every stored change: the shared store's compare-and-set

    @property
    def state_bytes(self) -> int:
        return int(self.h.nbytes + self.memory.nbytes)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def copy(self) -> SessionState:
        return SessionState(
            self.session_id,
            self.model,
            self.version,
            list(self.tokens),
            self.h.copy(),
            self.memory.copy(),
            self.next_seq,
            self.last_seq,
            self.last_fingerprint,
            dict(self.last_answer),
            self.created_at,
            self.last_used,
            self.revision,
        )

    def to_bytes(self) -> bytes:
        """A JSON header line, then h and the memory as little-endian float32."""
        header = {
            "session_id": self.session_id,
            "model": self.model,
            "version": self.version,
            "tokens": self.tokens,
            "h": list(self.h.shape),
            "memory": list(self.memory.shape),
            "next_seq": self.next_seq,
            "last_seq": self.last_seq,
            "last_fingerprint": self.last_fingerprint,
            "last_answer": self.last_answer,
            "created_at": self.created_at,
            "last_used": self.last_used,
            "revision": self.revision,
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        body = self.h.astype("<f4").tobytes() + self.memory.astype("<f4").tobytes()
        return head + b"\n" + body

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionState:
        head, _, body = raw.partition(b"\n")
        d = json.loads(head)
        h_shape, m_shape = tuple(d["h"]), tuple(d["memory"])
        n_h = int(np.prod(h_shape))
        values = np.frombuffer(body, dtype="<f4").astype(np.float32)
        return cls(
            d["session_id"],
            d["model"],
            d["version"],
            list(d["tokens"]),
            values[:n_h].reshape(h_shape).copy(),
            values[n_h:].reshape(m_shape).copy(),
            d["next_seq"],
            d["last_seq"],
            d["last_fingerprint"],
            d["last_answer"],
            d["created_at"],
            d["last_used"],
            d["revision"],
        )
