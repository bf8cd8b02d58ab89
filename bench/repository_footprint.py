"""What a model repository costs the server before any request: time to ready and resident memory.

    .venv/bin/python -m bench.repository_footprint model_repository /tmp/other_repository --repeats 3

Each repository gets a real server (`python -m service`, one inference thread, on a free 127.0.0.1 port), in
turn, `--repeats` times (alternated, so a change of host load hits every repository alike): the seconds from
start to /v2/health/ready (load, warm-up) and the server's RSS once ready. More length buckets mean more
onnxruntime sessions: the price of less padding (bench/bucket_sets.py measures the other side).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench.client_throughput import free_port, start_server, wait_ready
from bench.sessions import rss_bytes
from contract import scan_repository


def measure(repository: Path) -> tuple[float, float]:
    """(seconds to ready, RSS MiB once ready) of one server on `repository`."""
    port = free_port()
    started = time.perf_counter()
    proc = start_server(repository, port, {"FWS_INFERENCE_THREADS": "1", "FWS_ORT_INTRA_OP_THREADS": "1"})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        ready = time.perf_counter() - started
        time.sleep(0.5)  # let the warm-up's allocations settle
        return ready, rss_bytes(proc.pid) / 2**20
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.repository_footprint", description=__doc__.split("\n")[0]
    )
    p.add_argument("repositories", type=Path, nargs="+")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    samples: dict[Path, list[tuple[float, float]]] = {r: [] for r in args.repositories}
    for _ in range(args.repeats):
        for repository in args.repositories:
            samples[repository].append(measure(repository))
    for repository, runs in samples.items():
        entries = scan_repository(repository)
        lengths = sorted(e.seq_len for e in entries if not e.config.stateful)
        stream = " + stream model" if any(e.config.stateful for e in entries) else ""
        ready = ", ".join(f"{s:.2f}" for s, _ in runs)
        rss = statistics.median(m for _, m in runs)
        print(
            f"{repository}: {len(lengths)} buckets (T = {', '.join(map(str, lengths))}, sum {sum(lengths)})"
            f"{stream}: ready in {ready} s, RSS median {rss:.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
