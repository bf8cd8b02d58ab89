"""Checkpoint -> one ONNX graph per length bucket, time loop and inner steps unrolled, metadata embedded.

Fast-weights checkpoints are not traced: `export.builder` writes their graph node by node from the weights
(fewer and larger nodes: 1.1-1.5× faster at batch 1 and 1.4-1.5× at batch 256 than the traced export
module, measured side by side; docs/export.md). The traced graph stays available (``traced=True``;
``dynamo=True`` implies it) for the baselines, which are exported as they are, and for comparison.

Tracing exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``, opset 17), chosen by
measurement on the export module of `export.graph` (T=11, H=50; `python -m bench.inference --levers`,
docs/export.md):

* faster under onnxruntime: 1.2-1.3× the throughput at batch 256 and 1.1-1.2× at batch 1 (one core, CPU
  time, same run; e.g. 131k against 106k seq/s); onnxruntime fuses the dynamo graph differently (Add +
  LayerNormalization into SkipLayerNormalization, among others) and that runs slower at these sizes;
* smaller file: 63 KiB against 148 KiB, with about the same node count (155 vs 156; no Loop/Scan either way);
* about 40× quicker to run (0.2 s against 8-11 s per bucket), which keeps the export tests and
  ``make model`` quick.

It is deprecated since torch 2.9 but present and tested in the pinned torch 2.13. ``dynamo=True`` (opset 18)
stays available (``python -m export --dynamo``) and passes the same verification.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import onnx
import torch
from torch import nn

from contract import (
    BATCH_AXIS,
    INPUT_TOKENS,
    LOOP_OPS,
    OUTPUT_ATTENTION,
    OUTPUT_LOGITS,
    ContractError,
    ModelMetadata,
    TensorSpec,
    check_io,
    output_specs,
    parse_metadata,
)
from export.builder import OPSET as BUILDER_OPSET
from export.builder import build_fast_weights_graph
from export.graph import export_module
from model.checkpoint import Checkpoint, code_version
from model.config import ModelConfig
from model.fastweights import FastWeightsRNN

OPSET = 17  # LayerNormalization is a single op from opset 17
DYNAMO_OPSET = 18  # the dynamo exporter's own opset (it cannot convert its Pad down to 17)
GRAPH_DESCRIPTION = {
    "fast": "built node by node (export.builder): If on the batch size, 1 row a single-row branch "
    "(If chain on the first real token's position: only the steps from the window it starts in run; 2-D "
    "Gemms, decay weights in the state's scale, h(0) and h(1) gathered from tables), more a wide branch "
    "(time-major element-wise attention, PAD masked); attention form, embedding·C folded into one table, "
    "constant decay weights (left padding)",
    "fast-traced": "attention form, embedding·C folded into one table, decay weights precomputed, "
    "PAD via Where",
    "irnn": "training module traced as is",
    "lstm": "training module traced as is",
}


@dataclass(frozen=True)
class ExportedGraph:
    path: Path
    seq_len: int
    nodes: int  # in the saved file, inside If branches included
    nodes_optimized: (
        int  # after onnxruntime's full graph optimization (what actually runs), branches included
    )
    size_bytes: int
    op_counts: dict[str, int]
    branch_nodes: dict[str, int] = dataclasses.field(default_factory=dict)  # per If branch, in the file
    branch_nodes_optimized: dict[str, int] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """'161 nodes (149 after onnxruntime's optimizer)' or per branch for an If graph."""
        if not self.branch_nodes:
            return f"{self.nodes} nodes ({self.nodes_optimized} after onnxruntime's optimizer)"
        return ", ".join(
            f"{name}: {n} nodes ({self.branch_nodes_optimized.get(name, '?')} after onnxruntime's optimizer)"
            for name, n in self.branch_nodes.items()
        )


def opset_for(dynamo: bool) -> int:
    return DYNAMO_OPSET if dynamo else OPSET


def exporter_name(dynamo: bool, built: bool = False) -> str:
    if built:
        return f"export.builder (onnx {onnx.__version__}) opset={BUILDER_OPSET}"
    return f"torch {torch.__version__} dynamo={dynamo} opset={opset_for(dynamo)}"


