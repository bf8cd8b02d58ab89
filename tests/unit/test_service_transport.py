"""One socket write per response: the coalescing transport keeps order, holds nothing past an iteration."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn

from service.transport import CoalescingHttpToolsProtocol, CoalescingTransport


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, lines: list[bytes]) -> None:
        self.calls.append(("writelines", b"".join(lines)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def test_writes_of_one_iteration_leave_in_one_call_in_order() -> None:
    async def main() -> FakeTransport:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"")
        t.write(memoryview(b"body"))
        assert fake.calls == []  # held until the response completes or the iteration ends
        await asyncio.sleep(0)
        t.write(b"later")
        await asyncio.sleep(0)
        return fake

    fake = asyncio.run(main())
    assert fake.calls == [("writelines", b"HTTP/1.1 200 OK\r\n\r\nbody"), ("write", b"later")]


def test_flush_close_and_abort_keep_the_order_of_bytes() -> None:
    async def main() -> tuple[FakeTransport, FakeTransport]:
        loop = asyncio.get_running_loop()
        closed, aborted = FakeTransport(), FakeTransport()
        a = CoalescingTransport(closed, loop)
        a.write(b"one")
        a.flush()
        a.write(b"two")
        a.close()  # what is pending goes before the close
        b = CoalescingTransport(aborted, loop)
        b.write(b"dropped")
        b.abort()  # an abort drops it
        assert a.get_extra_info("peername") == "extra:peername"  # the rest passes through
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(main())
    assert closed.calls == [("write", b"one"), ("write", b"two"), ("close", b"")]
    assert aborted.calls == [("abort", b"")]


def test_is_closing_is_the_transports_own_method_found_in_the_instance() -> None:
    async def main() -> None:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())
        # asked several times per request: found without `__getattr__`, whose failed normal lookup first
        # builds and drops an AttributeError
        assert "is_closing" in vars(t)
        assert t.is_closing() is False
        fake.closing = True
        assert t.is_closing() is True

    asyncio.run(main())


async def _echo_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":  # a response in pieces, each sent in its own iteration
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    answer = scope["path"].encode() + b":" + body
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        _echo_app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_level="error"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        threading.Event().wait(0.025)
    assert srv.started
    yield port
    srv.should_exit = True
    thread.join(10)


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_real_uvicorn_answers_pipelined_requests_in_order_then_closes(server: int) -> None:
    requests = b"".join(
        f"POST /r{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{i}".encode() for i in range(5)
    )
    requests += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(requests)
        raw = _read_all(sock)  # ends only because the server closed after the last answer
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in raw.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert bodies == [b"/r0:0", b"/r1:1", b"/r2:2", b"/r3:3", b"/r4:4", b"/last:"]


def test_a_streamed_response_arrives_whole(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = _read_all(sock)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"
