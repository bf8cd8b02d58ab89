"""Choose a family's length buckets by measured cost: one graph per K timed, then the best set of each size.

    .venv/bin/python -m bench.bucket_sets --checkpoint checkpoints/k26.pt --k-max 26 --json runs/buckets.json
    .venv/bin/python -m bench.bucket_sets --from-json runs/buckets.json     # choose again, no measuring

A query of K pairs goes to the smallest bucket with T >= 2K + 3, so a set of buckets trades PAD steps (a
query in a longer bucket) against graphs (files, sessions, warm-up, and a dynamic batcher queue each, so
fewer requests share a batch). This measures the first and states the second:

* one bucket per task length (T = 2K + 3, K = 1..k_max) exported into a temporary repository;
* batch 1: every (K, T >= 2K + 3), K-pair queries left padded to T (the shipped batch-1 form skips most
  leading PAD steps, so its cost depends on both); batch 256: every T with full rows (the wide form runs
  all T steps of every row whatever K is), per sequence;
* interleaved rounds on this process's CPU clock (one thread), the median round per cell.

Then, for each number of buckets n (T = 5, 11 and the longest always in: the short buckets are kept as
served), the set with the lowest mean cost per query over K uniform in 1..k_max (dynamic programming over
consecutive K ranges), at batch 1 and at batch 256, each also as a ratio to one graph per K (the least
PAD possible). The chosen set is the smallest n within `--within` of that floor at both batch sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIDE_BATCH = 256
KEPT = (5, 11)  # the short-query buckets, served as they are (issue 17: their speed must hold)


def task_length(k: int) -> int:
    return 2 * k + 3


@dataclass(frozen=True)
class Costs:
    """Measured seconds: batch 1 per (K, T) call, batch 256 per sequence for each T; graph file sizes."""

    k_max: int
    single: dict[tuple[int, int], float]  # (K, T) -> seconds per batch-1 call
    wide: dict[int, float]  # T -> seconds per sequence at batch WIDE_BATCH
    graph_bytes: dict[int, int]  # T -> model.onnx bytes

    def to_json(self) -> dict[str, object]:
        return {
            "k_max": self.k_max,
            "single": {f"{k},{t}": s for (k, t), s in self.single.items()},
            "wide": {str(t): s for t, s in self.wide.items()},
            "graph_bytes": {str(t): b for t, b in self.graph_bytes.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> Costs:
        single = {}
        for key, s in data["single"].items():
            k, t = key.split(",")
            single[(int(k), int(t))] = float(s)
        return cls(
            int(data["k_max"]),
            single,
            {int(t): float(s) for t, s in data["wide"].items()},
            {int(t): int(b) for t, b in data["graph_bytes"].items()},
        )


@dataclass(frozen=True)
class BucketSet:
    lengths: tuple[int, ...]
    single_mean: float  # seconds per batch-1 query, K uniform in 1..k_max
    wide_mean: float  # seconds per sequence at batch 256, K uniform in 1..k_max


def mean_costs(costs: Costs, lengths: Sequence[int]) -> BucketSet:
    """A set's mean cost per query over K uniform in 1..k_max (each K in its smallest fitting bucket)."""
    ordered = sorted(lengths)
    single, wide = [], []
    for k in range(1, costs.k_max + 1):
        t = next(t for t in ordered if t >= task_length(k))
        single.append(costs.single[(k, t)])
        wide.append(costs.wide[t])
    return BucketSet(tuple(ordered), statistics.fmean(single), statistics.fmean(wide))


