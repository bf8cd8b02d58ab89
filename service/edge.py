"""Limits at the HTTP edge: how much one connection may make the server hold, and for how long.

`EdgeGuard` sits in front of uvicorn's httptools protocol (`service.transport.ServiceHttpProtocol` puts it
first), so every request is under it whichever way it is then served (the protocol's fast routes or ASGI,
`FWS_FAST_PATH` true or false):

- request head (request line and headers): at most `max_header_bytes` bytes and `max_headers` headers, else
  431 and close. The bytes are counted as they are fed to the parser, so a header line that never ends is
  cut off at the limit (httptools buffers a header line whole before handing it over);
- time: a request's head must arrive within `header_timeout_s` of its first byte and its body within
  `body_timeout_s` of its head, else 408 and close (slowloris); a connection that never starts a first
  request is closed after `idle_timeout_s` (between requests, uvicorn's keep-alive timeout applies);
- connections: at most `max_connections` open. One more evicts the connection that has waited longest
  without a request in progress (idle, or still sending a head); with none to evict it gets a canned 503
  and is closed at once. A fresh connection (a health probe) thus gets in while the slots hold idlers;
- request bodies: all connections together hold at most `body_budget_bytes` of bodies still arriving; a
  body that would pass it gets 503 and its connection is closed (each body alone is capped by
  FWS_MAX_BODY_BYTES; this caps them all at once, e.g. many slow uploads);
- answers a client does not read: once the socket's write buffer passes `write_buffer_bytes`, reading stops
  (no more requests are parsed), and a connection whose buffer has not drained for `send_timeout_s` is
  aborted. At most `max_pipelined` requests wait behind the one being answered; the rest of such a
  pipeline is not parsed, and the connection closes after answering the ones accepted.

Deadlines are checked by one sweep per server (`_ServerEdge`), a few times per shortest timeout: no timer and
no clock read per request. A phase's start is stamped by the first sweep that sees it, so a deadline fires
between the timeout and the timeout plus one sweep interval.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

IDLE, HEAD, BODY = 0, 1, 2  # waiting for a request / reading its head / reading its body
# While a head is being read, data goes to the parser in pieces of at most this size, so an oversized head
# is noticed within one piece of the limit (a whole read can be 256 KiB).
_HEAD_PIECE = 8192
# How long a refused connection's further bytes are read and dropped before it is closed (see `refuse`).
LINGER_S = 1.0


@dataclass(frozen=True)
class EdgeLimits:
    """The edge limits of one server (`FWS_*` settings, see `service.config.Settings`)."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 10.0
    max_connections: int = 1024
    send_timeout_s: float = 30.0
    write_buffer_bytes: int = 64 * 1024
    max_pipelined: int = 32
    body_budget_bytes: int = 256 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> EdgeLimits:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})

    @property
    def sweep_interval_s(self) -> float:
        shortest = min(self.header_timeout_s, self.body_timeout_s, self.idle_timeout_s, self.send_timeout_s)
        return min(1.0, max(0.02, shortest / 4))


def limits_of(app: Any) -> EdgeLimits:
    """The limits of the app's settings (looking through uvicorn's wrappers); the defaults without any."""
    for _ in range(5):
        settings = getattr(getattr(app, "state", None), "settings", None)
        if settings is not None:
            return EdgeLimits.from_settings(settings)
        app = getattr(app, "app", None)
    return EdgeLimits()


def _canned(status: int, reason: bytes, message: bytes) -> bytes:
    body = b'{"error":"' + message + b'"}'
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, reason, len(body))
        + body
    )


# Answers written straight to the socket: the request was never parsed far enough to have a path, so they
# use the V2 error shape, which is also a readable message for the native API's clients.
TOO_LARGE_HEAD = _canned(431, b"Request Header Fields Too Large", b"request head (headers) too large")
TOO_MANY_HEADERS = _canned(431, b"Request Header Fields Too Large", b"too many request headers")
HEAD_TIMEOUT = _canned(408, b"Request Timeout", b"request head not received in time")
BODY_TIMEOUT = _canned(408, b"Request Timeout", b"request body not received in time")
TOO_MANY_CONNECTIONS = _canned(503, b"Service Unavailable", b"too many open connections")
BODIES_OVER_BUDGET = _canned(503, b"Service Unavailable", b"too many request bodies arriving; retry later")


class EdgeGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol under the limits of `EdgeLimits` (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _limits_for(self.config, self.app)
        self._phase = IDLE
        self._since: float | None = None  # when the phase began; stamped by the sweeper
        self._head_bytes = 0  # bytes fed to the parser for the head being read
        self._refused = False  # answered and closing: nothing more is parsed
        self._overflow = False  # a pipeline past max_pipelined: the rest is not parsed
        self._stalled = False  # the socket's write buffer is over its high-water mark
        self._body_held = 0  # bytes of the body being received, counted in the server's budget
        self._queued_held = 0  # bytes parsed into requests waiting in the pipeline, counted there too
        self._server: _ServerEdge | None = None
        self._stalled_since: float | None = None  # since when (stamped by the sweeper)

    # ------------------------------------------------------------------------------ connection lifecycle

    def connection_made(self, transport: Any) -> None:
        limits = self.limits
        if len(self.connections) >= limits.max_connections and not _evict_one(self.connections):
            self._refused = True
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        transport.set_write_buffer_limits(high=limits.write_buffer_bytes)
        super().connection_made(transport)
        self._server = server = _server_edge(self.server_state, self.loop, limits)
        server.watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made: uvicorn's state was never set up
            return
        self._release_body()
        self._release_queued()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """A graceful shutdown: a request still arriving is not waited for (it would hold the exit)."""
        if self._phase != IDLE and not self._refused:
            self._refused = True
            self.transport.close()
            return
        super().shutdown()

    # ------------------------------------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        if self._refused or self._overflow:
            return
        limit = self.limits.max_header_bytes
        while data:
            if self._phase == IDLE:
                self._phase, self._since = HEAD, None
            if self._phase == BODY:
                piece, data = data, b""
            else:
                size = min(_HEAD_PIECE, limit - self._head_bytes + 1)
                if len(data) <= size:
                    piece, data = data, b""
                else:
                    piece, data = data[:size], data[size:]
            before = self._phase
            super().data_received(piece)
            if self._refused or self.transport.is_closing():
                return
            if self.pipeline:
                # Requests parsed while others wait hold their bytes (heads, bodies) until served: they
                # count in the server's body budget too, until the pipeline has drained.
                self._hold_queued(len(piece))
                if self._refused:
                    return
            elif self._queued_held:
                self._release_queued()
            if self._phase == HEAD:
                # Bytes of this piece that belong to the unfinished head: all of it if the head was already
                # being read; if it began inside this piece (after an earlier request), uncounted (bounded).
                if before == HEAD:
                    self._head_bytes += len(piece)
                if self._head_bytes > limit:
                    self.refuse(TOO_LARGE_HEAD)
                    return
            if self._overflow:
                return

    def on_headers_complete(self) -> None:
        if self._refused or self._overflow:
            return
        self._phase, self._since, self._head_bytes = BODY, None, 0
        if len(self.headers) > self.limits.max_headers:
            self.refuse(TOO_MANY_HEADERS)
            return
        if len(self.pipeline) >= self.limits.max_pipelined:
            # Enough is queued: answer those, then close; what follows is not parsed (the client retries it).
            self._overflow = True
            self._phase = IDLE
            if self.cycle is not None:
                self.cycle.keep_alive = False
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused or self._overflow:
            return
        server = self._server
        if server is not None:
            self._body_held += len(body)
            server.body_bytes += len(body)
            if server.body_bytes > self.limits.body_budget_bytes:
                self.refuse(BODIES_OVER_BUDGET)
                return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused or self._overflow:
            return
        self._phase, self._since = IDLE, None
        if self._body_held:
            self._release_body()
        super().on_message_complete()

    def _release_body(self) -> None:
        if self._server is not None:
            self._server.body_bytes -= self._body_held
        self._body_held = 0

    def _hold_queued(self, size: int) -> None:
        server = self._server
        if server is not None:
            self._queued_held += size
            server.body_bytes += size
            if server.body_bytes > self.limits.body_budget_bytes:
                self.refuse(BODIES_OVER_BUDGET)

    def _release_queued(self) -> None:
        if self._server is not None:
            self._server.body_bytes -= self._queued_held
        self._queued_held = 0

    def refuse(self, answer: bytes) -> None:
        """Answer `answer` (a canned response) and close; nothing more is read from this connection."""
        self._refused = True
        self._release_body()
        self._release_queued()
        transport = self.transport
        cycle = self.cycle
        # The canned answer may go out only as the answer to the request being received (head or body late,
        # nothing answered yet) with nothing before it still to answer; otherwise just close.
        can_answer = not self.pipeline and (
            cycle is None
            or cycle.response_complete
            or (self._phase == BODY and not getattr(cycle, "response_started", False))
        )
        if not answer or not can_answer:
            transport.close()
            return
        transport.write(answer)
        # Half-close, and read and drop what the client still sends for a moment before closing: closing a
        # socket with unread data resets the connection, which can destroy the answer before it is read.
        try:
            transport.write_eof()
        except (NotImplementedError, RuntimeError, AttributeError):
            transport.close()
            return
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, transport.close)

    # ------------------------------------------------------------------------------------------ writing

    def pause_writing(self) -> None:
        """The socket's buffer is full (the client does not read): stop reading its requests too."""
        super().pause_writing()
        self.flow.pause_reading()
        self._stalled_since = None
        self._stalled = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stalled = False
        cycle = self.cycle
        if not self._overflow and (cycle is None or cycle.response_complete) and not self.pipeline:
            self.flow.resume_reading()  # (otherwise uvicorn resumes reading when it wants the next request)

    # ------------------------------------------------------------------------------------------ sweeping

    def check(self, now: float) -> None:
        """Enforce the deadlines at time `now` (called by the sweeper)."""
        if self._refused or self.transport is None or self.transport.is_closing():
            return
        if self._queued_held and not self.pipeline:
            self._release_queued()  # (the pipeline drained and no data came since)
        limits = self.limits
        if self._stalled:
            if self._stalled_since is None:
                self._stalled_since = now
            elif now - self._stalled_since > limits.send_timeout_s:
                self._refused = True
                self.transport.abort()  # its unread answers are dropped: it was not reading them
                return
        phase = self._phase
        if phase == IDLE and (self.cycle is not None or self.pipeline):
            return  # a request is being answered, or uvicorn's keep-alive timer watches the connection
        since = self._since
        if since is None:
            self._since = now
            return
        waited = now - since
        if phase == HEAD and waited > limits.header_timeout_s:
            self.refuse(HEAD_TIMEOUT)
        elif phase == BODY and waited > limits.body_timeout_s:
            self.refuse(BODY_TIMEOUT)
        elif phase == IDLE and waited > limits.idle_timeout_s:
            self._refused = True
            self.transport.close()

    @property
    def evictable_since(self) -> float | None:
        """When this connection began waiting for a request (or its head), if nothing is in progress."""
        if self._refused or self._phase == BODY or self.pipeline:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None
        return self._since if self._since is not None else float("inf")


