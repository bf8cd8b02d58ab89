"""bench.inference runs end to end on a small checkpoint: the built graph beside the traced one and torch."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.inference import concurrent_throughput, main
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
    assert "single_row:" in out and "wide:" in out  # the shipped graph's two branches
    for engine in ("torch eager", "ort traced", "ort "):
        assert engine in out
    assert "ort vs ort traced: batch 1:" in out


def test_parallel_sessions_report_a_throughput(tmp_path):
    ckpt = small_checkpoint(tmp_path / "small.pt")
    graph = export_bucket(ckpt, 7, tmp_path / "model.onnx", "f")
    tokens = generate(8, 1, 2, 0, length=7).tokens
    assert concurrent_throughput(graph.path, tokens, workers=2, seconds=0.1, repeats=1) > 0