def is_built(config: ModelConfig, dynamo: bool = False, traced: bool = False) -> bool:
    """Whether `export_bucket` writes the graph with `export.builder` (fast weights) or traces it."""
    return config.kind == "fast" and not (dynamo or traced)


def build_metadata(
    ckpt: Checkpoint,
    seq_len: int,
    family: str,
    source_sha256: str,
    dynamo: bool = False,
    traced: bool = False,
    source_checkpoint: str = "",
) -> ModelMetadata:
    vocab = ckpt.vocab
    built = is_built(ckpt.config, dynamo, traced)
    return ModelMetadata(
        family=family,
        seq_len=seq_len,
        vocab=vocab.tokens,
        pad_id=vocab.pad_id,
        answer_classes=vocab.answer_classes,
        model_config=ckpt.config.to_dict(),
        metrics=cast(dict[str, Any], _jsonable(ckpt.metrics)),
        source_sha256=source_sha256,
        exporter=exporter_name(dynamo, built),
        opset=BUILDER_OPSET if built else opset_for(dynamo),
        code_version=code_version(),
        graph=GRAPH_DESCRIPTION.get(
            ckpt.config.kind + ("" if built or ckpt.config.kind != "fast" else "-traced"), ""
        ),
        source_checkpoint=source_checkpoint,
        source_figures=source_figures(ckpt),
    )


def source_figures(ckpt: Checkpoint) -> dict[str, Any]:
    """The few numbers that say what a graph's checkpoint is and how good: what the service shows with it.

    Errors are on the checkpoint's own fixed validation and test splits (its K range, `k_range`).
    """
    args, metrics = ckpt.train_args, ckpt.metrics
    figures: dict[str, Any] = {
        "kind": ckpt.config.kind,
        "hidden_size": ckpt.config.hidden_size,
        "memory_form": ckpt.config.memory_form,
        "steps": ckpt.step,
        "seed": ckpt.seed,
    }
    if "k_min" in args and "k_max" in args:
        figures["k_range"] = [args["k_min"], args["k_max"]]
    if args.get("init_from"):
        figures["init_from"] = Path(str(args["init_from"])).name
    for split in ("valid", "test"):
        report = metrics.get(split)
        if isinstance(report, dict) and "error" in report:
            figures[f"{split}_error"] = report["error"]
            figures[f"{split}_n"] = report.get("n")
    return figures