def _evict_one(connections: set[Any]) -> bool:
    """Close the connection that has waited longest without a request in progress; False if none can go."""
    victim, oldest = None, float("inf")
    for conn in connections:
        since = getattr(conn, "evictable_since", None)
        if since is not None and (victim is None or since < oldest):
            victim, oldest = conn, since
    if victim is None:
        return False
    victim.refuse(TOO_MANY_CONNECTIONS if victim._phase == HEAD else b"")
    victim.connections.discard(victim)  # its slot is free now, not when the loop reports it closed
    return True


class _ServerEdge:
    """What the connections of one server share: the bytes of bodies arriving, and the sweep that checks
    every connection's deadlines every `limits.sweep_interval_s`."""

    def __init__(self, connections: set[Any], loop: asyncio.AbstractEventLoop, limits: EdgeLimits):
        self.connections = connections
        self.loop = loop
        self.interval = limits.sweep_interval_s
        self.handle: asyncio.TimerHandle | None = None
        self.body_bytes = 0

    def watch(self) -> None:
        if self.handle is None:
            self.handle = self.loop.call_later(self.interval, self.sweep)

    def sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        for conn in list(self.connections):
            check = getattr(conn, "check", None)
            if check is not None:
                check(now)
        if self.connections:
            self.watch()


_SERVERS: weakref.WeakKeyDictionary[Any, _ServerEdge] = weakref.WeakKeyDictionary()
_LIMITS: weakref.WeakKeyDictionary[Any, EdgeLimits] = weakref.WeakKeyDictionary()


def _server_edge(server_state: Any, loop: asyncio.AbstractEventLoop, limits: EdgeLimits) -> _ServerEdge:
    server = _SERVERS.get(server_state)
    if server is None or server.loop is not loop:
        server = _SERVERS[server_state] = _ServerEdge(server_state.connections, loop, limits)
    return server


def _limits_for(config: Any, app: Any) -> EdgeLimits:
    """One `EdgeLimits` per uvicorn config, read from the app's settings on the first connection."""
    limits = _LIMITS.get(config)
    if limits is None:
        limits = _LIMITS[config] = limits_of(app)
    return limits
