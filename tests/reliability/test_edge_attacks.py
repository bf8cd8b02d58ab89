"""Attacks on the HTTP edge, each against a real server, each with a bounded outcome (docs/reliability.md).

Every attack runs against `python -m service` twice: with the protocol serving the fast routes itself and with
`FWS_FAST_PATH=false` (everything through ASGI). The server runs with short timeouts (below) so the suite
stays fast; the outcome asserted is the status, the socket closed within the timeout, and the growth of the
server's resident memory (VmRSS from /proc/<pid>/status).
"""

from __future__ import annotations

import contextlib
import gzip
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.server import Server, start_server

TIMEOUT_S = 1.0  # header, body and idle timeouts of the servers here
SEND_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 40
BODY_BUDGET = 3 * 1024 * 1024  # request-body bytes all connections may hold while the bodies arrive
SLACK_S = 1.5  # a deadline fires within one sweep interval (TIMEOUT_S / 4) of it; the rest is a loaded CI box
RSS_BOUND_MB = 150
KEY = "edge-key"
EDGE_ENV = {
    "FWS_HEADER_TIMEOUT_S": str(TIMEOUT_S),
    "FWS_BODY_TIMEOUT_S": str(TIMEOUT_S),
    "FWS_IDLE_TIMEOUT_S": str(TIMEOUT_S),
    "FWS_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
    "FWS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "FWS_BODY_BUDGET_BYTES": str(BODY_BUDGET),
    "FWS_API_KEY": KEY,
    "FWS_LOG_LEVEL": "warning",
}
AUTH = {"Authorization": f"Bearer {KEY}"}
AUTH_LINE = f"Authorization: Bearer {KEY}\r\n"
INFER = "/v2/models/fastweights_t5/infer"
TOKENS = {"name": "tokens", "datatype": "INT64", "shape": [1, 5], "data": [0, 1, 28, 37, 1]}


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "asgi"])
def server(request: pytest.FixtureRequest, model_repository: Path) -> Iterator[Server]:
    env = {**EDGE_ENV, "FWS_FAST_PATH": "true" if request.param else "false"}
    with start_server(env, repository=model_repository) as srv:
        yield srv


