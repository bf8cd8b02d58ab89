"""The Open Inference Protocol over gRPC vs over HTTP, side by side in one run (issue 19).

    flock /tmp/bench.lock .venv/bin/python -m bench.grpc_vs_http                 # 5 s cells, 3 rounds
    .venv/bin/python -m bench.grpc_vs_http --duration 2 --rounds 1 --clients 1,64 --batch-clients 4

One server (`python -m service`: one inference thread, one onnxruntime thread) with both ports; the load
comes from two C programs of one thread each, on the same 2 cores as the server:
- HTTP: wrk, `POST /v2/models/fastweights_t11/infer`, keep-alive, one request in flight per connection. The
  body is JSON with `binary_data_output` (raw little-endian outputs, as the stock tritonclient.http asks).
- gRPC: h2load (nghttp2), `inference.GRPCInferenceService/ModelInfer`, one HTTP/2 connection per client and
  one call in flight on it; the gRPC message (raw_input_contents, as tritonclient.grpc sends) is prebuilt.
  h2load does not read gRPC status trailers, so every gRPC cell is checked against the server's own count:
  `fws_grpc_requests_total{method="ModelInfer"}` must count at least h2load's answers as OK, and nothing
  else but the calls cut off when the window closes (CANCELLED, at most one per connection).
Both send the same query ('c9k8j3f1??c', one row) and receive both outputs. Cells are interleaved (HTTP then
gRPC at each level, every round) and the median round by req/s is reported, with the server's CPU per request.
Batch scoring: the same, 256 rows per request, reported in rows/s.
`--stream` adds ModelStreamInfer with one request in flight per stream (bench/grpc_stream_load.py, a Python
client: its req/s is bounded by its own CPU; the server's CPU per request is the number to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench.serving import Cell, Target, find_wrk, fmt, free_port, load, ratio_lines, server_cpu_s, service

MODEL = "fastweights_t11"
QUERY = "c9k8j3f1??c"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def find_h2load(install: bool) -> str | None:
    path = shutil.which("h2load")
    if path is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing h2load from Debian's packages (apt-get install -y nghttp2-client)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "nghttp2-client"], capture_output=True, timeout=300)
        path = shutil.which("h2load")
    return path


def tokens_for(metadata: dict, rows: int) -> np.ndarray:
    """`rows` copies of QUERY as token ids, from what the server publishes."""
    params = metadata["parameters"]
    vocab, pad, seq_len = params["vocab"], params["pad_id"], params["seq_len"]
    row = [pad] * (seq_len - len(QUERY)) + [vocab.index(ch) for ch in QUERY]
    return np.tile(np.array(row, dtype=np.int64), (rows, 1))


def http_body(tokens: np.ndarray) -> str:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "tokens",
                    "datatype": "INT64",
                    "shape": list(tokens.shape),
                    "data": tokens.ravel().tolist(),
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )


def grpc_message(tokens: np.ndarray) -> bytes:
    """A length-prefixed gRPC message (uncompressed) holding a ModelInferRequest with raw_input_contents."""
    from inference_grpc import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="tokens", datatype="INT64", shape=list(tokens.shape))
    request.raw_input_contents.append(tokens.astype("<i8").tobytes())
    payload = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_calls(metrics_url: str) -> dict[str, float]:
    """ModelInfer calls the server counted, by status code."""
    out: dict[str, float] = {}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        m = re.match(r'fws_grpc_requests_total\{code="(\w+)",method="ModelInfer"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def h2load_cell(h2load: str, target: str, message: bytes, clients: int, duration: float) -> Cell:
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp) / "body.bin", Path(tmp) / "requests.log"
        body.write_bytes(message)
        cmd = [h2load, "-t1", f"-c{clients}", "-m1", f"-D{max(1, round(duration))}", "-d", str(body)]
        cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log}", target]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
        m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
        counts = re.search(
            r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out
        )
        if not m or not counts:
            raise RuntimeError(f"h2load gave no result:\n{out}")
        latencies = sorted(
            int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.split("\t")[1] == "200"
        )
    done, ok = int(counts.group(1)), int(counts.group(2))
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return Cell(ok, float(m.group(1)), q[49], q[98], done - ok)


def stream_cell(target: str, request: bytes, clients: int, duration: float) -> Cell:
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(request)
        f.flush()
        cmd = [sys.executable, "-m", "bench.grpc_stream_load", target, f.name]
        cmd += ["--clients", str(clients), "--duration", str(duration)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return Cell(r["requests"], r["duration_s"], r["p50_us"], r["p99_us"], r["errors"])


def measure(kind: str, target: Target, run, clients: int, duration: float, metrics_url: str) -> Cell:
    cpu0 = server_cpu_s(target.pid) if target.pid else 0.0
    calls0 = grpc_calls(metrics_url) if kind == "grpc" else {}
    cell = run(clients, duration)
    if target.pid and cell.requests:
        cell.extra["cpu_us_per_request"] = (server_cpu_s(target.pid) - cpu0) * 1e6 / cell.requests
    if kind == "grpc":
        calls1 = grpc_calls(metrics_url)
        delta = {code: calls1.get(code, 0) - calls0.get(code, 0) for code in calls1}
        # CANCELLED: calls h2load cut off when the window closed (at most one per connection)
        not_ok = {
            c: n for c, n in delta.items() if c != "OK" and n and not (c == "CANCELLED" and n <= clients)
        }
        if not_ok or delta.get("OK", 0) < cell.requests:
            raise RuntimeError(
                f"gRPC answers were not all OK: server counted {delta}, h2load {cell.requests}"
            )
    return cell


def run(args: argparse.Namespace) -> dict[str, dict[str, dict[int, Cell]]]:
    wrk = find_wrk(install=not args.no_install)
    h2load = find_h2load(install=not args.no_install)
    if wrk is None or h2load is None:
        print("needs wrk and h2load (Debian: wrk, nghttp2-client)", file=sys.stderr)
        raise SystemExit(2)
    grpc_port = free_port()
    target, ctx = service("service", {"FWS_GRPC_PORT": str(grpc_port)})
    results: dict[str, dict[str, dict[int, Cell]]] = {}
    with ctx as proc:
        target.pid = proc.pid
        base = target.url.removesuffix("/v1/retrieve")
        metrics_url = f"{base}/metrics"
        metadata = httpx.get(f"{base}/v2/models/{MODEL}", timeout=10).json()
        grpc_url = f"http://127.0.0.1:{grpc_port}{GRPC_PATH}"
        parts = [("single", 1, args.clients), ("batch", args.batch_rows, args.batch_clients)]
        for part, rows, levels in parts:
            tokens = tokens_for(metadata, rows)
            body, message = http_body(tokens), grpc_message(tokens)
            http_target = Target("http", f"{base}/v2/models/{MODEL}/infer", body=lambda _s, b=body: b)
            http_target.pid = proc.pid

            def run_http(c: int, d: float, t: Target = http_target) -> Cell:
                return load(t, c, d, wrk)

            def run_grpc(c: int, d: float, m: bytes = message) -> Cell:
                return h2load_cell(h2load, grpc_url, m, c, d)

            def run_stream(c: int, d: float, m: bytes = message) -> Cell:
                return stream_cell(f"127.0.0.1:{grpc_port}", m[5:], c, d)

            run_http(8, 1.0)  # warm-up: connections, caches
            run_grpc(8, 1.0)
            print(f"== {part}: {rows} row(s) per request", flush=True)
            runners = {"http": run_http, "grpc": run_grpc}
            if args.stream and rows == 1:
                runners["grpc-stream"] = run_stream
            cells: dict[str, dict[int, Cell]] = {kind: {} for kind in runners}
            for c in levels:
                rounds: dict[str, list[Cell]] = {kind: [] for kind in runners}
                for _ in range(args.rounds):
                    for kind, runner in runners.items():
                        cell = measure(kind, http_target, runner, c, args.duration, metrics_url)
                        rounds[kind].append(cell)
                for kind, got in rounds.items():
                    ordered = sorted(got, key=lambda cell: cell.rps)
                    cell = ordered[len(ordered) // 2]
                    cell.extra["rounds_rps"] = [round(x.rps) for x in got]
                    cell.extra["rows_per_s"] = cell.rps * rows
                    cells[kind][c] = cell
                    rows_note = f"  {cell.rps * rows:>10,.0f} rows/s" if rows > 1 else ""
                    rounds_note = f"  rounds {cell.extra['rounds_rps']}"
                    print(f"  {kind:<11} {c:>4} clients {fmt(cell)}{rows_note}{rounds_note}", flush=True)
            for kind in runners:
                if kind != "http":
                    for line in ratio_lines(cells, kind, "http"):
                        print(line)
            results[part] = cells
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="1,16,64,256", help="concurrency levels of the one-row part")
    p.add_argument("--batch-clients", default="4,16", help="concurrency levels of the batch part")
    p.add_argument("--batch-rows", type=int, default=256)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    p.add_argument("--rounds", type=int, default=3, help="rounds per cell; the median by req/s is reported")
    p.add_argument("--no-install", action="store_true", help="never apt-get install wrk or h2load")
    p.add_argument(
        "--stream",
        action="store_true",
        help="also ModelStreamInfer (one-row part), from a Python client: compare its server CPU per request",
    )
    p.add_argument("--json", type=Path, help="write the cells here")
    args = p.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    args.batch_clients = [int(c) for c in args.batch_clients.split(",")]
    results = run(args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    part: {
                        kind: {
                            str(c): {
                                "rps": cell.rps,
                                "p50_us": cell.p50_us,
                                "p99_us": cell.p99_us,
                                "errors": cell.errors,
                                **{k: v for k, v in cell.extra.items() if k != "batches"},
                            }
                            for c, cell in by_c.items()
                        }
                        for kind, by_c in cells.items()
                    }
                    for part, cells in results.items()
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
