"""Run the edge attacks of docs/reliability.md against a fresh `python -m service` and print each outcome.

    .venv/bin/python scripts/edge_attacks.py                     # this tree, default settings
    .venv/bin/python scripts/edge_attacks.py --tree /path/to/old/checkout   # before a change
    .venv/bin/python scripts/edge_attacks.py FWS_FAST_PATH=false

Only 127.0.0.1, bounded in time (about a minute: the default timeouts are waited out). The figures go to
docs/reliability.md; tests/reliability/test_edge_attacks.py asserts the same outcomes with short timeouts.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_line(sock: socket.socket, limit_s: float) -> tuple[str, float]:
    """The server's first answer line (or how the connection ended) and the seconds it took."""
    start = time.monotonic()
    sock.settimeout(limit_s)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return f"still open after {limit_s:.0f} s", time.monotonic() - start
    except ConnectionResetError:
        return "reset", time.monotonic() - start
    line = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed, no answer"
    return line, time.monotonic() - start


def header_flood(port: int, pid: int, seconds: float) -> str:
    before = rss_mb(pid)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    line = b"X-A: " + b"a" * 8000 + b"\r\n"
    sent, start = 0, time.monotonic()
    with contextlib.suppress(OSError):  # header lines until the server answers (or `seconds` pass)
        while time.monotonic() - start < seconds and not select.select([sock], [], [], 0)[0]:
            sock.sendall(line)
            sent += len(line)
    took = time.monotonic() - start
    answer, _ = first_line(sock, 2)
    sock.close()
    growth = rss_mb(pid) - before
    return f"{sent / 1024:.0f} KiB sent in {took:.1f} s; answer: {answer}; RSS +{growth:.0f} MB"


def pipeliners(port: int, pid: int, seconds: float) -> str:
    before = rss_mb(pid)
    socks = []
    for _ in range(3):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for sock in socks:
            with contextlib.suppress(BlockingIOError, ConnectionError):
                sent += sock.send(request)
        time.sleep(0.002)
    growth = rss_mb(pid) - before
    for sock in socks:
        sock.close()
    return f"{sent / 1e6:.1f} MB of requests taken; RSS +{growth:.0f} MB"


def timed(port: int, payload: bytes, limit_s: float) -> str:
    sock = socket.create_connection(("127.0.0.1", port))
    if payload:
        sock.sendall(payload)
    answer, took = first_line(sock, limit_s)
    sock.close()
    return f"{answer} after {took:.1f} s"


def v2(port: int, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, int, float]:
    import httpx

    start = time.monotonic()
    r = httpx.post(
        f"http://127.0.0.1:{port}/v2/models/fastweights_t5/infer",
        content=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=60,
    )
    return r.status_code, len(r.content), time.monotonic() - start


def v2_cases(port: int, pid: int) -> list[tuple[str, str]]:
    import orjson

    tokens = {"name": "tokens", "datatype": "INT64", "shape": [256, 5], "data": [0, 1, 28, 37, 1] * 256}
    out: list[tuple[str, str]] = []
    before = rss_mb(pid)
    status, size, took = v2(port, orjson.dumps({"inputs": [tokens], "outputs": [{"name": "logits"}] * 78000}))
    out.append(
        (
            "V2 78000 duplicate outputs",
            f"{status}, {size} B in {took:.2f} s, RSS +{rss_mb(pid) - before:.0f} MB",
        )
    )
    for shape in ([0, 4611686018427387904, 4], [0] * 65):
        status, size, _ = v2(port, orjson.dumps({"inputs": [{**tokens, "shape": shape, "data": []}]}))
        out.append((f"V2 shape {str(shape)[:30]} (JSON)", f"{status}"))
    name = "n" * (1024 * 1024)
    status, size, _ = v2(port, orjson.dumps({"inputs": [{**tokens, "name": name}]}))
    out.append(("V2 1 MB input name", f"{status}, error body {size} B"))
    body = gzip.compress(orjson.dumps({"inputs": [tokens]})) + b"junk"
    status, _, _ = v2(port, body, {"Content-Encoding": "gzip"})
    out.append(("V2 gzip + trailing junk", f"{status}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--flood-s", type=float, default=3.0)
    parser.add_argument("--wait-s", type=float, default=40.0, help="longest wait for a timeout to fire")
    parser.add_argument("env", nargs="*", help="FWS_X=value settings for the server")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    from tests.integration.server import start_server

    env = dict(item.split("=", 1) for item in args.env)
    results: list[tuple[str, str]] = []
    # The two memory attacks each get a fresh server: RSS is a high-water mark, one would hide the other.
    for what, attack in (("header flood", header_flood), ("3 pipelining non-readers", pipeliners)):
        with start_server(env) as server:
            results.append((what, attack(server.port, server.pid, args.flood_s)))
    with start_server(env) as server:
        port, pid = server.port, server.pid
        print(f"server {args.tree} {env}: RSS {rss_mb(pid):.0f} MB at start", flush=True)
        slow: dict[str, str] = {}
        payloads: dict[str, Any] = {
            "idle connection": b"",
            "partial head": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n",
            "short body": b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        }
        threads = [
            threading.Thread(target=lambda k=k, p=p: slow.__setitem__(k, timed(port, p, args.wait_s)))
            for k, p in payloads.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results += [(k, slow[k]) for k in payloads]
        results += v2_cases(port, pid)
        results.append(("RSS at the end", f"{rss_mb(pid):.0f} MB"))
    for what, outcome in results:
        print(f"{what:32s} {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