def best_sets(costs: Costs, metric: Callable[[int, int], float]) -> dict[int, tuple[int, ...]]:
    """For each bucket count, the set (with KEPT and the longest T) minimising the sum over K of
    metric(K, bucket of K). Buckets serve consecutive K ranges, so this is a DP over the range ends."""
    k_max = costs.k_max
    kept_k = sorted({(t - 3) // 2 for t in KEPT if (t - 3) // 2 <= k_max} | {k_max})

    def segment(lo: int, hi: int) -> float:  # K in lo+1..hi served by the bucket of hi pairs
        return sum(metric(k, task_length(hi)) for k in range(lo + 1, hi + 1))

    @cache
    def solve(hi: int, n: int) -> tuple[float, tuple[int, ...]]:
        """Least cost of K 1..hi with n buckets, the last one ending at hi (every kept end <= hi used)."""
        if n == 1:
            skips_kept = any(k < hi for k in kept_k)
            return (float("inf"), ()) if skips_kept else (segment(0, hi), (hi,))
        best: tuple[float, tuple[int, ...]] = (float("inf"), ())
        for lo in range(1, hi):
            if any(lo < k < hi for k in kept_k):
                continue  # a kept bucket would be skipped
            cost, ends = solve(lo, n - 1)
            if cost + segment(lo, hi) < best[0]:
                best = (cost + segment(lo, hi), (*ends, hi))
        return best

    out = {}
    for n in range(len(kept_k), k_max + 1):
        _, ends = solve(k_max, n)
        if ends:
            out[n] = tuple(task_length(k) for k in ends)
    return out


def choose(costs: Costs, within: float) -> tuple[list[BucketSet], BucketSet]:
    """Every size's best set (by the sum of both ratios to the floor) and the smallest within `within`."""
    floor = mean_costs(costs, [task_length(k) for k in range(1, costs.k_max + 1)])

    def metric(k: int, t: int) -> float:  # both batch sizes, each relative to its floor
        return costs.single[(k, t)] / floor.single_mean + costs.wide[t] / floor.wide_mean

    table = [mean_costs(costs, lengths) for lengths in best_sets(costs, metric).values()]
    chosen = next(
        s
        for s in table
        if s.single_mean <= (1 + within) * floor.single_mean and s.wide_mean <= (1 + within) * floor.wide_mean
    )
    return table, chosen


def measure(checkpoint: Path, k_max: int, rounds: int, round_seconds: float) -> Costs:
    """Export one bucket per K into a temporary repository and time every cell (see the module doc)."""
    from bench.inference import CLOCKS, _ort_runner
    from export.repository import export_sources
    from model.data import generate

    lengths = [task_length(k) for k in range(1, k_max + 1)]
    clock = CLOCKS["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_sources([(checkpoint, lengths)], tmp, family="cost")
        runners = {g.seq_len: _ort_runner(g.path, 1) for g in graphs}
        sizes = {g.seq_len: g.size_bytes for g in graphs}
        cells: dict[tuple[int, int, int], np.ndarray] = {}  # (batch, K, T) -> tokens
        for k in range(1, k_max + 1):
            for t in lengths:
                if t >= task_length(k):
                    cells[(1, k, t)] = generate(1, k, k, np.random.SeedSequence([k, t]), length=t).tokens
        for t in lengths:
            k = (t - 3) // 2
            seed = np.random.SeedSequence([WIDE_BATCH, t])
            cells[(WIDE_BATCH, k, t)] = generate(WIDE_BATCH, k, k, seed, length=t).tokens
        calls = {}
        for cell, tokens in cells.items():  # warm up; calls per round so that a round takes ~round_seconds
            run = runners[cell[2]]
            for _ in range(3):
                run(tokens)
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 0.02:
                run(tokens)
                n += 1
            calls[cell] = max(1, int(n * round_seconds / (time.perf_counter() - start)))
        samples: dict[tuple[int, int, int], list[float]] = {cell: [] for cell in cells}
        for _ in range(rounds):
            for cell, tokens in cells.items():
                run, n = runners[cell[2]], calls[cell]
                start = clock()
                for _ in range(n):
                    run(tokens)
                samples[cell].append((clock() - start) / n)
    median = {cell: statistics.median(v) for cell, v in samples.items()}
    return Costs(
        k_max,
        {(k, t): s for (b, k, t), s in median.items() if b == 1},
        {t: s / WIDE_BATCH for (b, _, t), s in median.items() if b == WIDE_BATCH},
        sizes,
    )


def report(costs: Costs, within: float) -> str:
    floor = mean_costs(costs, [task_length(k) for k in range(1, costs.k_max + 1)])
    table, chosen = choose(costs, within)
    lines = [
        f"K uniform in 1..{costs.k_max}; T = {', '.join(map(str, KEPT))} and "
        f"{task_length(costs.k_max)} always in",
        "per T: batch-1 µs of a one-pair query and of a full query, batch-256 µs per sequence, graph KiB",
    ]
    for t in sorted(costs.wide):
        k = (t - 3) // 2
        lines.append(
            f"  T={t:<3} {costs.single[(1, t)] * 1e6:7.1f} {costs.single[(k, t)] * 1e6:7.1f} "
            f"{costs.wide[t] * 1e6:7.2f} {costs.graph_bytes[t] / 1024:7.1f}"
        )
    head = f"{'n':>3}  {'batch 1 µs':>10} {'×floor':>7}  {'b256 µs/seq':>11} {'×floor':>7}  buckets (T)"
    lines.append(head)
    for s in table:
        mark = "  <- chosen" if s == chosen else ""
        lines.append(
            f"{len(s.lengths):>3}  {s.single_mean * 1e6:>10.1f} {s.single_mean / floor.single_mean:>7.3f}  "
            f"{s.wide_mean * 1e6:>11.3f} {s.wide_mean / floor.wide_mean:>7.3f}  "
            f"{','.join(map(str, s.lengths))}{mark}"
        )
    lines.append(
        f"chosen: the fewest buckets within {within:.0%} of one graph per K at both batch sizes: "
        f"{','.join(map(str, chosen.lengths))}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bucket_sets", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "k26.pt")
    p.add_argument("--k-max", type=int, default=26)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-seconds", type=float, default=0.05)
    p.add_argument("--within", type=float, default=0.10, help="allowed mean cost over the floor (0.10: 10%%)")
    p.add_argument("--json", type=Path, help="also write the measured costs here")
    p.add_argument("--from-json", type=Path, help="choose from costs measured before instead of measuring")
    args = p.parse_args(argv)
    if args.from_json:
        costs = Costs.from_json(json.loads(args.from_json.read_text()))
    else:
        if not args.checkpoint.is_file():
            print(f"error: {args.checkpoint}: no such checkpoint", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(1)
        costs = measure(args.checkpoint, args.k_max, args.rounds, args.round_seconds)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(costs.to_json(), indent=1) + "\n")
    print(report(costs, args.within))
    return 0


if __name__ == "__main__":
    sys.exit(main())
