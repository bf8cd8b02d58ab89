"""The built fast-weights graph (export.builder): both forms and their If compute the training model's
function on left-padded input, for any length, λ, η and S, at batch sizes on both sides of the switch."""

from __future__ import annotations

import collections
import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.graph_forms import COMPARISON_FORMS, build_graph
from contract import INPUT_TOKENS, LOOP_OPS, OUTPUT_ATTENTION, OUTPUT_LOGITS
from export.builder import (
    FORMS,
    PAIR_TABLE_MAX_ROWS,
    SMALL_FORMS,
    WINDOWS,
    build_fast_weights_graph,
    window_starts,
)
from export.onnx_export import all_nodes, ort_optimize
from model.checkpoint import Checkpoint, build_model
from model.config import ModelConfig
from model.data import PAD_ID, generate


def make_checkpoint(seed: int = 0, **overrides) -> Checkpoint:
    cfg = ModelConfig(**{"hidden_size": 16, "embed_size": 12, "head_size": 20, **overrides})
    torch.manual_seed(seed)
    net = build_model(cfg)
    with torch.no_grad():  # move W, γ and β away from their initial values so that every term matters
        net.recurrent.weight.add_(0.3 * torch.randn_like(net.recurrent.weight))
        net.layer_norm.weight.mul_(1 + 0.3 * torch.randn_like(net.layer_norm.weight))
        net.layer_norm.bias.add_(0.3 * torch.randn_like(net.layer_norm.bias))
    return Checkpoint(config=cfg, state_dict=net.state_dict(), metrics={})


def left_padded(rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    """Random tokens, each row left padded to a random length (at least one real token)."""
    tokens = rng.integers(1, 38, size=(n, seq_len))
    starts = rng.integers(0, seq_len, size=n)
    tokens[np.arange(seq_len)[None, :] < starts[:, None]] = PAD_ID
    return tokens


def run(proto: onnx.ModelProto, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, attn = session.run([OUTPUT_LOGITS, OUTPUT_ATTENTION], {INPUT_TOKENS: tokens})
    return logits, attn


def assert_matches(model, proto, tokens, atol=1e-4, rtol=1e-5) -> None:
    with torch.no_grad():
        ref_logits, ref_attn = (t.numpy() for t in model(torch.from_numpy(tokens)))
    logits, attn = run(proto, tokens)
    assert logits.shape == ref_logits.shape and attn.shape == ref_attn.shape
    np.testing.assert_allclose(logits, ref_logits, atol=atol, rtol=rtol)
    np.testing.assert_allclose(attn, ref_attn, atol=atol, rtol=rtol)
    assert (logits.argmax(-1) == ref_logits.argmax(-1)).all()


# Every form: the shipped ones (export.builder) and those kept for comparison (bench/graph_forms.py).
ALL_FORMS = [*FORMS, *COMPARISON_FORMS]
ALL_SMALL_FORMS = {**SMALL_FORMS, **{name: rows for name, (_, rows) in COMPARISON_FORMS.items()}}
SINGLE_ROW_FORMS = [f for f in ALL_FORMS if f.startswith("single-row")]  # a fixed batch of 1 when alone


@pytest.mark.parametrize("form", [f for f in ALL_FORMS if f not in SINGLE_ROW_FORMS])
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 7, 33, 256, 257])
def test_every_form_matches_the_training_model_on_both_sides_of_the_switch(form, batch):
    model = make_checkpoint().model()
    proto = build_graph(model, 11, form=form)
    onnx.checker.check_model(proto, full_check=True)
    assert_matches(model, proto, left_padded(np.random.default_rng(batch), batch, 11))


@pytest.mark.parametrize("small_form", sorted(ALL_SMALL_FORMS))
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 7, 256])
def test_the_if_matches_with_either_small_form_at_every_batch_size(small_form, batch):
    model = make_checkpoint(1).model()
    proto = build_graph(model, 11, small_form=small_form)
    onnx.checker.check_model(proto, full_check=True)
    assert_matches(model, proto, left_padded(np.random.default_rng(batch + 100), batch, 11))


@pytest.mark.parametrize("form", SINGLE_ROW_FORMS)
@pytest.mark.parametrize("seq_len", [2, 3, 4, 5, 6, 11, 19, 27])
def test_each_single_row_form_matches_one_row_at_a_time_for_every_padding(form, seq_len):
    """Every left padding, from none to all PAD but the last token: the first pair's table row, every window
    and the last window's masked PAD steps included."""
    model = make_checkpoint(2).model()
    proto = build_graph(model, seq_len, form=form)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # it only takes one row
    rng = np.random.default_rng(seq_len)
    tokens = rng.integers(1, 38, size=(seq_len, seq_len))
    tokens[np.arange(seq_len)[None, :] < np.arange(seq_len)[:, None]] = PAD_ID  # row i: i leading PADs
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for row in tokens:
        x = row[None]
        logits, attn = session.run([OUTPUT_LOGITS, OUTPUT_ATTENTION], {INPUT_TOKENS: x})
        with torch.no_grad():
            ref_logits, ref_attn = (t.numpy() for t in model(torch.from_numpy(x)))
        np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(attn, ref_attn, atol=1e-4, rtol=1e-5)


