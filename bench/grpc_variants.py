"""gRPC server variants side by side (issue 19): unary calls at one concurrency, servers started together.

    flock /tmp/bench.lock .venv/bin/python -m bench.grpc_variants base: "delay2:FWS_MAX_QUEUE_DELAY_MS=2"
    .venv/bin/python -m bench.grpc_variants base: "poll:GRPC_POLL_STRATEGY=poll" \
        --method grpc.health.v1.Health/Check

Each variant is `name:KEY=VALUE;KEY=VALUE` (environment of its own `python -m service`, bench.serving's
settings otherwise). All servers run at once (idle between their cells) and the cells alternate, variant after
variant, every round, so a change in the host's load hits them alike; the median round is printed. The load is
h2load (one thread, one HTTP/2 connection per client, one call in flight) sending `--method`: ModelInfer with
the one-row query of bench.grpc_vs_http, or any method whose request may be empty (Health/Check, ServerLive:
what a call costs with no model work). Per variant: req/s, server CPU per call, h2load's own CPU (is the load
generator the limit?) and the ORT runs' mean requests per batch (from `/metrics`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import resource
import statistics
import sys
from dataclasses import dataclass, field

import httpx

from bench.grpc_vs_http import MODEL, find_h2load, grpc_message, h2load_cell, tokens_for
from bench.serving import free_port, server_cpu_s, service

EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"  # a gRPC frame holding an empty (all-default) message


@dataclass
class Variant:
    name: str
    env: dict[str, str]
    pid: int = 0
    http: str = ""
    grpc: str = ""
    cells: list[tuple[float, float, float]] = field(default_factory=list)  # req/s, CPU µs/call, h2load cores


def parse_variant(text: str) -> Variant:
    name, _, assignments = text.partition(":")
    env = dict(kv.split("=", 1) for kv in assignments.split(";") if kv)
    return Variant(name, env)


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def requests_per_batch(metrics_url: str) -> float:
    total = {"sum": 0.0, "count": 0.0}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        m = re.match(r"fws_batch_size_requests_(sum|count)\{[^}]*\} (\S+)", line)
        if m:
            total[m.group(1)] += float(m.group(2))
    return total["sum"] / total["count"] if total["count"] else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", help="name:KEY=VALUE;KEY=VALUE (the environment of its server)")
    p.add_argument(
        "--method", default="ModelInfer", help="ModelInfer, or a full method with an empty request"
    )
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per cell")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    h2load = find_h2load(install=False)
    if h2load is None:
        print("needs h2load (Debian: nghttp2-client)", file=sys.stderr)
        return 2
    variants = [parse_variant(v) for v in args.variants]
    path = args.method if "/" in args.method else f"inference.GRPCInferenceService/{args.method}"
    with contextlib.ExitStack() as stack:
        for v in variants:
            grpc_port = free_port()
            target, ctx = service(v.name, {**v.env, "FWS_GRPC_PORT": str(grpc_port)})
            v.pid = stack.enter_context(ctx).pid
            v.http = target.url.removesuffix("/v1/retrieve")
            v.grpc = f"http://127.0.0.1:{grpc_port}/{path}"
        if args.method == "ModelInfer":
            metadata = httpx.get(f"{variants[0].http}/v2/models/{MODEL}", timeout=10).json()
            message = grpc_message(tokens_for(metadata, 1))
        else:
            message = EMPTY_MESSAGE
        for v in variants:  # warm-up: connections, caches
            h2load_cell(h2load, v.grpc, message, 8, 1.0)
        for _ in range(args.rounds):
            for v in variants:
                cpu0, load0 = server_cpu_s(v.pid), children_cpu_s()
                cell = h2load_cell(h2load, v.grpc, message, args.clients, args.duration)
                calls = max(cell.requests, 1)
                load_cores = (children_cpu_s() - load0) / cell.duration_s
                v.cells.append((cell.rps, (server_cpu_s(v.pid) - cpu0) * 1e6 / calls, load_cores))
        print(f"{args.method}, {args.clients} clients, {args.rounds} rounds of {args.duration:g} s (median):")
        for v in variants:
            rps = statistics.median(c[0] for c in v.cells)
            cpu = statistics.median(c[1] for c in v.cells)
            load = statistics.median(c[2] for c in v.cells)
            batch = requests_per_batch(f"{v.http}/metrics")
            print(
                f"  {v.name:>10}: {rps:7,.0f} req/s (rounds {[round(c[0]) for c in v.cells]})  "
                f"server CPU/call {cpu:4.0f} µs  h2load {load:.2f} cores  requests/batch {batch:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
