"""Export: the export module computes the training model's function, the graphs are unrolled and honour the
contract, verification catches a wrong graph, and bad inputs give errors that name the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from contract import (
    INPUT_TOKENS,
    LOOP_OPS,
    OUTPUT_ATTENTION,
    OUTPUT_LOGITS,
    ContractError,
    MetadataKeys,
    TensorSpec,
    check_io,
    parse_metadata,
)
from export.__main__ import main as export_main
from export.graph import export_module
from export.onnx_export import (
    all_nodes,
    check_graph,
    export_bucket,
    graph_io,
    load_onnx,
    ort_optimize,
    trace_to_onnx,
)
from export.repository import export_repository
from export.verify import ParityError, make_session, verify_repository
from export.verify import main as verify_main
from model.checkpoint import Checkpoint, build_model, save_checkpoint
from model.config import ModelConfig
from model.data import PAD_ID, generate

ROOT = Path(__file__).resolve().parents[2]


def make_checkpoint(seed: int = 0, **overrides) -> Checkpoint:
    """A randomly initialised model is enough for parity; training adds nothing to what is compared."""
    cfg = ModelConfig(**{"hidden_size": 16, "embed_size": 12, "head_size": 20, **overrides})
    torch.manual_seed(seed)
    net = build_model(cfg)
    with torch.no_grad():  # move W away from 0.05·I so the recurrence matters
        if hasattr(net, "recurrent"):
            net.recurrent.weight.add_(0.3 * torch.randn_like(net.recurrent.weight))
    return Checkpoint(
        config=cfg, state_dict=net.state_dict(), metrics={"test": {"error": 0.5, "per_k": {1: {}}}}
    )


@pytest.fixture(scope="module")
def fast_ckpt_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "fast.pt"
    save_checkpoint(make_checkpoint(), path)
    return path


def _random_tokens(rng: np.random.Generator, n: int, seq_len: int, pad_anywhere: bool) -> torch.Tensor:
    tokens = rng.integers(1, 38, size=(n, seq_len))
    if pad_anywhere:
        tokens[rng.random((n, seq_len)) < 0.3] = PAD_ID
    else:  # left padding, as the service sends
        starts = rng.integers(0, seq_len, size=n)
        tokens[np.arange(seq_len)[None, :] < starts[:, None]] = PAD_ID
    return torch.from_numpy(tokens)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"inner_steps": 3},
        {"decay": 0.5, "fast_lr": 1.5},
        {"decay": 1.0},
        {"memory_form": "matrix"},
        {"kind": "irnn"},
        {"kind": "lstm"},
    ],
    ids=["default", "S=3", "lambda-eta", "no-decay", "matrix-reference", "irnn", "lstm"],
)
@pytest.mark.parametrize("pad_anywhere", [False, True], ids=["left-padded", "pad-anywhere"])
def test_export_module_computes_the_training_models_function(overrides, pad_anywhere):
    ckpt = make_checkpoint(**overrides)
    reference = ckpt.model()
    tokens = _random_tokens(np.random.default_rng(1), 300, 11, pad_anywhere)
    with torch.no_grad():
        ref_logits, ref_attn = reference(tokens)
        logits, attn = export_module(reference, 11)(tokens)
    assert torch.allclose(logits, ref_logits, atol=1e-5, rtol=0)
    assert torch.allclose(attn, ref_attn, atol=1e-5, rtol=0)
    if overrides.get("kind") in ("irnn", "lstm"):
        assert not attn.any()


@settings(max_examples=25, deadline=None)
@given(
    seq_len=st.integers(2, 14),
    decay=st.floats(0.0, 1.0),
    fast_lr=st.floats(0.0, 2.0),
    inner_steps=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_export_module_matches_for_any_length_decay_and_inner_steps(
    seq_len, decay, fast_lr, inner_steps, seed
):
    ckpt = make_checkpoint(seed % 7, decay=decay, fast_lr=fast_lr, inner_steps=inner_steps)
    reference = ckpt.model()
    tokens = _random_tokens(np.random.default_rng(seed), 16, seq_len, pad_anywhere=bool(seed % 2))
    with torch.no_grad():
        ref_logits, ref_attn = reference(tokens)
        logits, attn = export_module(reference, seq_len)(tokens)
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-5)
    assert torch.allclose(attn, ref_attn, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kind", ["fast", "irnn", "lstm"])
def test_exported_graph_is_unrolled_valid_and_honours_the_contract(kind, tmp_path):
    ckpt = make_checkpoint(kind=kind)
    graph = export_bucket(ckpt, 11, tmp_path / "model.onnx", family="f", source_sha256="abc")
    proto = onnx.load(str(graph.path))
    ops = {n.op_type for n in all_nodes(proto.graph)}  # If branches included
    assert not ops & LOOP_OPS
    # control flow only as the fast-weights graph's choice of form by batch size (export.builder)
    top = [n.op_type for n in proto.graph.node]
    if kind == "fast":
        assert top == ["Shape", "LessOrEqual", "If"]
    else:
        assert "If" not in ops
    onnx.checker.check_model(proto, full_check=True)
    meta = check_graph(proto, graph.path)
    assert meta.kind == kind and meta.seq_len == 11 and meta.family == "f" and meta.source_sha256 == "abc"
    assert meta.vocab[meta.pad_id] == "<pad>" and meta.answer_classes == tuple("0123456789")
    assert all(key in {p.key for p in proto.metadata_props} for key in MetadataKeys.REQUIRED)
    assert meta.metrics["test"]["per_k"] == {"1": {}}  # int keys made JSON-safe
    inputs, outputs = graph_io(proto)
    assert inputs == [TensorSpec(INPUT_TOKENS, "int64", ("batch", 11))]
    assert outputs == [
        TensorSpec(OUTPUT_LOGITS, "float32", ("batch", 10)),
        TensorSpec(OUTPUT_ATTENTION, "float32", ("batch", 11)),
    ]
    assert graph.nodes == len(all_nodes(proto.graph)) and graph.size_bytes == graph.path.stat().st_size


def full_length_path(graph: onnx.GraphProto) -> dict[str, int]:
    """Per branch of the batch-size If, the nodes a row without PAD runs: the wide branch as it is; in the
    single-row-windows branch its own nodes and those of the first window (the else of each window If)."""
    branches = {a.g.name: a.g for a in graph.node[-1].attribute}
    counts = {"wide": len(all_nodes(branches["wide"]))}
    windows = branches["single_row_windows"]
    first_if = next(n for n in windows.node if n.op_type == "If")
    first_window = next(a.g for a in first_if.attribute if a.name == "else_branch")
    counts["single_row_windows"] = len(windows.node) - 1 + len(all_nodes(first_window))
    return counts


@pytest.mark.parametrize(("branch", "budget"), [("single_row_windows", 7), ("wide", 15)])
def test_fast_weights_graph_grows_linearly_with_the_bucket_length(branch, budget, tmp_path):
    ckpt = make_checkpoint()
    graphs = {t: export_bucket(ckpt, t, tmp_path / f"{t}.onnx", "f") for t in (5, 11, 19)}
    for optimized in (False, True):
        nodes = {}
        for t, g in graphs.items():
            proto = onnx.load(str(g.path))
            nodes[t] = full_length_path((ort_optimize(proto, "all") if optimized else proto).graph)[branch]
        per_step = (nodes[19] - nodes[11]) / 8
        assert per_step == (nodes[11] - nodes[5]) / 6  # unrolled: a fixed number of nodes per time step
        assert per_step <= budget, nodes  # the builder's budget (docs/export.md)


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_graph_takes_any_batch_size(batch, tmp_path):
    ckpt = make_checkpoint()
    path = export_bucket(ckpt, 5, tmp_path / "model.onnx", "f").path
    tokens = generate(batch, 1, 1, 3, length=5).tokens
    logits, attn = make_session(path).run(None, {INPUT_TOKENS: tokens})
    with torch.no_grad():
        ref_logits, ref_attn = ckpt.model()(torch.from_numpy(tokens))
    assert logits.shape == (batch, 10) and attn.shape == (batch, 5)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(attn, ref_attn.numpy(), atol=1e-4, rtol=0)


def test_dynamo_exporter_gives_an_equivalent_graph():
    ckpt = make_checkpoint()
    proto = trace_to_onnx(ckpt.model(), 7, dynamo=True)
    assert not {n.op_type for n in proto.graph.node} & LOOP_OPS
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    tokens = generate(33, 1, 2, 5, length=7).tokens
    logits, attn = session.run([OUTPUT_LOGITS, OUTPUT_ATTENTION], {INPUT_TOKENS: tokens})
    with torch.no_grad():
        ref_logits, ref_attn = ckpt.model()(torch.from_numpy(tokens))
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(attn, ref_attn.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["fast", "irnn", "lstm"])
def test_verification_passes_for_every_kind_over_all_k_and_odd_batch_sizes(kind, tmp_path):
    ckpt = make_checkpoint(kind=kind)
    export_repository(ckpt, tmp_path, buckets=(5, 9), family=kind)
    report = verify_repository(ckpt, tmp_path, family=kind, sequences=600, batch_sizes=(1, 7, 256))
    assert report.ok and report.sequences == 600
    assert [b.num_pairs for b in report.buckets] == [[1], [1, 2, 3]]
    assert report.max_abs_logits <= 1e-4 and report.argmax_mismatches == 0
    assert "PASS" in report.format()


def test_verification_fails_with_a_typed_error_when_a_weight_is_off(tmp_path):
    ckpt = make_checkpoint()
    export_repository(ckpt, tmp_path, buckets=(7,), family="f")
    path = tmp_path / "f_t7" / "1" / "model.onnx"
    proto = onnx.load(str(path))
    # the input table of each branch of the batch-size If, its largest constant: wide (2V, H) (C·x + b, then
    # h(0)), single row (V + V² + V, H) (h(0), h(1) of each first pair, C·x + b; at T = 7 the windows start
    # at 0, 2 and 4 = T − 3, so no PAD step is ever computed and no LayerNorm-bias rows are needed)
    tables = [
        max(attr.g.initializer, key=lambda init: init.dims[0]) for attr in proto.graph.node[-1].attribute
    ]
    assert sorted(tuple(t.dims) for t in tables) == [(2 * 38, 16), (38 + 38**2 + 38, 16)]
    for table in tables:
        values = numpy_helper.to_array(table).copy()
        values[1:] += 1e-3  # a small drift, as a wrong export would give
        table.CopyFrom(numpy_helper.from_array(values, table.name))
    onnx.save(proto, str(path))
    with pytest.raises(ParityError) as err:
        verify_repository(ckpt, tmp_path, family="f", sequences=300)
    assert not err.value.report.ok
    assert err.value.report.max_abs_logits > 1e-4
    assert "FAIL" in str(err.value)


# --- bad input ----------------------------------------------------------------------------------------------


def test_missing_onnx_file_is_named(tmp_path):
    with pytest.raises(ContractError, match=r"nope\.onnx: no such ONNX file"):
        load_onnx(tmp_path / "nope.onnx")


def test_truncated_onnx_file_is_named(tmp_path):
    good = export_bucket(make_checkpoint(), 5, tmp_path / "good.onnx", "f").path
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ContractError, match=r"truncated\.onnx: "):
        load_onnx(bad)
    with pytest.raises(ContractError, match=r"truncated\.onnx: onnxruntime cannot load it"):
        make_session(bad)


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 20)
    with pytest.raises(ContractError, match=r"notes\.onnx: (not a readable ONNX model|not an ONNX model)"):
        load_onnx(bad)


def _tiny_graph(input_name="tokens", input_type=TensorProto.INT64, seq_len=5, props=None) -> onnx.ModelProto:
    """A valid ONNX graph with a chosen input: logits = 0, attention = 0."""
    inp = helper.make_tensor_value_info(input_name, input_type, ["batch", seq_len])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    attn = helper.make_tensor_value_info("memory_attention", TensorProto.FLOAT, ["batch", seq_len])
    nodes = [
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "zero"], ["memory_attention"]),
        helper.make_node("ReduceSum", ["memory_attention"], ["s"], keepdims=1),
        helper.make_node("Expand", ["s", "shape10"], ["logits"]),
    ]
    init = [
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(np.array([1, 10], np.int64), "shape10"),
    ]
    graph = helper.make_graph(nodes, "tiny", [inp], [logits, attn], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {
        MetadataKeys.FAMILY: "f",
        MetadataKeys.SEQ_LEN: str(seq_len),
        MetadataKeys.VOCAB: '["<pad>", "a"]',
        MetadataKeys.PAD_ID: "0",
        MetadataKeys.ANSWER_CLASSES: '["0","1","2","3","4","5","6","7","8","9"]',
        MetadataKeys.MODEL_CONFIG: '{"kind": "fast"}',
    }
    helper.set_model_props(model, {**meta, **(props or {})})
    return model


def test_tiny_graph_helper_builds_a_graph_that_passes():
    check_graph(_tiny_graph(), "tiny.onnx")  # so the failures below are about the one thing changed


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (_tiny_graph(input_name="x"), r"inputs are \['x'\], the contract expects \['tokens'\]"),
        (_tiny_graph(input_type=TensorProto.INT32), r"input 'tokens' has dtype int32"),
        (
            _tiny_graph(props={MetadataKeys.SEQ_LEN: "7"}),
            r"input 'tokens' has shape \['batch', 5\], the contract expects \['batch', 7\]",
        ),
        (_tiny_graph(props={MetadataKeys.PAD_ID: "9"}), r"metadata pad id 9 is outside the vocabulary"),
    ],
    ids=["input-name", "input-dtype", "seq-len", "pad-id"],
)
def test_a_graph_whose_inputs_or_metadata_break_the_contract_is_rejected(graph, message, tmp_path):
    path = tmp_path / "odd.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ContractError, match=r"odd\.onnx: " + message):
        check_graph(load_onnx(path), path)


def test_missing_metadata_keys_are_listed():
    with pytest.raises(
        ContractError, match=r"m\.onnx: metadata_props lack required keys \['fastweights\.vocab'"
    ):
        parse_metadata({MetadataKeys.FAMILY: "f", MetadataKeys.SEQ_LEN: "5"}, "m.onnx")


def test_a_fixed_batch_axis_breaks_the_contract():
    specs = [TensorSpec(INPUT_TOKENS, "tensor(int64)", (1, 5))]
    outs = [TensorSpec(OUTPUT_LOGITS, "float", ("b", 10)), TensorSpec(OUTPUT_ATTENTION, "float32", (None, 5))]
    with pytest.raises(ContractError, match="axis 0 must be dynamic"):
        check_io(specs, outs, 5, 10, "m.onnx")
    check_io([TensorSpec(INPUT_TOKENS, "tensor(int64)", (None, 5))], outs, 5, 10, "m.onnx")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "export", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_cli_exports_and_verifies_a_repository(fast_ckpt_path, tmp_path):
    result = _run_cli(
        str(fast_ckpt_path), "--repository", str(tmp_path), "--buckets", "5,7", "--verify-sequences", "500"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "fastweights_t7/1/model.onnx" in result.stdout and "nodes" in result.stdout and "KiB" in result.stdout
    )
    assert "PASS: 500 sequences" in result.stdout
    # the stateful model of memory sessions too, sized by the longest bucket (K <= 2) and verified
    assert "PASS: stream fastweights_stream (C=3, P=6): 500 sequences (K 1-2)" in result.stdout
    names = ["fastweights_stream", "fastweights_t5", "fastweights_t7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_cli_names_a_checkpoint_of_an_unknown_kind(tmp_path, capsys):
    path = tmp_path / "gru.pt"
    save_checkpoint(make_checkpoint(), path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["kind"] = "gru"
    torch.save(payload, path)
    assert export_main([str(path), "--repository", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err
    assert "gru.pt" in err and "unknown model kind 'gru'" in err
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint"], ids=["missing", "empty", "garbage"])
def test_cli_names_a_missing_or_unreadable_checkpoint(content, tmp_path, capsys):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    assert export_main([str(path), "--repository", str(tmp_path / "repo")]) == 2
    assert f"{path}:" in capsys.readouterr().err


def test_verify_cli_reports_and_exits_non_zero_on_mismatch(fast_ckpt_path, tmp_path, capsys):
    export_repository(fast_ckpt_path, tmp_path, buckets=(5,), family="fastweights")
    assert verify_main([str(fast_ckpt_path), "--repository", str(tmp_path), "--sequences", "200"]) == 0
    out = capsys.readouterr().out
    assert "max|Δlogits|" in out and "PASS: 200 sequences" in out
    other = tmp_path / "other.pt"
    save_checkpoint(make_checkpoint(seed=1), other)
    assert verify_main([str(other), "--repository", str(tmp_path), "--sequences", "200"]) == 3
    out = capsys.readouterr().out
    assert "FAIL" in out and "source checkpoint hash differs" in out
