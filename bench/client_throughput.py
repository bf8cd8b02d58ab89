"""REST batch scoring vs onnxruntime in-process, the same rows, one run, printed as a ratio.

    .venv/bin/python -m bench.client_throughput --rows 100000

1. Draws `--rows` queries (seeded, K uniform in [k-min, k-max]) and writes them as a text file.
2. In-process: the same strings -> ids (vectorised numpy), one onnxruntime session per length bucket,
   batches of `--ort-batch`, argmax + softmax. This is the ceiling: no JSON, no HTTP, no queue.
3. REST: starts a real server (`python -m service`) on a free 127.0.0.1 port (or uses `--url`), waits for
   readiness, then runs the real client (`python -m client`) as a subprocess on the file and reads its
   summary (rows/s from its own clock, which excludes interpreter start-up; the wall time is printed too).
4. Checks that every REST answer equals the in-process answer, and prints rows/s of both and the ratio.

Both sides share this machine's cores (client, server and in-process ORT are never running at the same
time, but client and server compete with each other, as they would on one host).
"""

from __future__ import annotations

import argparse
import json
import os
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


def load_buckets(repository: Path, family: str):
    """{T: (session, answer_classes)} for every bucket of `family`, read from the ONNX metadata."""
    import onnxruntime as ort

    from export.contract import ONNX_FILENAME, MetadataKeys

    buckets = {}
    for model_dir in sorted(repository.glob(f"{family}_t*")):
        versions = sorted(
            (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
        )
        if not versions:
            continue
        opts = ort.SessionOptions()
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


def start_server(repository: Path, port: int, extra_env: dict[str, str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "FWS_HOST": "127.0.0.1",
        "FWS_PORT": str(port),
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


def run_client(path: Path, url: str, out: Path, chunk: int, concurrency: int) -> tuple[dict, float]:
    summary = out.with_suffix(".summary.json")
    cmd = [sys.executable, "-m", "client", str(path), "-o", str(out), "--overwrite", "--quiet"]
    cmd += ["--url", url, "--chunk-size", str(chunk), "--concurrency", str(concurrency)]
    cmd += ["--summary-json", str(summary)]
    start = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    wall = time.perf_counter() - start
    if rc not in (0, 1):
        raise SystemExit(f"client failed with exit code {rc}")
    return json.loads(summary.read_text()), wall


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
    p.add_argument("--url", help="use this running server instead of starting one")
    p.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the started server")
    p.add_argument("--json", type=Path, help="write the measurements here too")
    args = p.parse_args(argv)

    from model.data import generate

    data = generate(args.rows, args.k_min, args.k_max, args.seed)
    sequences = data.sequences()
    buckets = load_buckets(args.repository, args.family)
    in_process(sequences[: min(2048, len(sequences))], buckets, args.ort_batch)  # warm up
    expected, ort_s = in_process(sequences, buckets, args.ort_batch)
    ort_rate = len(sequences) / ort_s

    proc = None
    url = args.url
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.txt"
        path.write_text("\n".join(sequences) + "\n")
        try:
            if url is None:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                proc = start_server(args.repository, port, dict(kv.split("=", 1) for kv in args.server_env))
            wait_ready(url, proc)
            warm = Path(tmp) / "warm.txt"  # first requests pay for connections and lazy imports
            warm.write_text("\n".join(sequences[:2048]) + "\n")
            run_client(warm, url, Path(tmp) / "warm.jsonl", args.chunk_size, 1)
            summary, wall = run_client(path, url, Path(tmp) / "out.jsonl", args.chunk_size, args.concurrency)
            got = [json.loads(line) for line in (Path(tmp) / "out.jsonl").read_text().splitlines()]
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    mismatches = sum(r.get("value") != e for r, e in zip(got, expected, strict=False)) + abs(
        len(got) - len(expected)
    )
    rest_rate = summary["rows_per_s"]
    result = {
        "rows": len(sequences),
        "in_process_rows_per_s": round(ort_rate, 1),
        "rest_rows_per_s": rest_rate,
        "rest_wall_s_with_startup": round(wall, 3),
        "ratio": round(rest_rate / ort_rate, 4),
        "mismatches": mismatches,
        "chunk_size": args.chunk_size,
        "concurrency": args.concurrency,
        "ort_batch": args.ort_batch,
        "retries": summary["retries"],
        "row_errors": summary["errors"],
        "cpu_count": os.cpu_count(),
    }
    print(f"in-process onnxruntime: {ort_rate:10.0f} rows/s  ({ort_s:.2f} s for {len(sequences)} rows)")
    print(
        f"REST batch client:      {rest_rate:10.0f} rows/s  ({summary['elapsed_s']:.2f} s; {wall:.2f} s wall)"
    )
    print(f"ratio REST / in-process: {result['ratio']:.1%}   (goal >= 30%)   answers differing: {mismatches}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