def rss_mb(server: Server) -> float:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(server: Server, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting: it sets the TCP window the server may fill
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or resets) the connection; the seconds that took."""
    start = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"still open after {limit_s}s; got {data[:200]!r}") from None
            if not chunk:
                break
            data += chunk
    return data, time.monotonic() - start


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def assert_healthy(server: Server) -> None:
    """A fresh connection gets its health answer quickly, and the server is still the same process."""
    assert server.alive()
    start = time.monotonic()
    r = httpx.get(server.url + "/v2/health/ready", timeout=5)
    assert r.status_code == 200 and time.monotonic() - start < 2.0


def answered(sock: socket.socket) -> bool:
    """Whether the server has sent something (or closed) on `sock`."""
    return bool(select.select([sock], [], [], 0)[0])


def send_all(sock: socket.socket, data: bytes) -> bool:
    """Send as much of `data` as the server takes; False once it closed the connection."""
    try:
        sock.sendall(data)
    except OSError:  # reset or broken pipe: the server hung up (what the limits do)
        return False
    return True


# ------------------------------------------------------------------------------------------ head limits


def test_a_header_flood_gets_431_and_a_closed_socket_and_memory_stays_flat(server: Server) -> None:
    before = rss_mb(server)
    sock = connect(server)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    line = b"X-A: " + b"a" * 8000 + b"\r\n"
    sent, deadline = 0, time.monotonic() + 2.0
    # Header lines until the server answers (or 2 s): it must answer long before that.
    while time.monotonic() < deadline and not answered(sock) and send_all(sock, line):
        sent += len(line)
    answer, _ = read_until_closed(sock, 5)
    sock.close()
    print(f"header flood: {sent} bytes sent before the 431, RSS +{rss_mb(server) - before:.1f} MB")
    assert status_of(answer) == 431, answer
    # (what the kernel's socket buffers take on loopback, up to tcp_wmem + tcp_rmem, counts as sent)
    assert sent < 64 * 1024 * 1024, f"{sent} bytes of headers sent before the server answered"
    assert rss_mb(server) - before < RSS_BOUND_MB
    assert_healthy(server)


def test_one_ten_megabyte_header_line_gets_431(server: Server) -> None:
    sock = connect(server)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent, piece = 0, b"b" * 65536
    while sent < 10 * 1024 * 1024 and not answered(sock) and send_all(sock, piece):
        sent += len(piece)
    answer, _ = read_until_closed(sock, 5)
    sock.close()
    assert status_of(answer) == 431
    assert b'{"error":' in answer


def test_too_many_headers_get_431(server: Server) -> None:
    sock = connect(server)
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    answer, _ = read_until_closed(sock, 5)
    assert status_of(answer) == 431 and b"too many request headers" in answer


def test_a_request_within_the_limits_is_served_as_before(server: Server) -> None:
    headers = {**AUTH, **{f"X-Ok-{i}": "v" * 200 for i in range(50)}}  # 50 headers, ~12 KB
    r = httpx.post(server.url + INFER, json={"inputs": [TOKENS]}, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["name"] in ("logits", "memory_attention")


# ------------------------------------------------------------------------------------------ timeouts


def test_a_connection_that_never_sends_a_request_is_closed_after_the_idle_timeout(server: Server) -> None:
    sock = connect(server)
    answer, waited = read_until_closed(sock, TIMEOUT_S + SLACK_S + 2)
    assert answer == b"" and TIMEOUT_S * 0.9 <= waited <= TIMEOUT_S + SLACK_S


def test_a_head_sent_slowly_gets_408_after_the_header_timeout(server: Server) -> None:
    sock = connect(server)
    start = time.monotonic()
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    while time.monotonic() - start < TIMEOUT_S * 0.6:  # a header byte every 0.1 s (slowloris) ...
        sock.sendall(b"X")
        time.sleep(0.1)
    # ... then nothing (bytes sent after the server closed would make it reset, losing its answer)
    answer, _ = read_until_closed(sock, TIMEOUT_S + SLACK_S + 2)
    waited = time.monotonic() - start
    assert status_of(answer) == 408, answer
    assert TIMEOUT_S * 0.9 <= waited <= TIMEOUT_S + SLACK_S


@pytest.mark.parametrize("path", [INFER, "/v1/retrieve"])
def test_a_body_shorter_than_its_content_length_gets_408_after_the_body_timeout(
    server: Server, path: str
) -> None:
    sock = connect(server)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    sock.sendall(head.encode() + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    answer, waited = read_until_closed(sock, TIMEOUT_S + SLACK_S + 2)
    assert status_of(answer) == 408, answer
    assert waited <= TIMEOUT_S + SLACK_S


def test_a_half_sent_body_does_not_hold_a_sigterm_exit(model_repository: Path) -> None:
    env = {**EDGE_ENV, "FWS_BODY_TIMEOUT_S": "60", "FWS_DRAIN_TIMEOUT_S": "30"}
    with start_server(env, repository=model_repository) as srv:
        sock = connect(srv)
        sock.sendall(b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.3)
        start = time.monotonic()
        assert srv.stop(timeout=20) == 0
        assert time.monotonic() - start < 10
        sock.close()


# ------------------------------------------------------------------------------------------ connections


def test_beyond_max_connections_idle_ones_make_room_and_busy_ones_get_503(server: Server) -> None:
    idlers = [connect(server) for _ in range(MAX_CONNECTIONS + 10)]
    assert_healthy(server)  # the oldest idle connections were closed to let it in
    closed = 0
    for sock in idlers:
        sock.settimeout(0.05)
        try:
            closed += sock.recv(1) == b""
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed += 1
        sock.close()
    assert closed >= 10
    # Now every slot holds a request whose body is still arriving: nothing to evict, a newcomer gets 503.
    time.sleep(0.3)
    busy = [connect(server) for _ in range(MAX_CONNECTIONS)]
    for sock in busy:
        sock.sendall(b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(0.3)
    newcomer = connect(server)
    answer, waited = read_until_closed(newcomer, 3)
    assert status_of(answer) == 503 and waited < 1
    for sock in busy:
        sock.close()
    time.sleep(0.3)
    assert_healthy(server)


UPLOAD_HEAD = f"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\n{AUTH_LINE}Content-Length: 1048576\r\n\r\n".encode()


def test_bodies_arriving_at_once_are_capped_by_the_server_wide_budget(server: Server) -> None:
    uploads = []
    for _ in range(3):  # 3 x 0.9 MiB arriving, each declared as 1 MiB: within the 3 MiB budget
        sock = connect(server)
        sock.sendall(UPLOAD_HEAD)
        sock.sendall(b"{" + b" " * (900 * 1024))
        uploads.append(sock)
    time.sleep(0.3)
    for sock in uploads:  # all still open, waiting for the rest of their bodies
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    fourth = connect(server)
    fourth.sendall(UPLOAD_HEAD)
    send_all(fourth, b"{" + b" " * (900 * 1024))
    answer, _ = read_until_closed(fourth, 5)
    assert status_of(answer) == 503 and b"too many request bodies" in answer
    for sock in uploads:
        sock.close()
    time.sleep(0.3)  # closed connections give their bytes back
    r = httpx.post(server.url + "/v1/retrieve", json={"sequence": "a1??a"}, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------ not reading


def test_three_pipelining_clients_that_never_read_keep_memory_bounded(server: Server) -> None:
    before = rss_mb(server)
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    socks = [connect(server, rcvbuf=4096) for _ in range(3)]
    for sock in socks:
        sock.setblocking(False)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for sock in socks:
            with contextlib.suppress(BlockingIOError, ConnectionError):
                sock.send(request)
        time.sleep(0.002)
    growth = rss_mb(server) - before
    assert_healthy(server)
    for sock in socks:
        sock.close()
    print(f"three pipelining non-readers: RSS +{growth:.1f} MB")
    assert growth < RSS_BOUND_MB, f"RSS grew {growth:.0f} MB"


def test_a_client_that_does_not_read_its_answers_is_cut_off_after_the_send_timeout(server: Server) -> None:
    # One request at a time (no deep pipeline), each answered with ~34 KB of OpenAPI, never read. The
    # kernel takes the first ~4 MB (socket buffers on loopback); then the server's own buffer passes its
    # high-water mark, it stops reading, and after the send timeout it cuts the client off.
    sock = connect(server, rcvbuf=4096)
    limit_s = 10.0 + SEND_TIMEOUT_S + SLACK_S  # (filling the kernel's buffers takes ~1-4 s here)
    sock.settimeout(limit_s)  # a send that blocks (the server stopped reading) waits for the cut-off
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    start = time.monotonic()
    sent, gone = 0, False
    while not gone and time.monotonic() - start < limit_s:
        gone = not send_all(sock, request)  # fails once the server has reset the connection
        sent += not gone
        time.sleep(0.004)
    waited = time.monotonic() - start
    sock.close()
    # (On a loaded machine the server may fall behind and find more than FWS_MAX_PIPELINED requests waiting:
    # then the pipeline limit cuts it off first. Either way the client that does not read is gone.)
    assert gone, f"still open after {waited:.1f}s and {sent} requests"
    assert_healthy(server)


def test_every_attack_at_once_leaves_memory_bounded_and_health_answered(server: Server) -> None:
    before = rss_mb(server)
    stop = time.monotonic() + 2.5
    results: list[str] = []

    def flood() -> None:
        while time.monotonic() < stop:
            sock = connect(server)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < stop and send_all(sock, b"X-A: " + b"a" * 8000 + b"\r\n"):
                pass
            sock.close()
        results.append("flood")

    def pipeline() -> None:
        sock = connect(server, rcvbuf=4096)
        sock.setblocking(False)
        while time.monotonic() < stop:
            with contextlib.suppress(BlockingIOError, ConnectionError):
                sock.send(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 500)
            time.sleep(0.002)
        sock.close()
        results.append("pipeline")

    def slow() -> None:
        socks = []
        for _ in range(MAX_CONNECTIONS // 2):
            sock = connect(server)
            send_all(sock, b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 10")
            socks.append(sock)
        while time.monotonic() < stop:
            time.sleep(0.1)
        for sock in socks:
            sock.close()
        results.append("slow")

    threads = [
        threading.Thread(target=f, daemon=True) for f in (flood, flood, pipeline, pipeline, pipeline, slow)
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert_healthy(server)
    for t in threads:
        t.join(10)
    assert sorted(results) == ["flood", "flood", "pipeline", "pipeline", "pipeline", "slow"]
    print(f"every attack at once: RSS +{rss_mb(server) - before:.1f} MB")
    assert rss_mb(server) - before < RSS_BOUND_MB
    assert_healthy(server)


# ---------------------------------------------------------------------------------------- V2 and HTTP details


def v2(server: Server, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        server.url + INFER,
        content=body,
        headers={**AUTH, "Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


def test_duplicate_output_names_get_400_at_once(server: Server) -> None:
    rows = {"name": "tokens", "datatype": "INT64", "shape": [256, 5], "data": [0, 1, 28, 37, 1] * 256}
    body = orjson.dumps({"inputs": [rows], "outputs": [{"name": "logits"}] * 78000})
    before = rss_mb(server)
    start = time.monotonic()
    r = v2(server, body)
    assert r.status_code == 400 and "appears more than once" in r.json()["error"]
    assert time.monotonic() - start < 2 and rss_mb(server) - before < 50


def test_a_duplicate_input_name_gets_400(server: Server) -> None:
    r = v2(server, orjson.dumps({"inputs": [TOKENS, TOKENS]}))
    assert r.status_code == 400 and "appears more than once" in r.json()["error"]


@pytest.mark.parametrize(
    "shape", [[0, 4611686018427387904, 4], [0] * 65, [0, 2**62, 2**62], [2**40, 0]], ids=str
)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_shapes_numpy_cannot_build_get_400(server: Server, shape: list[int], binary: bool) -> None:
    tensor: dict[str, object] = {"name": "tokens", "datatype": "INT64", "shape": shape}
    if binary:
        tensor["parameters"] = {"binary_data_size": 0}
        header = orjson.dumps({"inputs": [tensor]})
        r = v2(server, header, {"Inference-Header-Content-Length": str(len(header))})
    else:
        tensor["data"] = []
        r = v2(server, orjson.dumps({"inputs": [tensor]}))
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and len(r.text) < 1000


def test_a_megabyte_input_name_is_not_echoed_in_full(server: Server) -> None:
    name = "n" * (1024 * 1024)
    r = v2(server, orjson.dumps({"inputs": [{**TOKENS, "name": name}]}))
    assert r.status_code == 400 and len(r.content) < 1000, len(r.content)
    r = v2(server, orjson.dumps({"inputs": [TOKENS], "outputs": [{"name": name}]}))
    assert r.status_code == 400 and len(r.content) < 1000
    r = httpx.post(
        server.url + "/v1/retrieve", json={"sequence": "a1??a", "model": name}, headers=AUTH, timeout=30
    )
    assert r.status_code == 404 and len(r.content) < 1000, len(r.content)
    r = httpx.post(server.url + "/v1/retrieve", json={"sequence": "a1??a", name: 1}, headers=AUTH, timeout=30)
    assert r.status_code == 422 and len(r.content) < 1000, len(r.content)


@pytest.mark.parametrize(
    "tail", [b"junk", gzip.compress(b'{"inputs": []}')], ids=["trailing-junk", "second-member"]
)
def test_gzip_with_anything_after_the_first_member_gets_400(server: Server, tail: bytes) -> None:
    body = gzip.compress(orjson.dumps({"inputs": [TOKENS]})) + tail
    r = v2(server, body, {"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "after the end of the gzip data" in r.json()["error"]
    assert v2(server, body[: -len(tail)], {"Content-Encoding": "gzip"}).status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(server: Server, scheme: str) -> None:
    r = v2(server, orjson.dumps({"inputs": [TOKENS]}), {"Authorization": f"{scheme} {KEY}"})
    assert r.status_code == 200, r.text
    r = v2(server, orjson.dumps({"inputs": [TOKENS]}), {"Authorization": f"{scheme} {KEY}x"})
    assert r.status_code == 401


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_head_is_allowed_on_health_routes(server: Server, path: str) -> None:
    r = httpx.head(server.url + path, timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "application/json"
