"""The stream (state-carrying) graph: random chunks through it equal the whole-sequence graphs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from contract import ONNX_FILENAME, read_config_pbtxt, scan_repository
from contract.stream import StreamKeys, stream_model_name
from export.onnx_export import all_nodes
from export.state_graph import build_state_graph
from export.stream_repository import export_stream_model, longest_bucket
from export.verify import verify_family_stream
from export.verify_stream import random_chunks, verify_stream
from model.checkpoint import load_checkpoint
from model.data import PAD_ID, generate

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "model_repository"
CHECKPOINT = REPO / "checkpoints" / "k26.pt"  # the bundled repository's source (make model)


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(CHECKPOINT)


def test_the_bundled_stream_model_equals_the_whole_sequence_graphs_on_random_chunks() -> None:
    report = verify_family_stream(BUNDLED, "fastweights", sequences=600, seed=3)
    assert report.ok, report.format()
    assert report.sequences == 600
    # every K the repository serves (the longest bucket's capacity), not a hard-coded range
    k_max = (longest_bucket(BUNDLED, "fastweights") - 3) // 2
    assert report.num_pairs == list(range(1, k_max + 1))


def test_a_stream_graph_of_a_different_model_fails_the_parity_check(checkpoint, tmp_path: Path) -> None:
    import dataclasses

    model = checkpoint.model()
    # λ halved: the decay weights of the memory no longer match the buckets
    model.config = dataclasses.replace(model.config, decay=model.config.decay * 0.5)
    proto = build_state_graph(model, 3, longest_bucket(BUNDLED, "fastweights") - 1)
    path = tmp_path / "wrong" / "1" / ONNX_FILENAME
    path.parent.mkdir(parents=True)
    path.write_bytes(proto.SerializeToString())
    buckets = [e for e in scan_repository(BUNDLED) if e.family == "fastweights"]
    report = verify_stream(path, buckets, sequences=300, tolerance=1e-4)
    assert not report.ok
    assert report.max_abs_logits > 1e-4


def test_the_stream_graph_is_unrolled_and_declares_its_state(checkpoint) -> None:
    proto = build_state_graph(checkpoint.model(), 4, 26)
    ops = {n.op_type for n in all_nodes(proto.graph)}
    assert not ops & {"Loop", "Scan", "If"}
    inputs = {
        i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in proto.graph.input
    }
    assert inputs == {"tokens": ["batch", 4], "state_h": ["batch", 50], "state_memory": ["batch", 26, 50]}


def test_the_matrix_state_form_gives_the_same_logits_as_the_shift_register(checkpoint) -> None:
    data = generate(64, 1, 12, 5, length=27)
    outs = {}
    for form, memory in (("shift-register", (26, 50)), ("matrix", (50, 50))):
        session = ort.InferenceSession(
            build_state_graph(checkpoint.model(), 3, 26, form).SerializeToString(),
            providers=["CPUExecutionProvider"],
        )
        h, mem = np.zeros((64, 50), np.float32), np.zeros((64, *memory), np.float32)
        for i in range(0, 27, 3):  # the left padding of the 27-token rows runs as PAD steps
            logits, _, h, mem = session.run(
                None, {"tokens": data.tokens[:, i : i + 3], "state_h": h, "state_memory": mem}
            )
        outs[form] = logits
    assert np.abs(outs["matrix"] - outs["shift-register"]).max() < 1e-4
    assert (outs["matrix"].argmax(1) == data.targets).mean() > 0.9


def test_a_pad_chunk_leaves_the_state_exactly_unchanged(checkpoint) -> None:
    session = ort.InferenceSession(
        build_state_graph(checkpoint.model(), 3, 26).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    h, mem = rng.random((2, 50), dtype=np.float32), rng.random((2, 26, 50), dtype=np.float32)
    _, _, h2, mem2 = session.run(None, {"tokens": np.full((2, 3), PAD_ID), "state_h": h, "state_memory": mem})
    assert np.array_equal(h, h2) and np.array_equal(mem, mem2)


def test_random_chunks_cover_the_row_and_are_left_padded() -> None:
    row = np.arange(1, 12)
    chunks = random_chunks(row, 3, np.random.default_rng(1), pad_id=0)
    flat = np.concatenate([c[c != 0] for c in chunks])
    assert np.array_equal(flat, row)
    assert all(len(c) == 3 and (c[: np.argmax(c != 0)] == 0).all() for c in chunks)


def test_the_stream_model_is_written_with_a_stateful_config_sized_by_the_buckets(
    checkpoint, tmp_path: Path
) -> None:
    for entry in scan_repository(BUNDLED):
        if entry.family == "fastweights" and entry.seq_len <= 11:
            shutil.copytree(entry.model_path.parent.parent, tmp_path / entry.name)
    path = export_stream_model(checkpoint, tmp_path, longest_bucket(tmp_path, "fastweights"), "fastweights")
    config = read_config_pbtxt(path.parent.parent / "config.pbtxt")
    assert config.name == stream_model_name("fastweights") and config.seq_len == 3
    assert "sequence_batching" in (path.parent.parent / "config.pbtxt").read_text()
    meta = dict(ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map)
    assert meta[StreamKeys.MEMORY_LEN] == "10" and meta[StreamKeys.MAX_PAIRS] == "4"  # T = 11: K <= 4
    assert verify_family_stream(tmp_path, "fastweights", sequences=200).ok
