"""Soak a running server at saturation from its own process; report errors, overload answers, latency, memory.

    python -m bench.soak --url http://127.0.0.1:8000 --server-pid 1234 --duration 60 --concurrency 64

Closed loop: `--concurrency` workers each send one request after another (mix: native single queries,
native batches of `--batch-items`, V2 JSON infer), for `--duration` seconds. Expected answers are 200
(checked: the value must be the task's answer) and, when the bounded queue is full, 503 with Retry-After;
anything else (other statuses, transport errors, 503 without Retry-After, non-JSON bodies) is unexpected.
The server's resident memory (psutil on `--server-pid`) is sampled twice a second; growth is measured from
the end of the warm-up (`--warmup` seconds) to the end of the run. Prints one JSON summary; exits 1 when a
limit fails (`--max-unexpected`, `--max-rss-growth`, `--max-overload-p99-ms`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import httpx
import numpy as np
import psutil

from model.data import VOCAB, generate


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}  # type: ignore[dict-item]
    a = np.asarray(values) * 1000.0
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
    }


class Soak:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        batch = generate(4096, 1, 8, seed=args.seed)
        self.queries = [
            (seq, VOCAB.class_to_value(int(t)), row)
            for seq, t, row in zip(
                batch.sequences(), batch.targets.tolist(), batch.tokens.tolist(), strict=True
            )
        ]
        self.rng = random.Random(args.seed)
        self.latency: dict[str, list[float]] = {"ok": [], "overloaded": []}
        self.counts: dict[str, int] = {}
        self.unexpected: list[str] = []
        self.rows_ok = 0
        self.rows_wrong = 0
        self.rss: list[tuple[float, int]] = []

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _request(self) -> tuple[str, str, dict[str, Any], list[str]]:
        r = self.rng.random()
        if r < 0.7:
            seq, value, _ = self.rng.choice(self.queries)
            return "native", "/v1/retrieve", {"sequence": seq}, [value]
        if r < 0.9:
            picks = [self.rng.choice(self.queries) for _ in range(self.args.batch_items)]
            return (
                "batch",
                "/v1/retrieve/batch",
                {"items": [{"sequence": q} for q, _, _ in picks]},
                [v for _, v, _ in picks],
            )
        # V2: rows of one bucket (the generator's rows are padded to the longest: T for 8 pairs).
        picks = [self.rng.choice(self.queries) for _ in range(4)]
        rows = [row for _, _, row in picks]
        t = len(rows[0])
        body = {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [len(rows), t], "data": rows}]}
        return "v2", f"/v2/models/fastweights_t{t}/infer", body, [v for _, v, _ in picks]

    def _check(self, kind: str, r: httpx.Response, expected: list[str]) -> None:
        if kind == "native":
            got = [r.json()["value"]]
        elif kind == "batch":
            got = [x.get("value") for x in r.json()["results"]]
        else:
            out = next(o for o in r.json()["outputs"] if o["name"] == "logits")
            logits = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            got = [VOCAB.class_to_value(int(i)) for i in logits.argmax(axis=1)]
        ok = sum(g == e for g, e in zip(got, expected, strict=True))
        self.rows_ok += ok
        self.rows_wrong += len(expected) - ok

    async def worker(self, client: httpx.AsyncClient, stop: float, warm_until: float) -> None:
        while time.monotonic() < stop:
            kind, path, body, expected = self._request()
            t0 = time.perf_counter()
            try:
                r = await client.post(path, json=body)
            except httpx.HTTPError as exc:
                self.unexpected.append(f"{kind}: {type(exc).__name__}")
                continue
            elapsed = time.perf_counter() - t0
            measured = time.monotonic() >= warm_until
            if r.status_code == 200:
                self._count(f"{kind} 200")
                self._check(kind, r, expected)
                if measured:
                    self.latency["ok"].append(elapsed)
            elif r.status_code == 503 and r.headers.get("retry-after") and "error" in r.json():
                self._count(f"{kind} 503")
                self.latency["overloaded"].append(elapsed)
                await asyncio.sleep(0.005)  # a polite client backs off a little (Retry-After is 1 s)
            else:
                self._count(f"{kind} {r.status_code}")
                self.unexpected.append(f"{kind} {r.status_code}: {r.text[:200]}")

    async def sample_memory(self, stop: float) -> None:
        proc = psutil.Process(self.args.server_pid) if self.args.server_pid else None
        start = time.monotonic()
        while proc is not None and time.monotonic() < stop:
            self.rss.append((time.monotonic() - start, proc.memory_info().rss))
            await asyncio.sleep(0.5)

    async def run(self) -> dict[str, Any]:
        a = self.args
        limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
        async with httpx.AsyncClient(base_url=a.url, timeout=30, limits=limits) as client:
            start = time.monotonic()
            stop, warm_until = start + a.duration, start + a.warmup
            await asyncio.gather(
                self.sample_memory(stop),
                *(self.worker(client, stop, warm_until) for _ in range(a.concurrency)),
            )
            wall = time.monotonic() - start
            health = await client.get("/v2/health/ready")
        return self.summary(wall, health.status_code)

    def summary(self, wall: float, ready_after: int) -> dict[str, Any]:
        a = self.args
        after_warmup = [rss for t, rss in self.rss if t >= a.warmup]
        growth = None
        if len(after_warmup) >= 4:
            base = float(np.mean(after_warmup[:2]))
            end = float(np.mean(after_warmup[-2:]))
            growth = round(100.0 * (end - base) / base, 2)
        total = sum(self.counts.values())
        return {
            "duration_s": round(wall, 1),
            "concurrency": a.concurrency,
            "requests": total,
            "requests_per_s": round(total / wall, 1),
            "rows_answered": self.rows_ok + self.rows_wrong,
            "row_accuracy": round(self.rows_ok / max(1, self.rows_ok + self.rows_wrong), 4),
            "statuses": dict(sorted(self.counts.items())),
            "unexpected": len(self.unexpected),
            "unexpected_samples": self.unexpected[:10],
            "latency_ms_ok_after_warmup": _percentiles(self.latency["ok"]),
            "latency_ms_overloaded_503": _percentiles(self.latency["overloaded"]),
            "rss_mb_first_last": [round(self.rss[0][1] / 2**20, 1), round(self.rss[-1][1] / 2**20, 1)]
            if self.rss
            else None,
            "rss_growth_pct_after_warmup": growth,
            "ready_after": ready_after,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--server-pid", type=int, default=0, help="pid whose resident memory is sampled")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--batch-items", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-unexpected", type=int, default=0)
    p.add_argument("--max-rss-growth", type=float, default=10.0, help="percent, after warm-up")
    p.add_argument("--max-overload-p99-ms", type=float, default=1000.0)
    args = p.parse_args(argv)
    result = asyncio.run(Soak(args).run())
    print(json.dumps(result, indent=2))
    failures = []
    if result["unexpected"] > args.max_unexpected:
        failures.append(f"{result['unexpected']} unexpected answers")
    growth = result["rss_growth_pct_after_warmup"]
    if args.server_pid and (growth is None or growth > args.max_rss_growth):
        failures.append(f"resident memory grew {growth}% after warm-up")
    p99 = result["latency_ms_overloaded_503"]["p99"]
    if p99 is not None and p99 > args.max_overload_p99_ms:
        failures.append(f"503 answers took {p99} ms at p99")
    if result["ready_after"] != 200:
        failures.append("server not ready after the soak")
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
