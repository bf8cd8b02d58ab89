"""The HTTP protocol `python -m service` runs: uvicorn's httptools protocol, made cheaper per request.

`CoalescingHttpToolsProtocol`: one socket write per response instead of two. uvicorn writes a response's
status line and headers when the app sends `http.response.start`, and the body when it sends
`http.response.body`: two `send` system calls and two TCP segments for every small JSON answer. Here the
connection's writes are held and go to the socket together (one `writelines`, a single `writev`) the moment
the response is complete; a response still streaming is written at the end of the current event-loop
iteration at the latest, so nothing waits for later data (measured, docs/benchmarks.md).

`FastPathProtocol`: the same, and the fast inference routes served by the protocol itself, without ASGI (see
its docstring). `ServiceHttpProtocol` (the one `python -m service` uses): that, under the edge limits of
`service.edge` (header size and count, timeouts, connections, unread answers). With uvicorn's own runner:
`uvicorn --factory service.main:create_app --http service.transport:ServiceHttpProtocol`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.batcher import BatcherClosedError
from service.edge import EdgeGuard
from service.fastpath import (
    FastPathServing,
    FastRoute,
    RawRequest,
    RawResponse,
    header_list,
    raw_error_response,
)
from service.logs import request_id_var
from service.middleware import CLIENT_GONE_STATUS, INTERNAL, decode_headers

log = logging.getLogger("service.access")


class CoalescingTransport:
    """Wraps a transport: `write`s within one loop iteration go out together; everything else passes through.

    Ordering is kept: a close, EOF or abort first sends (or, for abort, drops) what is pending.
    """

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        # Asked several times per request (the edge guard, uvicorn, the fast path): the transport's own
        # method, found in this instance's dict. Through `__getattr__` each call would first fail the normal
        # lookup, which on CPython 3.11 builds and discards an AttributeError (~2 000 instructions).
        self.is_closing = transport.is_closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            if len(pending) == 1:
                self._transport.write(pending[0])
            else:
                self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, ...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `CoalescingTransport`."""

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are no asyncio.Transport
        self._coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        wrapped: Any = self._coalescing  # quacks like the transport it wraps
        super().connection_made(wrapped)

    def on_response_complete(self) -> None:
        self._coalescing.flush()  # the whole response at once, now
        super().on_response_complete()


class FastPathProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol that serves the app's fast routes itself, without ASGI.

    A request for a fast route (`app.fast_path_serving`, see `service.main.create_app`) is answered from the
    parser's callbacks: its body is collected as it arrives, the route's handler runs in a task of its own
    and its answer goes out as one write of status line, headers and body. Skipped, per request, are the ASGI
    scope and messages, uvicorn's request/response cycle with its header checks, and the middleware's wrappers
    (measured, docs/benchmarks.md); kept, through the same objects, are everything the ASGI path does: the
    handlers and their error mapping (`FastPath.respond`), request ids, metrics and the access log
    (`RequestPolicy`). A client that disconnects cancels its request at once (status 499 in the metrics),
    unless it had pipelined another request behind it: then, as on uvicorn's own path, reading is paused and
    the disconnect is noticed when the answer is written. A client that does not read its answers gets the
    next ones the ASGI way, which waits for it to read.

    Anything unusual goes the ordinary way, through uvicorn's cycle and the ASGI app, so its behaviour is
    exactly uvicorn's: a request pipelined behind an unfinished one, `Expect: 100-continue`, a chunked or
    over-limit body, a missing API key, a URL with a query string or escapes, an upgrade, a server with a
    `root_path` or a concurrency limit, and any route without a fast path. The client address is not read on
    this path (nothing in the service uses it).
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._serving: FastPathServing | None = _fast_path_serving(self.app)

    def on_headers_complete(self) -> None:
        serving = self._serving
        if (
            serving is not None
            and (self.cycle is None or self.cycle.response_complete)
            and not self.flow.write_paused  # a client not reading its answers: ASGI's send waits for it
        ):
            exchange = _exchange_for(self, serving)
            if exchange is not None:
                self.cycle = exchange  # type: ignore[assignment]  # what uvicorn's callbacks look at
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is FastPathExchange:
            cycle.chunks.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is FastPathExchange:
            cycle.start()
        else:
            super().on_message_complete()


class ServiceHttpProtocol(EdgeGuard, FastPathProtocol):
    """What `python -m service` runs: the fast-path protocol under the edge limits (`service.edge`), which
    see every request first, however it is then served."""


def _fast_path_serving(app: Any) -> FastPathServing | None:
    """The app's fast routes, looking through uvicorn's wrappers (proxy headers, message logger)."""
    for _ in range(4):
        serving = getattr(app, "fast_path_serving", None)
        if serving is not None:
            return serving
        app = getattr(app, "app", None)
    return None


# A query, an escape or a fragment: such URLs go the ASGI way. One search, where `b"?" in url` would first try
# the bytes as an integer and build and discard a TypeError for each of the three (CPython 3.11).
_NOT_A_PLAIN_PATH = re.compile(rb"[?%#]")


