"""REST batch scoring vs onnxruntime in-process, the same rows, one run, printed as a ratio.

    .venv/bin/python -m bench.client_throughput --rows 100000
    .venv/bin/python -m bench.client_throughput --protocol v2 --protocol grpc   # the protocols side by side

1. Draws `--rows` queries (seeded, K uniform in [k-min, k-max]) and writes them as a text file.
2. In-process: the same strings -> ids (vectorised numpy), one onnxruntime session per length bucket,
   batches of `--ort-batch`, argmax + softmax. This is the ceiling: no JSON, no HTTP, no queue.
3. REST: starts a real server (`python -m service`) on a free 127.0.0.1 port (or uses `--url`), waits for
   readiness, then runs the real client (`python -m client`) as a subprocess on the file and reads its
   summary (rows/s from its own clock, which excludes interpreter start-up; the wall time is printed too).
4. Checks that every REST answer equals the in-process answer, and prints rows/s of both and the ratio.
   With several `--protocol`s the client runs once per protocol in every repeat, in the order given, and the
   rows/s of each is also printed as a ratio to the first (gRPC goes to the same server's gRPC port).

Both sides share this machine's cores (in-process ORT never runs at the same time as the REST side, but
client and server compete with each other, as they would on one host). So the server is started with one
onnxruntime intra-op thread (override with --server-env), and the in-process ceiling is the better of one
thread and onnxruntime's default. The two sides alternate `--repeats` times and the best of each is kept,
so a change in the machine's load hits both alike. CPU seconds per row (in-process; client and server
process separately) are printed too: they say where the time goes, independent of the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_buckets(repository: Path, family: str, threads: int = 0):
    """{T: (session, vocab, answer_classes, pad_id)} for every bucket of `family`, from the ONNX metadata.
    `threads`: onnxruntime intra-op threads (0: its default, all cores)."""
    import onnxruntime as ort

    from contract import ONNX_FILENAME, MetadataKeys

    buckets = {}
    for model_dir in sorted(repository.glob(f"{family}_t*")):
        versions = sorted(
            (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
        )
        if not versions:
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(versions[-1] / ONNX_FILENAME), opts, providers=["CPUExecutionProvider"]
        )
        meta = session.get_modelmeta().custom_metadata_map
        seq_len = int(meta[MetadataKeys.SEQ_LEN])
        vocab = json.loads(meta[MetadataKeys.VOCAB])
        classes = json.loads(meta[MetadataKeys.ANSWER_CLASSES])
        pad_id = int(meta[MetadataKeys.PAD_ID])
        buckets[seq_len] = (session, vocab, classes, pad_id)
    if not buckets:
        raise SystemExit(f"no {family}_t* models in {repository}")
    return dict(sorted(buckets.items()))


def in_process(sequences: list[str], buckets, batch: int) -> tuple[list[str], float]:
    """Strings -> answers through onnxruntime directly; returns (values, seconds)."""
    any_bucket = next(iter(buckets.values()))
    vocab, pad_id = any_bucket[1], any_bucket[3]
    lut = np.full(256, pad_id, dtype=np.int64)
    for i, tok in enumerate(vocab):
        if len(tok) == 1:
            lut[ord(tok)] = i
    lengths = sorted(buckets)
    start = time.perf_counter()
    n = len(sequences)
    t_max = lengths[-1]
    lens = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n)
    raw = np.zeros((n, t_max), dtype=np.uint8)  # left padded with byte 0 -> PAD
    joined = np.frombuffer("".join(sequences).encode(), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    for length in np.unique(lens):
        rows = np.flatnonzero(lens == length)
        idx = offsets[rows][:, None] + np.arange(length)[None, :]
        raw[rows, t_max - length :] = joined[idx]
    tokens = lut[raw]  # (N, Tmax) int64
    values = np.empty(n, dtype=object)
    bucket_of = np.searchsorted(np.array(lengths), lens)  # smallest T >= len
    for b, seq_len in enumerate(lengths):
        rows = np.flatnonzero(bucket_of == b)
        session, _, classes, _ = buckets[seq_len]
        sub = tokens[rows, t_max - seq_len :]
        for lo in range(0, len(rows), batch):
            logits = session.run(["logits"], {"tokens": sub[lo : lo + batch]})[0]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            _confidence = (e / e.sum(axis=1, keepdims=True)).max(axis=1)
            values[rows[lo : lo + batch]] = np.array(classes, dtype=object)[logits.argmax(axis=1)]
    return list(values), time.perf_counter() - start


def start_server(
    repository: Path, port: int, extra_env: dict[str, str], grpc_port: int | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "FWS_HOST": "127.0.0.1",
        "FWS_PORT": str(port),
        "FWS_GRPC_PORT": str(grpc_port or free_port()),  # not 8001: another server may hold it
        "FWS_MODEL_REPOSITORY": str(repository),
    }
    env.update(extra_env)
    log = open(Path(tempfile.gettempdir()) / f"fws-bench-server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log)
    return proc


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {url} not ready after {timeout} s")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_client(
    path: Path, url: str, out: Path, chunk: int, concurrency: int, protocol: str = "rest"
) -> tuple[dict, float, float]:
    """Run the real CLI; returns (its summary, wall seconds, its CPU seconds)."""
    summary = out.with_suffix(".summary.json")
    cmd = [sys.executable, "-m", "client", str(path), "-o", str(out), "--overwrite", "--quiet"]
    cmd += [
        "--url",
        url,
        "--chunk-size",
        str(chunk),
        "--concurrency",
        str(concurrency),
        "--protocol",
        protocol,
    ]
    cmd += ["--summary-json", str(summary)]
    cpu0, start = children_cpu_s(), time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu0
    if rc not in (0, 1):
        raise SystemExit(f"client failed with exit code {rc}")
    return json.loads(summary.read_text()), wall, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--k-min", type=int, default=1)
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--family", default="fastweights")
    p.add_argument(
        "--ort-batch", type=int, default=256, help="in-process batch (the server's max_batch_size)"
    )
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument(
        "--protocol",
        action="append",
        choices=("rest", "v2", "grpc"),
        help="the client's --protocol (default rest); repeat to compare protocols in one run",
    )
    p.add_argument("--repeats", type=int, default=2, help="alternate in-process and REST runs; best of each")
    p.add_argument("--url", help="use this running server instead of starting one")
    p.add_argument("--grpc-url", help="its gRPC host:port (with --url and --protocol grpc)")
    p.add_argument(
        "--server-env",
        action="append",
        default=["FWS_ORT_INTRA_OP_THREADS=1"],
        help="KEY=VALUE for the started server (default: 1 intra-op thread, as the client shares the cores)",
    )
    p.add_argument("--json", type=Path, help="write the measurements here too")
    args = p.parse_args(argv)
    protocols: list[str] = args.protocol or ["rest"]
    if args.url and "grpc" in protocols and not args.grpc_url:
        p.error("--protocol grpc with --url needs --grpc-url")

    from model.data import generate

    sequences = generate(args.rows, args.k_min, args.k_max, args.seed).sequences()
    n = len(sequences)
    # The ceiling is the better of 1 intra-op thread and onnxruntime's default (all cores).
    session_sets = [load_buckets(args.repository, args.family, t) for t in (1, 0)]
    for buckets in session_sets:
        in_process(sequences[: min(2048, n)], buckets, args.ort_batch)  # warm up

    proc = None
    url = args.url
    ort_runs: list[tuple[float, float]] = []  # (seconds, cpu seconds)
    runs: dict[str, list[dict]] = {protocol: [] for protocol in protocols}
    expected: list[str] = []
    got: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "rows.txt", Path(tmp) / "out.jsonl"
        path.write_text("\n".join(sequences) + "\n")
        try:
            grpc_url = args.grpc_url
            if url is None:
                port, grpc_port = free_port(), free_port()
                url, grpc_url = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
                server_env = dict(kv.split("=", 1) for kv in args.server_env)
                proc = start_server(args.repository, port, server_env, grpc_port)
            wait_ready(url, proc)
            urls = {protocol: grpc_url if protocol == "grpc" else url for protocol in protocols}
            warm = Path(tmp) / "warm.txt"  # first requests pay for connections and lazy imports
            warm.write_text("\n".join(sequences[:2048]) + "\n")
            for protocol in protocols:
                run_client(warm, urls[protocol], Path(tmp) / "warm.jsonl", args.chunk_size, 1, protocol)
            # Alternate the two sides so that a change in the machine's load hits both alike.
            for _ in range(args.repeats):
                for buckets in session_sets:
                    cpu0 = self_cpu_s()
                    expected, ort_s = in_process(sequences, buckets, args.ort_batch)
                    ort_runs.append((ort_s, self_cpu_s() - cpu0))
                for protocol in protocols:
                    server_cpu0 = process_cpu_s(proc.pid) if proc is not None else None
                    summary, wall, client_cpu = run_client(
                        path, urls[protocol], out, args.chunk_size, args.concurrency, protocol
                    )
                    server_cpu1 = process_cpu_s(proc.pid) if proc is not None else None
                    server_cpu = (
                        None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
                    )
                    runs[protocol].append(
                        {**summary, "wall": wall, "client_cpu": client_cpu, "server_cpu": server_cpu}
                    )
                    got[protocol] = [json.loads(line) for line in out.read_text().splitlines()]
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    ort_s, ort_cpu = min(ort_runs)
    ort_rate = n / ort_s

    def per_row_us(cpu: float | None) -> float | None:
        return None if cpu is None else round(cpu / n * 1e6, 2)

    by_protocol = {}
    for protocol, done in runs.items():
        answers = got.get(protocol, [])
        best = max(done, key=lambda r: r["rows_per_s"])
        by_protocol[protocol] = {
            "rows_per_s": best["rows_per_s"],
            "ratio": round(best["rows_per_s"] / ort_rate, 4),
            "rows_per_s_all": [r["rows_per_s"] for r in done],
            "wall_s_with_startup": round(best["wall"], 3),
            "cpu_us_per_row": {
                "client": per_row_us(best["client_cpu"]),
                "server": per_row_us(best["server_cpu"]),
            },
            "answers_differing": sum(r.get("value") != e for r, e in zip(answers, expected, strict=False))
            + abs(len(answers) - n),
            "retries": best["retries"],
            "row_errors": best["errors"],
        }
    first = by_protocol[protocols[0]]
    result = {
        "rows": n,
        "in_process_rows_per_s": round(ort_rate, 1),
        # The first protocol's figures under their historical names:
        "rest_rows_per_s": first["rows_per_s"],
        "ratio": first["ratio"],
        "in_process_rows_per_s_all": [round(n / s, 1) for s, _ in ort_runs],
        "rest_rows_per_s_all": first["rows_per_s_all"],
        "rest_wall_s_with_startup": first["wall_s_with_startup"],
        "cpu_us_per_row": {"in_process": per_row_us(ort_cpu), **first["cpu_us_per_row"]},
        "answers_differing": first["answers_differing"],
        "chunk_size": args.chunk_size,
        "concurrency": args.concurrency,
        "protocol": protocols[0],
        "protocols": by_protocol,
        "ort_batch": args.ort_batch,
        "retries": first["retries"],
        "row_errors": first["row_errors"],
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(
        f"in-process onnxruntime: {ort_rate:9.0f} rows/s  (best of {result['in_process_rows_per_s_all']}: "
        "1 thread, default threads, alternating)"
    )
    for protocol, r in by_protocol.items():
        versus = (
            f"  {r['rows_per_s'] / first['rows_per_s']:.2f}x {protocols[0]}"
            if protocol != protocols[0]
            else ""
        )
        print(
            f"client ({protocol:4}):          {r['rows_per_s']:9.0f} rows/s  (best of {r['rows_per_s_all']})"
            f"  {r['ratio']:.1%} of in-process{versus}"
        )
        print(
            f"  CPU per row: client {r['cpu_us_per_row']['client']} us + server "
            f"{r['cpu_us_per_row']['server']} us; answers differing from in-process: "
            f"{r['answers_differing']} of {n}"
        )
    print(
        f"ratio {protocols[0]} / in-process: {result['ratio']:.1%}   (goal >= 30%); CPU per row in-process "
        f"{per_row_us(ort_cpu)} us (load average {result['load_average'][0]:.1f}, {os.cpu_count()} CPUs)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    # Near-ties may flip between batch compositions; more is a bug.
    worst = max(r["answers_differing"] for r in by_protocol.values())
    return 0 if worst <= n // 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
