"""The graph's signature: tensor names, dtypes and shapes, declared once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ContractError

INPUT_TOKENS = "tokens"  # int64 [batch, T], left padded with the PAD id
OUTPUT_LOGITS = "logits"  # float32 [batch, num_classes]
OUTPUT_ATTENTION = "memory_attention"  # float32 [batch, T]: fast-memory weight per past position, final step
BATCH_AXIS = "batch"

INPUT_DTYPE = "int64"
OUTPUT_DTYPE = "float32"
# Forbidden in an exported graph: the whole point of the export is that time and inner steps are unrolled.
LOOP_OPS = frozenset({"Loop", "Scan"})

TRITON_DTYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}
_FROM_TRITON = {v: k for k, v in TRITON_DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[str | int, ...]  # symbolic dims are strings


def input_specs(seq_len: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(INPUT_TOKENS, INPUT_DTYPE, (BATCH_AXIS, seq_len)),)


def output_specs(seq_len: int, num_classes: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(OUTPUT_LOGITS, OUTPUT_DTYPE, (BATCH_AXIS, num_classes)),
        TensorSpec(OUTPUT_ATTENTION, OUTPUT_DTYPE, (BATCH_AXIS, seq_len)),
    )


def normalize_dtype(dtype: str) -> str:
    """'tensor(int64)' (onnxruntime), 'int64', 'TYPE_INT64' (Triton) -> 'int64'; 'float' -> 'float32'."""
    d = dtype.strip()
    if d.startswith("tensor(") and d.endswith(")"):
        d = d[len("tensor(") : -1]
    d = _FROM_TRITON.get(d, d)
    return {"float": "float32", "double": "float64"}.get(d, d)


def check_io(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    seq_len: int,
    num_classes: int,
    path: str | Path,
) -> None:
    """Check a graph's inputs/outputs (as read by onnx, onnxruntime or a config.pbtxt) against the contract.

    Symbolic (string or None) first dims count as the batch axis; every other dim must match exactly.
    """
    check_specs("input", inputs, input_specs(seq_len), path)
    check_specs("output", outputs, output_specs(seq_len, num_classes), path)


def check_specs(
    kind: str,
    got: Sequence[TensorSpec],
    want: Sequence[TensorSpec],
    path: str | Path,
    expected_by: str = "the contract expects",
) -> None:
    """`got` must have `want`'s names, dtypes and dims (a string or None dim in `want` means dynamic).

    `expected_by` says where `want` comes from in the error message ("config.pbtxt declares", ...).
    """
    got_names = [g.name for g in got]
    want_names = [w.name for w in want]
    if sorted(got_names) != sorted(want_names):
        raise ContractError(path, f"{kind}s are {got_names}, {expected_by} {want_names}")
    by_name = {g.name: g for g in got}
    for w in want:
        g = by_name[w.name]
        if normalize_dtype(g.dtype) != normalize_dtype(w.dtype):
            raise ContractError(path, f"{kind} {w.name!r} has dtype {g.dtype}, {expected_by} {w.dtype}")
        if len(g.shape) != len(w.shape):
            raise ContractError(
                path, f"{kind} {w.name!r} has shape {list(g.shape)}, {expected_by} {list(w.shape)}"
            )
        for i, (gd, wd) in enumerate(zip(g.shape, w.shape, strict=True)):
            if wd is None or isinstance(wd, str):
                if not (gd is None or isinstance(gd, str)):
                    raise ContractError(path, f"{kind} {w.name!r} axis {i} must be dynamic ({wd}), got {gd}")
            elif gd != wd:
                raise ContractError(
                    path, f"{kind} {w.name!r} has shape {list(g.shape)}, {expected_by} {list(w.shape)}"
                )