def _exchange_for(protocol: FastPathProtocol, serving: FastPathServing) -> FastPathExchange | None:
    """A `FastPathExchange` for the request whose headers were just parsed; None: it goes the ASGI way."""
    parser = protocol.parser
    url = protocol.url
    if protocol.expect_100_continue or protocol.limit_concurrency is not None or protocol.root_path:
        return None
    if parser.should_upgrade():
        return None
    if _NOT_A_PLAIN_PATH.search(url) is not None or not url.startswith(b"/"):
        return None
    try:
        path = url.decode("ascii")
    except UnicodeDecodeError:
        return None
    method = parser.get_method().decode("ascii")
    found = serving.fastpath.match(method, path)
    if found is None:
        return None
    headers = decode_headers(protocol.headers)
    if "transfer-encoding" in headers or serving.policy.refusal(path, headers) is not None:
        return None
    keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
    return FastPathExchange(protocol, serving, found[0], found[1], method, path, headers, keep_alive)


class FastPathExchange:
    """One fast-route request on one connection, from its parsed headers to its written answer.

    It stands in for uvicorn's `RequestResponseCycle` as the protocol's `cycle`, so it has the attributes the
    protocol's own callbacks use: `disconnected`, `response_complete`, `keep_alive` (cleared by a graceful
    shutdown) and `message_event.set()` (called when the connection is lost: here it cancels the request).
    """

    def __init__(
        self,
        protocol: FastPathProtocol,
        serving: FastPathServing,
        route: FastRoute,
        params: dict[str, str],
        method: str,
        path: str,
        headers: dict[str, str],
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.serving = serving
        self.route = route
        self.params = params
        self.method = method
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.default_headers = protocol.server_state.default_headers  # the Date header, as uvicorn sends
        self.started_at = time.perf_counter()
        self.chunks: list[bytes] = []
        self.disconnected = False
        self.response_complete = False
        self.task: asyncio.Task[None] | None = None

    @property
    def message_event(self) -> FastPathExchange:  # the protocol calls `cycle.message_event.set()`
        return self  # (a property, not an attribute: no reference cycle for the GC to find)

    def set(self) -> None:
        """The connection was lost: cancel the request, or record it if its body never arrived."""
        if not self.disconnected:
            return
        if self.task is not None:
            self.task.cancel()
        elif not self.response_complete:
            self.response_complete = True
            elapsed = time.perf_counter() - self.started_at
            self.serving.policy.record(
                self.method, self.route.template, self.path, CLIENT_GONE_STATUS, elapsed
            )

    def start(self) -> None:
        protocol = self.protocol
        context = contextvars.Context() if protocol.config.reset_contextvars else None  # as uvicorn does
        self.task = task = protocol.loop.create_task(self.run(), context=context)
        task.add_done_callback(protocol.tasks.discard)
        protocol.tasks.add(task)  # a graceful shutdown waits for it, as for uvicorn's own tasks

    async def run(self) -> None:
        serving, path = self.serving, self.path
        policy = serving.policy
        rid = policy.request_id(self.headers)
        token = request_id_var.set(rid)
        status = 500
        try:
            body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            request = RawRequest(path, self.params, self.headers, body)
            try:
                response = await serving.fastpath.respond(self.route, request)
            except asyncio.CancelledError:
                if self.disconnected:
                    status = CLIENT_GONE_STATUS
                    return
                # The server stopped waiting for it (the graceful shutdown's time ran out): say so and close.
                self.keep_alive = False
                closed = BatcherClosedError("the server is shutting down")
                status = self._write(raw_error_response(path, closed, policy.settings.retry_after_s), rid)
                raise
            except Exception:
                log.exception("unhandled error", extra={"path": path})
                response = _internal_error(path)
            status = self._write(response, rid)
        finally:
            elapsed = time.perf_counter() - self.started_at
            policy.record(self.method, self.route.template, path, status, elapsed)
            request_id_var.reset(token)
            self.task = None

    def _write(self, response: RawResponse, rid: str) -> int:
        """Send `response` (a JSON 500 instead if it cannot be rendered); its status."""
        protocol = self.protocol
        transport = protocol.transport
        if transport.is_closing():  # gone without a connection_lost callback yet
            self.response_complete = True
            return response.status
        try:
            data = self._render(response, rid)
        except Exception:
            log.exception("unrenderable response", extra={"path": self.path, "status": response.status})
            response = _internal_error(self.path)
            data = self._render(response, rid)
        transport.write(data)
        self.response_complete = True
        if not self.keep_alive:
            transport.close()
        protocol.on_response_complete()  # flushes; starts a pipelined request or arms the keep-alive timer
        return response.status

    def _render(self, response: RawResponse, rid: str) -> bytes:
        head = [STATUS_LINE[response.status]]
        for name, value in (*self.default_headers, *header_list(response), (b"x-request-id", rid.encode())):
            head += [name, b": ", value, b"\r\n"]
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head += [b"\r\n", response.body]
        return b"".join(head)


def _internal_error(path: str) -> RawResponse:
    """The JSON 500 the ASGI path's middleware answers an unexpected error with."""
    return RawResponse(INTERNAL.body(path), INTERNAL.status)
