"""The HTTP protocol serving the fast routes itself (`ServiceHttpProtocol`) answers exactly as the ASGI path.

Real uvicorn servers on 127.0.0.1 (in threads, the real app on the bundled model repository, real
onnxruntime sessions): one runs `ServiceHttpProtocol`, one the plain coalescing protocol, so every request
of the second goes through ASGI. Each case is sent to both; a spy counts the requests the protocol served
itself, so a case that silently fell back to ASGI cannot pass as covered. Raw sockets check the HTTP
details the protocol now owns: pipelining, keep-alive and close, HTTP/1.0, the cases that must go the ASGI
way (Expect: 100-continue, chunked bodies, query strings, over-limit bodies, a missing API key), request
ids, a client that leaves, an unexpected error, and a graceful shutdown with a request in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.config import Settings
from service.main import create_app
from service.transport import CoalescingHttpToolsProtocol, FastPathExchange, ServiceHttpProtocol
from tests.unit.test_service_fastpath import CASES, j

RETRIEVE = b'{"sequence": "c9k8j3f1??c"}'


class Served:
    def __init__(self, server: uvicorn.Server, port: int) -> None:
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def serve(settings: Settings, protocol: type, **options: object) -> Iterator[Served]:
    """A real uvicorn in a thread, with the real app and lifespan (models loaded before it accepts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        http=protocol,
        log_level="error",
        lifespan="on",
        **options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield Served(server, port)
    finally:
        server.should_exit = True
        thread.join(30)


class Spy:
    """Counts the requests the protocol served itself (FastPathExchange.start calls)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def patch(self, mp: pytest.MonkeyPatch) -> None:
        original = FastPathExchange.start

        def start(exchange: FastPathExchange) -> None:
            with self._lock:
                self.count += 1
            original(exchange)

        mp.setattr(FastPathExchange, "start", start)


@pytest.fixture(scope="module")
def spy() -> Iterator[Spy]:
    spy = Spy()
    with pytest.MonkeyPatch.context() as mp:
        spy.patch(mp)
        yield spy


@pytest.fixture(scope="module")
def servers(model_repository: Path, spy: Spy) -> Iterator[dict[str, Served]]:
    settings = Settings(model_repository=model_repository, log_level="warning")
    with serve(settings, ServiceHttpProtocol) as proto, serve(settings, CoalescingHttpToolsProtocol) as asgi:
        yield {"protocol": proto, "asgi": asgi}


@pytest.mark.parametrize(("name", "path", "body", "headers"), CASES, ids=[c[0] for c in CASES])
def test_the_protocol_answers_exactly_as_the_asgi_path(
    servers: dict[str, Served], spy: Spy, name: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    before = spy.count
    proto = httpx.post(servers["protocol"].url + path, content=body, headers=headers, timeout=10)
    assert spy.count == before + 1, "the protocol did not serve this fast-path request itself"
    asgi = httpx.post(servers["asgi"].url + path, content=body, headers=headers, timeout=10)
    assert spy.count == before + 1
    assert proto.status_code == asgi.status_code, (proto.text, asgi.text)
    assert proto.content == asgi.content
    for header in ("content-type", "content-length", "retry-after", "content-encoding"):
        assert proto.headers.get(header) == asgi.headers.get(header), header
    assert proto.headers.get("inference-header-content-length") == asgi.headers.get(
        "inference-header-content-length"
    )
    assert "date" in proto.headers and len(proto.headers["x-request-id"]) == 32
    assert proto.status_code < 500


def _exchange(port: int, raw: bytes, until_closed: bool = True, sock: socket.socket | None = None) -> bytes:
    """Send `raw` on a new connection (or on `sock`) and read until the server closes (or one answer)."""
    with contextlib.ExitStack() as stack:
        if sock is None:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        sock.sendall(raw)
        sock.settimeout(10)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
            if not until_closed and b"\r\n\r\n" in out:
                head, body = out.split(b"\r\n\r\n", 1)
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))[15:]
                )
                if len(body) >= length:
                    break
        return out


def post(path: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _responses(raw: bytes) -> list[tuple[int, bytes, bytes]]:
    """(status, head, body) of each response in a raw stream of content-length framed responses."""
    out = []
    while raw:
        head, rest = raw.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = next(int(v[15:]) for v in lines if v.lower().startswith(b"content-length:"))
        out.append((int(lines[0].split()[1]), head.lower(), rest[:length]))
        raw = rest[length:]
    return out


def test_pipelined_requests_are_answered_in_order_hot_or_not(servers: dict[str, Served], spy: Spy) -> None:
    before = spy.count
    raw = b"".join(
        [
            post("/v1/retrieve", b'{"sequence": "a1??a"}'),
            post("/v1/retrieve", b'{"sequence": "a1b2??b"}'),
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
            post("/v1/retrieve", b'{"sequence": "a1b2c3??c"}', "Connection: close\r\n"),
        ]
    )
    answers = _responses(_exchange(servers["protocol"].port, raw))  # ends: the server closed after the last
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    assert [a[2][:12] for a in answers[:2]] + [answers[3][2][:12]] == [
        b'{"value":"1"',
        b'{"value":"2"',
        b'{"value":"3"',
    ]
    assert b"live" in answers[2][2]
    assert b"connection: close" in answers[3][1] and b"connection: close" not in answers[0][1]
    assert spy.count > before  # the first at least went the protocol's way (the rest may queue behind it)


def test_keep_alive_serves_many_requests_on_one_connection(servers: dict[str, Served], spy: Spy) -> None:
    before = spy.count
    with httpx.Client(base_url=servers["protocol"].url, timeout=10) as client:
        for i in range(20):
            r = client.post("/v1/retrieve", json={"sequence": f"a{i % 10}??a"})
            assert r.json()["value"] == str(i % 10)
    assert spy.count == before + 20


def test_http_1_0_gets_its_answer_and_the_connection_closes(servers: dict[str, Served], spy: Spy) -> None:
    before = spy.count
    answers = _responses(_exchange(servers["protocol"].port, post("/v1/retrieve", RETRIEVE, version="1.0")))
    assert answers[0][0] == 200 and answers[0][2].startswith(b'{"value":"9"')
    assert b"connection: close" in answers[0][1]
    assert spy.count == before + 1


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        (
            "expect 100-continue",
            post("/v1/retrieve", RETRIEVE, "Expect: 100-continue\r\nConnection: close\r\n"),
        ),
        ("query string", post("/v1/retrieve?debug=1", RETRIEVE, "Connection: close\r\n")),
        ("escaped path", post("/v1/retriev%65", RETRIEVE, "Connection: close\r\n")),
        (
            "chunked body",
            b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n"
            + RETRIEVE[:16]
            + b"\r\nb\r\n"
            + RETRIEVE[16:]
            + b"\r\n0\r\n\r\n",
        ),
    ],
)
def test_unusual_requests_go_the_asgi_way_and_are_answered_the_same(
    servers: dict[str, Served], spy: Spy, name: str, raw: bytes
) -> None:
    before = spy.count
    proto = _exchange(servers["protocol"].port, raw)
    asgi = _exchange(servers["asgi"].port, raw)
    assert spy.count == before
    bodies = [r.split(b"\r\n\r\n")[-1] for r in (proto, asgi)]
    assert bodies[0] == bodies[1]
    assert b'{"value":"9"' in proto and b"HTTP/1.1 200 OK" in proto


def test_an_over_limit_body_is_refused_before_it_is_read(servers: dict[str, Served], spy: Spy) -> None:
    before = spy.count
    raw = b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"
    answers = _responses(_exchange(servers["protocol"].port, raw, until_closed=False))
    assert answers[0][0] == 413 and b"body_too_large" in answers[0][2]
    assert spy.count == before


def test_request_ids_are_echoed_when_sane_and_generated_otherwise(servers: dict[str, Served]) -> None:
    url = servers["protocol"].url + "/v1/retrieve"
    sane = httpx.post(url, content=RETRIEVE, headers={"x-request-id": "abc-123", **JSON_HEADERS})
    assert sane.headers["x-request-id"] == "abc-123"
    odd = httpx.post(url, content=RETRIEVE, headers={"x-request-id": "no spaces allowed", **JSON_HEADERS})
    assert odd.headers["x-request-id"] != "no spaces allowed" and len(odd.headers["x-request-id"]) == 32


JSON_HEADERS = {"content-type": "application/json"}


def test_hot_requests_are_counted_by_route_template_and_status(servers: dict[str, Served]) -> None:
    url = servers["protocol"].url
    httpx.post(url + "/v2/models/fastweights_t11/infer", content=j({"inputs": []}), headers=JSON_HEADERS)
    text = httpx.get(url + "/metrics").text
    assert 'fws_http_requests_total{method="POST",route="/v1/retrieve",status="200"}' in text
    assert 'fws_http_requests_total{method="POST",route="/v2/models/{name}/infer",status="400"}' in text
    assert 'route="unmatched"' not in text


@pytest.fixture(scope="module")
def slow(model_repository: Path, spy: Spy) -> Iterator[Served]:
    settings = Settings(
        model_repository=model_repository,
        log_level="warning",
        api_key="sesame",
        simulated_run_delay_ms=400,
        max_batch_size=1,
    )
    with serve(settings, ServiceHttpProtocol) as served:
        yield served


AUTH = "Authorization: Bearer sesame\r\n"


def test_a_missing_api_key_is_refused_and_a_good_one_served_by_the_protocol(slow: Served, spy: Spy) -> None:
    before = spy.count
    refused = _responses(_exchange(slow.port, post("/v1/retrieve", RETRIEVE, "Connection: close\r\n")))
    assert refused[0][0] == 401 and b"www-authenticate: bearer" in refused[0][1]
    assert spy.count == before
    served = _responses(_exchange(slow.port, post("/v1/retrieve", RETRIEVE, AUTH + "Connection: close\r\n")))
    assert served[0][0] == 200
    assert spy.count == before + 1


def _counter(url: str, line_start: str) -> float:
    for line in httpx.get(url + "/metrics", headers={"authorization": "Bearer sesame"}).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_leaves_cancels_its_request_at_once(slow: Served) -> None:
    gone = 'fws_http_requests_total{method="POST",route="/v1/retrieve",status="499"}'
    before = _counter(slow.url, gone)
    with socket.create_connection(("127.0.0.1", slow.port)) as sock:
        sock.sendall(post("/v1/retrieve", RETRIEVE, AUTH))
        time.sleep(0.05)  # in its 400 ms run now
    left = time.monotonic()
    while _counter(slow.url, gone) == before:
        assert time.monotonic() - left < 5, "the abandoned request was not recorded as 499"
        time.sleep(0.02)


def test_an_unexpected_error_is_a_json_500_and_the_server_keeps_serving(
    servers: dict[str, Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.routes import native

    async def explode(*args: object) -> dict[str, object]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(native, "handle_retrieve", explode)
    url = servers["protocol"].url
    r = httpx.post(url + "/v1/retrieve", content=RETRIEVE, headers=JSON_HEADERS)
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal", "message": "internal server error", "field": None}}
    assert "secret" not in r.text
    monkeypatch.undo()
    assert httpx.post(url + "/v1/retrieve", content=RETRIEVE, headers=JSON_HEADERS).status_code == 200


def test_a_graceful_shutdown_finishes_the_request_in_flight_then_closes(model_repository: Path) -> None:
    settings = Settings(model_repository=model_repository, log_level="warning", simulated_run_delay_ms=300)
    with serve(settings, ServiceHttpProtocol) as served:

        async def main() -> httpx.Response:
            async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
                pending = asyncio.ensure_future(
                    client.post("/v1/retrieve", content=RETRIEVE, headers=JSON_HEADERS)
                )
                await asyncio.sleep(0.1)  # in its run now
                served.server.should_exit = True
                return await pending

        r = asyncio.run(main())
    assert r.status_code == 200 and r.json()["value"] == "9"
    assert r.headers["connection"] == "close"


def test_a_client_that_does_not_read_its_answers_cannot_grow_the_server_buffer(
    servers: dict[str, Served],
) -> None:
    """One request at a time, each sent once the last was answered, and never a byte read: once the socket's
    buffers are full, the next request goes the ASGI way, which waits for the client to read."""
    served = servers["protocol"]
    state = served.server.server_state
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", served.port))
        deadline = time.monotonic() + 5
        while not (mine := [c for c in list(state.connections) if c.client == sock.getsockname()]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (conn,) = mine
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        request = post("/v1/retrieve", RETRIEVE)
        answered = 0
        for _ in range(3000):
            before = state.total_requests
            sock.sendall(request)
            deadline = time.monotonic() + 0.5
            while state.total_requests == before and time.monotonic() < deadline:
                time.sleep(0.0005)
            if state.total_requests == before:
                break  # the server waits for us to read
            answered += 1
        buffered = conn.transport.get_write_buffer_size()
    assert answered < 3000
    assert buffered <= 128 * 1024, buffered


@pytest.mark.parametrize("path", ["protocol", "asgi"])
def test_a_client_gone_before_its_body_arrived_is_recorded_as_499(
    servers: dict[str, Served], path: str
) -> None:
    url = servers[path].url
    gone = 'fws_http_requests_total{method="POST",route="/v1/retrieve",status="499"}'
    failed = 'fws_http_requests_total{method="POST",route="/v1/retrieve",status="500"}'
    before, before_failed = _counter(url, gone), _counter(url, failed)
    with socket.create_connection(("127.0.0.1", servers[path].port)) as sock:
        sock.sendall(post("/v1/retrieve", RETRIEVE)[:-5])  # the body's last 5 bytes never come
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while _counter(url, gone) == before:
        assert time.monotonic() < deadline, "the request whose body never arrived was not recorded as 499"
        time.sleep(0.02)
    assert _counter(url, failed) == before_failed


def test_a_request_still_running_when_the_graceful_shutdown_ends_is_told_so(model_repository: Path) -> None:
    settings = Settings(model_repository=model_repository, log_level="critical", simulated_run_delay_ms=2000)
    with (
        serve(settings, ServiceHttpProtocol, timeout_graceful_shutdown=1) as served,
        socket.create_connection(("127.0.0.1", served.port)) as sock,
    ):
        sock.sendall(post("/v1/retrieve", RETRIEVE))
        time.sleep(0.2)  # in its 2 s run now
        served.server.should_exit = True
        answers = _responses(_exchange(served.port, b"", sock=sock))
    assert answers[0][0] == 503
    assert b'"shutting_down"' in answers[0][2]
    assert b"connection: close" in answers[0][1] and b"retry-after: 1" in answers[0][1]
