"""bench.bucket_sets: the best set of each size is the brute-force best, the choice follows the rule, and the
measurement runs end to end on a small checkpoint."""

from __future__ import annotations

import itertools
import json

import pytest

from bench.bucket_sets import KEPT, Costs, best_sets, choose, main, mean_costs, task_length
from tests.unit.test_bench_inference import small_checkpoint


def synthetic(k_max: int, per_step: float = 1.0, fixed: float = 10.0) -> Costs:
    """Costs linear in T at batch 256 and in the steps a batch-1 call runs (as measured: docs/results.md)."""
    lengths = [task_length(k) for k in range(1, k_max + 1)]
    single = {
        (k, t): fixed + per_step * (2 * k + 3) + 0.3 * (t - 2 * k - 3)
        for k in range(1, k_max + 1)
        for t in lengths
        if t >= task_length(k)
    }
    wide = {t: 0.1 * t for t in lengths}
    return Costs(k_max, single, wide, {t: 1000 * t for t in lengths})


def brute_force(costs: Costs, n: int, metric) -> float:
    lengths = [task_length(k) for k in range(1, costs.k_max + 1)]
    fixed = {t for t in KEPT if t <= lengths[-1]} | {lengths[-1]}
    free = [t for t in lengths if t not in fixed]
    best = float("inf")
    for extra in itertools.combinations(free, n - len(fixed)):
        chosen = sorted(fixed | set(extra))
        total = sum(
            metric(k, next(t for t in chosen if t >= task_length(k))) for k in range(1, costs.k_max + 1)
        )
        best = min(best, total)
    return best


@pytest.mark.parametrize("k_max", [6, 9])
def test_each_size_gets_the_set_a_brute_force_search_finds(k_max: int) -> None:
    costs = synthetic(k_max)

    def metric(k: int, t: int) -> float:
        return costs.single[(k, t)] + 50 * costs.wide[t]

    for n, lengths in best_sets(costs, metric).items():
        assert len(lengths) == n and set(KEPT) <= set(lengths) and lengths[-1] == task_length(k_max)
        total = sum(metric(k, next(t for t in lengths if t >= task_length(k))) for k in range(1, k_max + 1))
        assert total == pytest.approx(brute_force(costs, n, metric))


def test_the_chosen_set_is_the_smallest_within_the_bound_at_both_batch_sizes() -> None:
    costs = synthetic(12)
    floor = mean_costs(costs, [task_length(k) for k in range(1, 13)])
    table, chosen = choose(costs, within=0.10)
    assert chosen.wide_mean <= 1.10 * floor.wide_mean and chosen.single_mean <= 1.10 * floor.single_mean
    smaller = [s for s in table if len(s.lengths) < len(chosen.lengths)]
    assert smaller and all(
        s.wide_mean > 1.10 * floor.wide_mean or s.single_mean > 1.10 * floor.single_mean for s in smaller
    )
    _, loose = choose(costs, within=10.0)
    assert len(loose.lengths) == len(KEPT) + 1  # anything goes: the fewest graphs possible


def test_it_measures_a_small_checkpoint_and_chooses_again_from_the_json(tmp_path, capsys) -> None:
    path = tmp_path / "small.pt"
    small_checkpoint(path)
    out = tmp_path / "costs.json"
    args = ["--checkpoint", str(path), "--k-max", "5", "--rounds", "1", "--round-seconds", "0.005"]
    assert main([*args, "--json", str(out)]) == 0
    first = capsys.readouterr().out
    costs = Costs.from_json(json.loads(out.read_text()))
    assert sorted(costs.wide) == [5, 7, 9, 11, 13] and len(costs.single) == 5 + 4 + 3 + 2 + 1
    assert all(s > 0 for s in costs.single.values()) and all(b > 0 for b in costs.graph_bytes.values())
    assert "chosen: the fewest buckets" in first
    assert main(["--from-json", str(out)]) == 0
    assert capsys.readouterr().out == first  # the same choice from the same numbers