def test_the_single_row_form_gathers_the_first_pair_and_runs_seven_nodes_per_step():
    model = make_checkpoint().model()
    assert model.config.vocab_size**2 <= PAIR_TABLE_MAX_ROWS
    counts = {}
    for seq_len in (5, 11):
        proto = build_graph(model, seq_len, form="single-row")
        table = max((i for i in proto.graph.initializer), key=lambda i: i.dims[0])
        # h~(0), the V² pairs, C·x + b and one bias per computed step (t = 2 .. T−1)
        assert list(table.dims) == [38 + 38**2 + 38 + 38 * (seq_len - 2), 16]
        fused = ort_optimize(proto, "all")
        counts[seq_len] = collections.Counter(n.op_type for n in fused.graph.node)
        assert counts[seq_len]["Transpose"] == 0 and counts[seq_len]["Mul"] == 0  # scalars in Gemm's alpha
        assert counts[seq_len]["LayerNormalization"] == seq_len - 2  # steps 0 and 1 come from the table
    per_step = {op: (counts[11][op] - counts[5][op]) / 6 for op in counts[11]}
    assert sum(per_step.values()) == 7, per_step
    assert per_step["Gemm"] == 3 and per_step["Concat"] == 1 and per_step["Relu"] == 2


def test_the_matrix_form_carries_the_fast_weights_in_six_nodes_per_step():
    """The lever measured against the shipped form (docs/export.md): A(t) (H, H) updated by one Gemm, read by
    one Gemm, the history stacked once at the end for memory_attention."""
    model = make_checkpoint().model()
    counts = {}
    for seq_len in (5, 11):
        fused = ort_optimize(build_graph(model, seq_len, form="single-row-matrix"), "all")
        counts[seq_len] = collections.Counter(n.op_type for n in fused.graph.node)
        assert counts[seq_len]["Concat"] == 1  # the states, once, for memory_attention
    per_step = {op: (counts[11][op] - counts[5][op]) / 6 for op in counts[11]}
    assert sum(per_step.values()) == 6, per_step
    assert per_step["Gemm"] == 3 and per_step["Relu"] == 2 and per_step["LayerNormalization"] == 1