def _jsonable(value: object) -> object:
    """Metrics carry int keys (per K); JSON wants strings. Keep everything else as is."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def trace_to_onnx(model: nn.Module, seq_len: int, dynamo: bool = False) -> onnx.ModelProto:
    """The bare graph (no metadata) of `model` for sequences of exactly `seq_len` tokens."""
    module = export_module(model, seq_len)
    example = torch.ones(3, seq_len, dtype=torch.int64)  # batch 3: never confused with a fixed 1
    inputs, outputs = [INPUT_TOKENS], [OUTPUT_LOGITS, OUTPUT_ATTENTION]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and constant-folding notes
        if dynamo:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=DYNAMO_OPSET,
                dynamic_shapes={"tokens": {0: torch.export.Dim(BATCH_AXIS)}},
                verbose=False,
                input_names=inputs,
                output_names=outputs,
            )
            assert program is not None
            proto = program.model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(
                module,
                (example,),
                buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file-like objects too
                dynamo=False,
                opset_version=OPSET,
                dynamic_axes={n: {0: BATCH_AXIS} for n in (*inputs, *outputs)},
                do_constant_folding=True,
                input_names=inputs,
                output_names=outputs,
            )
            proto = onnx.load_from_string(buf.getvalue())
    config = cast(ModelConfig, model.config)
    _declare_output_shapes(proto, seq_len, config.num_classes)
    return proto


def _declare_output_shapes(proto: onnx.ModelProto, seq_len: int, num_classes: int) -> None:
    """Write the contract's output shapes into the graph where tracing left a dim symbolic.

    The baselines' zero attention is ``new_zeros(B, T)``, whose T the tracer records as a computed dim.
    """
    specs = {s.name: s for s in output_specs(seq_len, num_classes)}
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, want in zip(dims, specs[out.name].shape, strict=True):
            if isinstance(want, int):
                dim.Clear()
                dim.dim_value = want
            elif not dim.HasField("dim_value"):
                dim.dim_param = want


def ort_optimize(proto: onnx.ModelProto, level: str = "basic") -> onnx.ModelProto:
    """Run onnxruntime's graph optimizer and return the optimized graph.

    "basic" keeps standard ONNX ops only (constant folding, redundant-node elimination), so the result
    still passes onnx.checker and loads in any runtime (Triton's included); "all" adds onnxruntime's own
    fused ops (FusedMatMul, SkipLayerNormalization, ...) and is what a session runs, used here to count nodes.
    """
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[level]
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3  # the "hardware specific" note on saving an ALL-level graph
        ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))


def graph_io(proto: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or BATCH_AXIS) for d in t.shape.dim
        )
        return TensorSpec(v.name, dtype, shape)

    initializers = {i.name for i in proto.graph.initializer}
    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in proto.graph.output]


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node of a graph, the nodes of its subgraphs (If branches) included."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(all_nodes(attr.g))
    return nodes


def branch_node_counts(graph: onnx.GraphProto) -> dict[str, int]:
    """Nodes per If branch (recursively), keyed by the branch graph's name; {} for a graph without If."""
    return {
        attr.g.name: len(all_nodes(attr.g))
        for node in graph.node
        for attr in node.attribute
        if attr.type == onnx.AttributeProto.GRAPH
    }


def check_graph(proto: onnx.ModelProto, path: str | Path) -> ModelMetadata:
    """Everything a consumer relies on: valid ONNX, no loops, the contract's I/O, complete metadata."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ContractError(path, f"onnx.checker rejects the graph: {str(exc).splitlines()[0]}") from None
    loops = sorted({n.op_type for n in all_nodes(proto.graph)} & LOOP_OPS)
    if loops:
        raise ContractError(path, f"graph contains {loops} nodes; the time loop must be unrolled")
    meta = parse_metadata({p.key: p.value for p in proto.metadata_props}, path)
    inputs, outputs = graph_io(proto)
    check_io(inputs, outputs, meta.seq_len, meta.num_classes, path)
    return meta


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """onnx.load with a clear error for a missing, truncated or non-ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(path, "no such ONNX file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ContractError(path, f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not proto.graph.node:
        raise ContractError(path, "not an ONNX model (empty graph; truncated or a different file?)")
    return proto


def export_bucket(
    ckpt: Checkpoint,
    seq_len: int,
    path: str | Path,
    family: str,
    source_sha256: str = "",
    dynamo: bool = False,
    traced: bool = False,
    source_checkpoint: str = "",
) -> ExportedGraph:
    """Export one length bucket to `path`, checked against the contract; returns size and node counts.

    Fast weights: the graph of `export.builder` (unless `traced` or `dynamo`); baselines: traced.
    """
    path = Path(path)
    if is_built(ckpt.config, dynamo, traced):
        # written as it should run: onnxruntime's basic level would only rename and reorder it
        proto = build_fast_weights_graph(cast(FastWeightsRNN, ckpt.model()), seq_len)
    else:
        proto = ort_optimize(trace_to_onnx(ckpt.model(), seq_len, dynamo), "basic")
    meta = build_metadata(ckpt, seq_len, family, source_sha256, dynamo, traced, source_checkpoint)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())
    proto.producer_name = "fastweights-serve"
    proto.producer_version = meta.code_version
    proto.doc_string = f"{family} ({ckpt.config.kind}), T={seq_len}: {meta.graph}"
    check_graph(proto, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    fused = ort_optimize(proto, "all")
    return ExportedGraph(
        path=path,
        seq_len=seq_len,
        nodes=len(all_nodes(proto.graph)),
        nodes_optimized=len(all_nodes(fused.graph)),
        size_bytes=path.stat().st_size,
        op_counts=dict(collections.Counter(n.op_type for n in all_nodes(proto.graph))),
        branch_nodes=branch_node_counts(proto.graph),
        branch_nodes_optimized=branch_node_counts(fused.graph),
    )
