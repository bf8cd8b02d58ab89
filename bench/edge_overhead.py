"""CPU the edge guard (service/edge.py) adds per request, measured in isolation, side by side in one run.

    .venv/bin/python -m bench.edge_overhead            # 200k requests per protocol, 5 rounds

Both protocols parse the same keep-alive requests (a native /v1/retrieve POST of 21 body bytes) from the same
bytes with httptools; below them the request is dropped (no ASGI, no app), so the difference between the two
is the guard's own work: its `data_received` loop and its three parser callbacks. The end-to-end effect is in
`python -m bench.serving --parts overhead --baseline-tree ...` (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.edge import EdgeGuard

REQUEST = (
    b"POST /v1/retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 21\r\n\r\n{"sequence": "a1??a"}'
)


class _Sink(HttpToolsProtocol):
    """uvicorn's parser callbacks up to the point a request would start; then nothing."""

    def on_headers_complete(self) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass


class _Guarded(EdgeGuard, _Sink):
    pass


class _Transport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    pass


def per_request_us(kind: type[HttpToolsProtocol], n: int) -> float:
    loop = asyncio.new_event_loop()
    try:
        config = Config(_app, http="httptools", lifespan="off")
        protocol = kind(config, ServerState(), {}, _loop=loop)
        protocol.connection_made(_Transport())  # type: ignore[arg-type]
        start = time.process_time()
        for _ in range(n):
            protocol.data_received(REQUEST)
        elapsed = time.process_time() - start
        for handle in list(getattr(loop, "_scheduled", [])):
            handle.cancel()
        return elapsed / n * 1e6
    finally:
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    plain, guarded = [], []
    for _ in range(args.rounds):  # interleaved, so drifting load hits both alike
        plain.append(per_request_us(_Sink, args.requests))
        guarded.append(per_request_us(_Guarded, args.requests))
    p, g = statistics.median(plain), statistics.median(guarded)
    print(f"parse only (uvicorn callbacks): {p:.2f} µs/request  rounds {[round(x, 2) for x in plain]}")
    print(f"+ edge guard:                   {g:.2f} µs/request  rounds {[round(x, 2) for x in guarded]}")
    print(f"guard's own work: {g - p:+.2f} µs/request (CPU time, median of {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
