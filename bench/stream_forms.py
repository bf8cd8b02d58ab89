"""The stream graph's state form, measured: shift register (the attention form's memory) vs the fast weight
matrix A, per call of one chunk, by batch size, in onnxruntime (one thread), side by side in one run.

    flock /tmp/bench.lock .venv/bin/python -m bench.stream_forms
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.state_graph import STATE_FORMS, build_state_graph, memory_shape
from export.stream_repository import longest_bucket
from model.checkpoint import load_checkpoint
from model.data import generate

ROOT = Path(__file__).resolve().parent.parent


def session(proto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def per_call_us(s: ort.InferenceSession, feed: dict, seconds: float) -> float:
    for _ in range(20):
        s.run(None, feed)
    best = float("inf")
    for _ in range(5):  # best of 5 rounds: the least disturbed by other processes
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            s.run(None, feed)
            n += 1
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_forms", description=__doc__.split("\n")[0])
    # the checkpoint the served stream model is exported from (make model)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "k26.pt")
    p.add_argument("--batch-sizes", default="1,8,64,256")
    p.add_argument("--chunk", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    model = load_checkpoint(args.checkpoint).model()
    H = model.config.hidden_size
    P = longest_bucket(ROOT / "model_repository", "fastweights") - 1
    sessions = {f: session(build_state_graph(model, args.chunk, P, f)) for f in STATE_FORMS}
    print(f"chunk C={args.chunk}, memory P={P}, H={H}; µs per call (best of 5), onnxruntime 1 thread")
    print(
        "state floats per session: "
        + ", ".join(f"{f} {H + int(np.prod(memory_shape(f, H, P)))}" for f in STATE_FORMS)
    )
    print(f"{'batch':>6} " + " ".join(f"{f:>16}" for f in STATE_FORMS) + f" {'matrix/shift':>13}")
    rng = np.random.default_rng(0)
    for B in (int(b) for b in args.batch_sizes.split(",")):
        tokens = generate(B, 1, 1, 0).tokens[:, -args.chunk :]  # '??k' chunks (C <= 3) or a pair and more
        row = []
        for f, s in sessions.items():
            feed = {
                "tokens": tokens,
                "state_h": rng.random((B, H), dtype=np.float32),
                "state_memory": rng.random((B, *memory_shape(f, H, P)), dtype=np.float32) * 0.01,
            }
            row.append(per_call_us(s, feed, args.seconds))
        print(f"{B:>6} " + " ".join(f"{t:>16.1f}" for t in row) + f" {row[1] / row[0]:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