@settings(max_examples=20, deadline=None)
@given(
    seq_len=st.integers(2, 14),
    decay=st.one_of(st.just(0.0), st.just(1.0), st.floats(0.01, 1.0)),
    fast_lr=st.floats(0.0, 2.0),
    inner_steps=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_built_graph_matches_for_any_length_decay_and_inner_steps(seq_len, decay, fast_lr, inner_steps, seed):
    """Every form is as exact as the float32 training model: compared with a float64 run of the same model,
    no further off than 1e-4 plus 4× the float32 model's own error. (Random weights with extreme λ, η and S
    can be ill-conditioned: hypothesis found rows where torch's float32 output is 1.3e-3 from float64, and
    two float32 orders of evaluation then differ by more than any fixed tolerance.)"""
    # λ = 0 and small λ take the explicit-weights path of the few-nodes form (the scale would be too large)
    model = make_checkpoint(seed % 7, decay=decay, fast_lr=fast_lr, inner_steps=inner_steps).model()
    exact = copy.deepcopy(model).double()
    tokens = left_padded(np.random.default_rng(seed), 40, seq_len)
    with torch.no_grad():
        ref32 = [t.numpy() for t in model(torch.from_numpy(tokens))]
        ref64 = [t.numpy() for t in exact(torch.from_numpy(tokens))]
    bounds = [1e-4 + 4 * np.abs(r32 - r64).max() for r32, r64 in zip(ref32, ref64, strict=True)]
    outputs = {form: run(build_graph(model, seq_len, form=form), tokens) for form in ("few-nodes", "wide")}
    for form in SINGLE_ROW_FORMS:
        single_row = build_graph(model, seq_len, form=form)
        rows = [run(single_row, row[None]) for row in tokens[:4]]
        outputs[form] = tuple(np.concatenate(part) for part in zip(*rows, strict=True))
    for form, got in outputs.items():
        for name, out, r64, bound in zip(("logits", "attention"), got, ref64, bounds, strict=True):
            err = np.abs(out - r64[: len(out)]).max()
            assert err <= bound, (form, name, err, bound)


def test_heavily_padded_queries_of_the_task_match_in_every_bucket():
    """K = 1 in T = 27: 22 leading PAD steps that must leave the state untouched."""
    model = make_checkpoint(3).model()
    for seq_len in (5, 11, 19, 27):
        tokens = generate(64, 1, 1, seq_len, length=seq_len).tokens
        assert (tokens[:, : seq_len - 5] == PAD_ID).all()
        assert_matches(model, build_graph(model, seq_len), tokens)
        assert_matches(model, build_graph(model, seq_len), tokens[:3])
        assert_matches(model, build_graph(model, seq_len), tokens[:1])


@pytest.mark.parametrize(
    ("small_form", "limit_value"), [("single-row-windows", 1), ("single-row", 1), ("few-nodes", 3)]
)
def test_the_graph_switches_form_at_the_batch_size_limit(small_form, limit_value):
    proto = build_graph(make_checkpoint().model(), 7, small_form=small_form)
    shape, less, branch = proto.graph.node
    assert (shape.op_type, less.op_type, branch.op_type) == ("Shape", "LessOrEqual", "If")
    limit = next(i for i in proto.graph.initializer if i.name == less.input[1])
    assert onnx.numpy_helper.to_array(limit).tolist() == [limit_value] == [ALL_SMALL_FORMS[small_form]]
    # the weights live in the branches: outer-scope values would reach the If as per-call implicit inputs
    assert [i.name for i in proto.graph.initializer] == [limit.name]
    branches = {a.name: a.g for a in branch.attribute}
    then_branch, else_branch = branches["then_branch"], branches["else_branch"]
    assert (then_branch.name, else_branch.name) == (small_form.replace("-", "_"), "wide")
    # the small branch attends with (batched) matrix products, the wide one with ReduceSum over H
    assert "ReduceSum" not in {n.op_type for n in then_branch.node}
    assert "ReduceSum" in {n.op_type for n in else_branch.node}


def executed(proto: onnx.ModelProto, tokens: np.ndarray, tmp_path) -> collections.Counter:
    """The op types of the kernels onnxruntime ran for one call (its profiler), If branches included."""
    import json

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {INPUT_TOKENS: tokens})
    events = json.loads(Path(session.end_profiling()).read_text())
    return collections.Counter(
        e["args"]["op_name"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
    )


@pytest.mark.parametrize("seq_len", [11, 19])
def test_the_windows_form_runs_only_the_steps_of_the_window_a_row_starts_in(seq_len, tmp_path):
    """No work on leading PAD steps: a row whose first real token is at f runs the steps of the window that
    starts at the largest start <= f (one LayerNormalization per step, none for its two table steps), and
    the first computed step of a window needs no Concat (its memory is the gathered block)."""
    model = make_checkpoint(4).model()
    proto = build_graph(model, seq_len, form="single-row-windows")
    starts = window_starts(seq_len)
    assert starts == list(range(0, 2 * min(WINDOWS, (seq_len - 1) // 2), 2))
    rng = np.random.default_rng(seq_len)
    for first in range(seq_len):
        row = rng.integers(1, 38, size=(1, seq_len))
        row[0, :first] = PAD_ID
        start = max(s for s in starts if s <= first)
        steps = seq_len - start - 2
        ran = executed(proto, row, tmp_path)
        assert ran["LayerNormalization"] == steps, (first, start)
        assert ran["Concat"] == steps - 1 and ran["If"] == min(starts.index(start) + 1, len(starts) - 1)
        if first > start + 2:  # only the last window takes rows that start later (PAD steps masked)
            assert start == starts[-1]


def test_no_loops_and_onnxruntime_fuses_the_scalars_of_the_few_nodes_form():
    proto = build_graph(make_checkpoint().model(), 11, form="few-nodes")
    assert not {n.op_type for n in all_nodes(proto.graph)} & LOOP_OPS
    fused = ort_optimize(proto, "all")
    ops = [n.op_type for n in fused.graph.node]
    assert "Transpose" not in ops and "SkipLayerNormalization" not in ops
    assert ops.count("Mul") == 0  # the decay scalars and 1/c(t−1) became FusedMatMul's alpha
    assert ops.count("LayerNormalization") == 10


def test_a_pad_inside_a_sequence_is_outside_the_contract():
    """Documented limit: the graph assumes left padding, so an inner PAD is not the training model's no-op."""
    model = make_checkpoint().model()
    tokens = left_padded(np.random.default_rng(0), 8, 11)
    tokens[:, 5] = PAD_ID
    with torch.no_grad():
        ref_logits, _ = model(torch.from_numpy(tokens))
    logits, _ = run(build_graph(model, 11), tokens)
    assert np.abs(logits - ref_logits.numpy()).max() > 1e-3


def test_bad_arguments_are_rejected():
    model = make_checkpoint().model()
    with pytest.raises(ValueError, match="seq_len"):
        build_graph(model, 1)
    with pytest.raises(ValueError, match="form"):
        build_graph(model, 5, form="fastest")
    with pytest.raises(ValueError, match="small_form"):
        build_graph(model, 5, small_form="wide")


def test_the_shipped_builder_has_only_the_shipped_forms_the_others_live_in_bench():
    model = make_checkpoint().model()
    for form in COMPARISON_FORMS:
        with pytest.raises(ValueError, match="form must be one of"):
            build_fast_weights_graph(model, 5, form=form)
    assert build_graph(model, 5, form="few-nodes").graph.node  # available through bench.graph_forms
