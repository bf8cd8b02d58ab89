"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes a response's status line and headers when the app sends `http.response.start`, and the body
when it sends `http.response.body`: two `send` system calls and two TCP segments for every small JSON answer.
Here the connection's writes are held and go to the socket together (one `writelines`, a single `writev`)
the moment the response is complete; a response still streaming is written at the end of the current
event-loop iteration at the latest, so nothing waits for later data (measured, docs/benchmarks.md).

Use it with `uvicorn.Config(http=CoalescingHttpToolsProtocol)` (`python -m service` does) or
`uvicorn --http service.transport:CoalescingHttpToolsProtocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """Wraps a transport: `write`s within one loop iteration go out together; everything else passes through.

    Ordering is kept: a close, EOF or abort first sends (or, for abort, drops) what is pending.
    """

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

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

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, ...
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
