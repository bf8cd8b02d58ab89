"""Fallback load generator (no wrk here): N concurrent keep-alive clients in one asyncio process.

    .venv/bin/python -m bench.loadgen URL --clients 64 --duration 5 --body '{"sequence": "a1??a"}' ...

Prints one JSON line: requests, duration_s, p50_us, p99_us, errors. Slower than wrk (Python), so at high
concurrency it measures itself as much as the server: bench.serving prefers wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx


async def _run(url: str, clients: int, duration: float, bodies: list[bytes]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def worker(i: int) -> None:
            nonlocal errors
            n = i
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    r = await client.post(url, content=bodies[n % len(bodies)], headers=headers)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok
                n += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6 if latencies else 0.0

    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "p50_us": pct(0.5),
        "p99_us": pct(0.99),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("url")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--body", action="append", required=True)
    args = p.parse_args(argv)
    result = asyncio.run(_run(args.url, args.clients, args.duration, [b.encode() for b in args.body]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
