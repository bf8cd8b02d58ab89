"""Memory sessions vs the stateless API re-sending the history, side by side in one run (issue 18).

    flock /tmp/bench.lock .venv/bin/python -m bench.sessions --plot docs/img/sessions.png

For each store (in-process, and Redis when `redis-server` is installed) one real server on 127.0.0.1:

- latency by session length L = 1..K_max (the served capacity): the append of the L-th pair to a session
  that holds L − 1, a query of a session holding L pairs, and `/v1/retrieve` with the L pairs re-sent (what a
  client without sessions pays); p50 and p99 of one sequential client, and the stateless/session ratio
  of the query at L = 8 and at L = K_max;
- throughput with concurrent clients: appends/s and queries/s on sessions of K_max pairs, sessions/s (create
  with K_max pairs, then delete);
- memory per session: the server's RSS (in-process) or Redis's used_memory grown per session held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.client_throughput import free_port, start_server, wait_ready

ROOT = Path(__file__).resolve().parent.parent
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def pairs_of(n: int, offset: int = 0) -> list[list[str]]:
    return [[LETTERS[i], str((i + offset) % 10)] for i in range(n)]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def redis_server() -> Iterator[str | None]:
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def server(store: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        "FWS_SESSION_STORE": store,
        "FWS_SESSION_MAX": "100000",
        "FWS_INFERENCE_THREADS": "1",
        "FWS_ORT_INTRA_OP_THREADS": "1",
        "FWS_LOG_LEVEL": "warning",
    }
    proc = start_server(ROOT / "model_repository", port, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def timed(client: httpx.Client, path: str, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    r = client.post(path, json=body)
    elapsed = time.perf_counter() - t0
    if r.status_code not in (200, 201):
        raise SystemExit(f"{path}: {r.status_code} {r.text}")
    return elapsed


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the server process so far (steadier than latency on a shared host)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency_by_length(
    url: str, pid: int, lengths: list[int], samples: int
) -> tuple[dict[str, dict[int, list[float]]], dict[str, dict[int, float]]]:
    """Per length L and kind: the latencies of `samples` sequential requests, and the server's CPU seconds
    per request over that block (each kind in a block of its own, so its CPU is its own)."""
    lat: dict[str, dict[int, list[float]]] = {"append": {}, "query": {}, "stateless": {}}
    cpu: dict[str, dict[int, float]] = {"append": {}, "query": {}, "stateless": {}}
    with httpx.Client(base_url=url, timeout=30.0) as c:
        for _ in range(20):  # warm up every path
            sid = c.post("/v1/sessions", json={"pairs": pairs_of(2)}).json()["session_id"]
            timed(c, f"/v1/sessions/{sid}/query", {"query": "a"})
            timed(c, "/v1/retrieve", {"pairs": pairs_of(2), "query": "a"})
        for L in lengths:
            rows = [pairs_of(L, s) for s in range(samples)]
            ids = [c.post("/v1/sessions", json={"pairs": p[:-1]}).json()["session_id"] for p in rows]
            blocks: dict[str, list[tuple[str, dict[str, Any]]]] = {
                "append": [
                    (f"/v1/sessions/{i}/pairs", {"pairs": [p[-1]], "seq": 0})
                    for i, p in zip(ids, rows, strict=True)
                ],
                "query": [
                    (f"/v1/sessions/{i}/query", {"query": p[n % L][0]})
                    for n, (i, p) in enumerate(zip(ids, rows, strict=True))
                ],
                "stateless": [
                    ("/v1/retrieve", {"pairs": p, "query": p[n % L][0]}) for n, p in enumerate(rows)
                ],
            }
            for kind, requests in blocks.items():
                c0 = cpu_s(pid)
                lat[kind][L] = [timed(c, path, body) for path, body in requests]
                cpu[kind][L] = (cpu_s(pid) - c0) / len(requests)
            for i in ids:
                c.delete(f"/v1/sessions/{i}")
    return lat, cpu


async def throughput(url: str, k: int, clients: int, seconds: float) -> dict[str, float]:
    """appends/s, queries/s (sessions of k pairs) and sessions/s (create with k pairs + delete)."""
    async with httpx.AsyncClient(
        base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=clients)
    ) as c:
        ids = [
            (await c.post("/v1/sessions", json={"pairs": pairs_of(k - 1)})).json()["session_id"]
            for _ in range(clients)
        ]

        async def loop(work) -> int:
            done, end = 0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                await work()
                done += 1
            return done

        async def query_work(sid: str) -> None:
            r = await c.post(f"/v1/sessions/{sid}/query", json={"query": "a"})
            if r.status_code != 200:
                raise SystemExit(r.text)

        async def session_work() -> None:
            r = await c.post("/v1/sessions", json={"pairs": pairs_of(k)})
            await c.delete(f"/v1/sessions/{r.json()['session_id']}")

        t0 = time.perf_counter()
        queries = sum(await asyncio.gather(*(loop(lambda s=s: query_work(s)) for s in ids)))
        q_rate = queries / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        sessions = sum(await asyncio.gather(*(loop(session_work) for _ in ids)))
        s_rate = sessions / (time.perf_counter() - t0)

        # appends: each client fills 4 empty sessions of its own, one pair per append up to k pairs (the cost
        # of an append is what is measured to be flat in the length, so the mix of lengths 1..k is fair)
        empty = [
            [(await c.post("/v1/sessions")).json()["session_id"] for _ in range(4)] for _ in range(clients)
        ]

        async def fill(own: list[str]) -> int:
            for sid in own:
                for seq, pair in enumerate(pairs_of(k)):
                    r = await c.post(f"/v1/sessions/{sid}/pairs", json={"pairs": [pair], "seq": seq})
                    if r.status_code != 200:
                        raise SystemExit(r.text)
            return len(own) * k

        t0 = time.perf_counter()
        appends = sum(await asyncio.gather(*(fill(own) for own in empty)))
        a_rate = appends / (time.perf_counter() - t0)
    return {"queries_per_s": q_rate, "sessions_per_s": s_rate, "appends_per_s": a_rate}


def memory_per_session(url: str, pid: int, store: str, k: int, n: int) -> float:
    def used() -> int:
        if store == "memory":
            return rss_bytes(pid)
        import redis

        return int(redis.Redis.from_url(store).info("memory")["used_memory"])

    with httpx.Client(base_url=url, timeout=30.0) as c:
        before = used()
        for _ in range(n):
            c.post("/v1/sessions", json={"pairs": pairs_of(k)})
        return (used() - before) / n


def run_store(store: str, lengths: list[int], samples: int, clients: int, seconds: float, n_mem: int) -> dict:
    with server(store) as (url, pid):
        k_max = httpx.get(url + "/v1/sessions").json()["limits"]["max_pairs"]
        lengths = [L for L in lengths if k_max >= L]
        lat, cpu = latency_by_length(url, pid, lengths, samples)
        rates = asyncio.run(throughput(url, k_max, clients, seconds))
        mem = memory_per_session(url, pid, store, k_max, n_mem)
    return {
        "k_max": k_max,
        "lengths": lengths,
        "latency": lat,
        "cpu": cpu,
        "throughput": rates,
        "bytes_per_session": mem,
    }


def ratio_of(a: float, b: float) -> str:
    """a / b as '1.23x'; 'n/a' when b is below the CPU clock's resolution (too few samples)."""
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def report(name: str, r: dict) -> list[str]:
    lines = [f"-- store: {name} (K_max = {r['k_max']})"]
    kinds = ("append", "query", "stateless")
    lines.append(
        f"{'L':>3} {'append p50/p99 ms':>20} {'query p50/p99 ms':>20} {'stateless p50/p99 ms':>22}"
        "   server CPU µs/request: append query stateless"
    )
    lat, cpu = r["latency"], r["cpu"]
    for L in r["lengths"]:
        cells = [f"{1e3 * pct(lat[k][L], 0.5):7.3f}/{1e3 * pct(lat[k][L], 0.99):7.3f}" for k in kinds]
        cpus = " ".join(f"{1e6 * cpu[k][L]:6.0f}" for k in kinds)
        lines.append(f"{L:>3} {cells[0]:>20} {cells[1]:>20} {cells[2]:>22}   {cpus}")
    for L in sorted({8, r["k_max"]} & set(r["lengths"])):
        ratio = statistics.median(lat["stateless"][L]) / statistics.median(lat["query"][L])
        ratio_a = statistics.median(lat["stateless"][L]) / statistics.median(lat["append"][L])
        lines.append(f"L={L}: stateless re-send / session p50: query {ratio:.2f}x, append {ratio_a:.2f}x")
    for L in sorted({8, r["k_max"]} & set(r["lengths"])):
        q, a = (ratio_of(cpu["stateless"][L], cpu[k][L]) for k in ("query", "append"))
        lines.append(f"L={L}: server CPU per request, stateless / session: query {q}, append {a}")
    first, last = r["lengths"][0], r["lengths"][-1]
    for k in kinds:
        growth = statistics.median(lat[k][last]) / statistics.median(lat[k][first])
        cpu_growth = ratio_of(cpu[k][last], cpu[k][first])
        lines.append(f"{k}: at L={last} / at L={first}: p50 {growth:.2f}x, server CPU {cpu_growth}")
    t = r["throughput"]
    lines.append(
        f"throughput (K_max pairs): {t['appends_per_s']:.0f} appends/s, {t['queries_per_s']:.0f} queries/s, "
        f"{t['sessions_per_s']:.0f} sessions/s (create with K_max pairs + delete)"
    )
    lines.append(f"memory per session ({r['k_max']} pairs): {r['bytes_per_session'] / 1024:.1f} KiB")
    return lines


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    styles = {"append": "-o", "query": "-s", "stateless": "--^"}
    for store, r in results.items():
        for kind, style in styles.items():
            if kind == "stateless" and store != "memory":
                continue
            ys = [1e3 * statistics.median(r["latency"][kind][L]) for L in r["lengths"]]
            label = (
                "stateless /v1/retrieve (history re-sent)"
                if kind == "stateless"
                else f"session {kind} ({store})"
            )
            ax.plot(r["lengths"], ys, style, label=label, markersize=4)
    ax.set_xlabel("pairs in the session (L)")
    ax.set_ylabel("p50 latency, ms (one sequential client)")
    ax.set_title("Memory sessions: cost per step vs session length")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__.split("\n")[0])
    p.add_argument(
        "--lengths", default="1-26", help="session lengths: 'a-b' or a comma list (capped at K_max)"
    )
    p.add_argument("--samples", type=int, default=200, help="requests per length and kind")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0, help="per throughput measurement")
    p.add_argument("--memory-sessions", type=int, default=2000)
    p.add_argument("--stores", default="memory,redis")
    p.add_argument("--plot", type=Path)
    p.add_argument("--json", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if "-" in args.lengths:
        lo, hi = (int(x) for x in args.lengths.split("-"))
        lengths = list(range(lo, hi + 1))
    else:
        lengths = [int(x) for x in args.lengths.split(",")]
    results: dict[str, dict] = {}
    print(f"host: {os.cpu_count()} CPUs; client and server share them", flush=True)
    with redis_server() as redis_url:
        for store in args.stores.split(","):
            if store == "redis":
                if redis_url is None:
                    print("-- store: redis skipped (no redis-server: make redis)")
                    continue
                target = redis_url
            else:
                target = "memory"
            r = run_store(target, lengths, args.samples, args.clients, args.seconds, args.memory_sessions)
            results[store] = r
            print("\n".join(report(store, r)), flush=True)
    if args.plot and results:
        plot(results, args.plot)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
