"""Inference engines by batch size 1..1024 and by length bucket, with plots (issue 7, part 1).

    .venv/bin/python -m bench.engine_sweep                      # batch 1..1024, T=11, then every bucket
    .venv/bin/python -m bench.engine_sweep --batch-sizes 1,8 --rounds 1 --round-seconds 0.05 --no-compile

A thin driver over bench.inference (the export helper's benchmark: interleaved rounds, medians, ratios in
one run): it runs it three times, once over batch sizes on one bucket, once over the repository's buckets
with the same one-pair queries left padded to each T (what a query pays for a longer bucket), and once with
``--two-cores`` (torch.compile and onnxruntime each in every 2-core configuration, the ratio of the bests),
and plots the first two.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench import inference

ROOT = Path(__file__).resolve().parent.parent


def plot(batches: dict, buckets: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for engine, per in batches["seconds_per_call"].items():
        xs = sorted(int(k) for k in per)
        a.plot(xs, [x / per[str(x)] for x in xs], marker="o", label=engine)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("batch size")
    a.set_title(f"sequences/s by batch size (T={batches['seq_len']})")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    for engine, per in buckets["seconds_per_call"].items():
        xs = sorted(int(k) for k in per)
        b.plot(xs, [x / per[str(x)] for x in xs], marker="o", label=engine)
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("batch size")
    b.set_title("onnxruntime sequences/s by bucket (same 1-pair queries)")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.engine_sweep", description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", default="1,4,16,64,256,1024")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-seconds", type=float, default=0.3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument(
        "--two-core-batch-sizes", help="batch sizes of the --two-cores run (default: --batch-sizes)"
    )
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--plot", type=Path, help="write a PNG here")
    p.add_argument("--json", type=Path, help="write the three runs' results here")
    args = p.parse_args(argv)
    common = ["--batch-sizes", args.batch_sizes, "--threads", str(args.threads), "--rounds", str(args.rounds)]
    common += ["--round-seconds", str(args.round_seconds)]
    with tempfile.TemporaryDirectory() as tmp:
        by_batch, by_bucket = Path(tmp) / "batch.json", Path(tmp) / "bucket.json"
        print("== by batch size (bench.inference)", flush=True)
        extra = ["--no-compile"] if args.no_compile else []
        code = inference.main([*common, "--seq-len", "11", "--json", str(by_batch), *extra])
        print("== by bucket (bench.inference --buckets-of)", flush=True)
        code = code or inference.main(
            [*common, "--buckets-of", str(args.repository), "--seq-len", "5", "--json", str(by_bucket)]
        )
        print("== two cores, every configuration of each engine (bench.inference --two-cores)", flush=True)
        two_cores = Path(tmp) / "two_cores.json"
        args2 = ["--batch-sizes", args.two_core_batch_sizes or args.batch_sizes, "--rounds", str(args.rounds)]
        args2 += ["--round-seconds", str(args.round_seconds), "--json", str(two_cores), *extra]
        code = code or inference.main([*args2, "--two-cores"])
        if code:
            return code
        batches, buckets = json.loads(by_batch.read_text()), json.loads(by_bucket.read_text())
        parallel = json.loads(two_cores.read_text())
    if args.plot:
        plot(batches, buckets, args.plot)
    if args.json:
        both = {"by_batch": batches, "by_bucket": buckets, "two_cores": parallel}
        args.json.write_text(json.dumps(both, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
