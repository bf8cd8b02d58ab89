"""Load for ModelStreamInfer: N bidirectional streams, one request in flight on each (the next is sent when
the answer comes), for a fixed time; prints one JSON line (requests, duration_s, p50_us, p99_us, errors).

    python -m bench.grpc_stream_load 127.0.0.1:8001 request.bin --clients 64 --duration 5

`request.bin` is a serialized ModelInferRequest. A Python client (grpc.aio, one process): h2load, which
drives the unary calls, cannot keep a stream open; so this client costs more CPU per request than h2load,
and what it shows best is the server's CPU per request, measured by the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import grpc

METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
STREAMS_PER_CONNECTION = 64


async def run(target: str, request: bytes, clients: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    # At most STREAMS_PER_CONNECTION streams on one connection: the server refuses streams beyond its
    # FWS_GRPC_MAX_CONCURRENT_STREAMS (128 by default) per connection.
    # (a local subchannel pool: channels to one target otherwise share one connection)
    local = [("grpc.use_local_subchannel_pool", 1)]
    n = -(-clients // STREAMS_PER_CONNECTION)
    channels = [grpc.aio.insecure_channel(target, options=local) for _ in range(n)]
    try:
        # Raw bytes both ways: the client spends nothing on protobuf; an error answer is told by its field 1.
        factories = [
            c.stream_stream(METHOD, request_serializer=None, response_deserializer=None) for c in channels
        ]
        start = time.perf_counter()
        stop = start + duration

        async def one_stream(i: int) -> None:
            nonlocal errors
            call = factories[i % len(factories)]()
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await call.write(request)
                answer = await call.read()
                if answer is grpc.aio.EOF:
                    errors += 1
                    return
                if answer[:1] == b"\x0a":  # error_message (field 1) set: a failed request
                    errors += 1
                latencies.append(time.perf_counter() - t0)
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass

        await asyncio.gather(*(one_stream(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        for channel in channels:
            await channel.close()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies) - errors,
        "duration_s": elapsed,
        "p50_us": q[49] * 1e6,
        "p99_us": q[98] * 1e6,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target")
    p.add_argument("request", type=Path)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.target, args.request.read_bytes(), args.clients, args.duration))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
