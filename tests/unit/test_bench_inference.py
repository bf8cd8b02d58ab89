"""bench.inference runs end to end on a small checkpoint: the built graph beside the traced one and torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.inference import SplitRunner, _ort_runner, concurrent_throughput, main
from export.onnx_export import export_bucket
from model.checkpoint import Checkpoint, build_model, save_checkpoint
from model.config import ModelConfig
from model.data import generate


def small_checkpoint(path: Path) -> Checkpoint:
    cfg = ModelConfig(hidden_size=16, embed_size=12, head_size=20)
    torch.manual_seed(0)
    ckpt = Checkpoint(config=cfg, state_dict=build_model(cfg).state_dict(), metrics={})
    save_checkpoint(ckpt, path)
    return ckpt


def test_the_benchmark_times_the_built_and_the_traced_graph_side_by_side(tmp_path, capsys):
    path = tmp_path / "small.pt"
    small_checkpoint(path)
    args = ["--checkpoint", str(path), "--seq-len", "7", "--batch-sizes", "1,5", "--rounds", "1"]
    assert main([*args, "--round-seconds", "0.01", "--threads", "1", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert "single_row_windows:" in out and "wide:" in out  # the shipped graph's two branches
    assert "real tokens per query (of T=7): batch 1: " in out  # the single-row branch skips leading PAD
    for engine in ("torch eager", "ort traced", "ort "):
        assert engine in out
    assert "ort vs ort traced: batch 1:" in out


def test_parallel_sessions_report_a_throughput(tmp_path):
    ckpt = small_checkpoint(tmp_path / "small.pt")
    graph = export_bucket(ckpt, 7, tmp_path / "model.onnx", "f")
    tokens = generate(8, 1, 2, 0, length=7).tokens
    assert concurrent_throughput(graph.path, tokens, workers=2, seconds=0.1, repeats=1) > 0


def test_a_batch_split_over_two_workers_gives_the_unsplit_answer_in_order(tmp_path):
    ckpt = small_checkpoint(tmp_path / "small.pt")
    graph = export_bucket(ckpt, 7, tmp_path / "model.onnx", "f")
    tokens = generate(9, 1, 2, 1, length=7).tokens  # odd: halves of 5 and 4
    whole = _ort_runner(graph.path, 1)(tokens)
    split = SplitRunner(_ort_runner(graph.path, 1), _ort_runner(graph.path, 1))
    try:
        for got, want in zip(split(tokens), whole, strict=True):  # type: ignore[call-overload]
            np.testing.assert_array_equal(got, want)
        assert len(split(tokens[:1])[0]) == 1  # type: ignore[index]  # one row: not split
    finally:
        split.close()


def test_two_core_mode_reports_every_configuration_and_the_best(tmp_path, capsys):
    path = tmp_path / "small.pt"
    small_checkpoint(path)
    args = ["--checkpoint", str(path), "--seq-len", "7", "--batch-sizes", "1,4", "--rounds", "1"]
    assert main([*args, "--round-seconds", "0.01", "--two-cores", "--no-compile"]) == 0
    out = capsys.readouterr().out
    for config in (
        "one call × 2 threads",
        "one call × 1 thread",
        "one call, batch split over 2 × 1 thread",
        "2 calls in flight × 1 thread each",
    ):
        assert config in out
    assert "batch 4: best ort:" in out and "hand-off only" in out


def test_levers_skip_batches_a_fixed_batch_graph_cannot_take(tmp_path, capsys):
    path = tmp_path / "small.pt"
    small_checkpoint(path)
    args = ["--checkpoint", str(path), "--seq-len", "5", "--batch-sizes", "1,2", "--rounds", "1"]
    assert main([*args, "--round-seconds", "0.005", "--levers", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("built, single-row form only"))
    cells = row.split()[4:]
    assert float(cells[0]) > 0 and cells[3:] == ["—", "—", "—"]  # batch 1 timed, batch 2 skipped
    assert "If(few-nodes ≤ 3, wide) (before)" in out and "shipped, IOBinding" in out
    assert "If(single-row, wide) (before)" in out and "If(single-row-matrix, wide)" in out
    for form in ("single-row-matrix", "single-row-windows"):
        assert f"built, {form} form only" in out
    assert "shipped, session._sess.run" in out


def test_engines_can_be_narrowed_for_tighter_a_b_runs(tmp_path, capsys):
    path = tmp_path / "small.pt"
    small_checkpoint(path)
    args = ["--checkpoint", str(path), "--seq-len", "5", "--batch-sizes", "1", "--rounds", "1"]
    args += ["--round-seconds", "0.005", "--threads", "1", "--no-compile"]
    assert main([*args, "--engines", "ort traced,eager/export"]) == 0
    rows = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()[3:] if line[:1].isalpha()]
    assert [r for r in rows if not r.startswith(("ort vs", "engine"))] == ["torch eager/export", "ort traced"]
    assert main([*args, "--engines", "no such engine"]) == 2


def test_queries_of_a_fixed_number_of_pairs_can_be_timed(tmp_path, capsys):
    """--pairs 2 at T=7: every query fills the bucket (2K + 3 = 7 tokens), the worst case of the single-row
    graph, which skips leading PAD steps."""
    path = tmp_path / "small.pt"
    small_checkpoint(path)
    args = ["--checkpoint", str(path), "--seq-len", "7", "--batch-sizes", "1,3", "--rounds", "1"]
    args += ["--round-seconds", "0.005", "--threads", "1", "--no-compile", "--engines", "ort", "--pairs", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "K uniform in 2..2" in out
    assert "real tokens per query (of T=7): batch 1: 7, batch 3: 7.0 on average" in out


def test_a_baseline_repository_is_timed_in_the_same_rounds_beside_its_namesakes(tmp_path, capsys):
    from export.repository import export_repository

    ckpt = small_checkpoint(tmp_path / "small.pt")
    export_repository(ckpt, tmp_path / "before", buckets=(5, 7))
    export_repository(ckpt, tmp_path / "after", buckets=(5, 9))
    args = ["--buckets-of", str(tmp_path / "after"), "--baseline", str(tmp_path / "before"), "--seq-len", "5"]
    assert (
        main([*args, "--batch-sizes", "1,3", "--rounds", "1", "--round-seconds", "0.01", "--threads", "1"])
        == 0
    )
    out = capsys.readouterr().out
    rows = [line.split(" (T=")[0] for line in out.splitlines() if "(T=" in line and "µs" not in line]
    table = [r for r in rows if not r.endswith("time per call")]
    assert table[:4] == ["before fastweights_t5", "fastweights_t5", "fastweights_t9", "before fastweights_t7"]
    assert "fastweights_t5 (T=5): before/after time per call (>1: faster now): batch 1: " in out
    assert "fastweights_t9 (T=9): before/after" not in out  # no namesake before
