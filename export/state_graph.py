"""The state-carrying ("stream") graph: state in, one chunk of tokens, state out (contract:
`contract.stream`). Unrolled like the whole-sequence graphs (no Loop/Scan), written node by node.

Two state forms, both O(1) in the session's length per step (chosen by `bench.stream_forms`, docs/export.md):

* **shift register** (shipped): the attention form's memory as a fixed (B, P, H) buffer of the earlier h(τ),
  newest last, empty slots zero. A real step shifts h(t−1) in (Slice + Concat, then Where on the PAD mask),
  scores the memory (MatMul with the transposed buffer), weights the scores by the constant η·λ^(P−1−j) of
  slot j, and sums (MatMul). It is the whole-sequence graph's arithmetic on a left-padded row, so it also
  gives the memory attention the native API's explanation needs.
* **matrix** (for comparison): h and the fast weight matrix A (B, H, H), A ← λA + η h hᵀ per real step
  (eq. 4). The same bytes at H = 50 and P = 54 (2 500 against 2 700 floats), but no per-position attention,
  so no explanation.

PAD tokens (a chunk is left padded to C) leave h and the memory unchanged: Where on the mask, which is exact
(a Mul-and-add blend would not be).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from contract import BATCH_AXIS, INPUT_TOKENS, OUTPUT_ATTENTION, OUTPUT_LOGITS
from contract.stream import INPUT_STATE_H, INPUT_STATE_MEMORY, OUTPUT_STATE_H, OUTPUT_STATE_MEMORY
from export.builder import IR_VERSION, OPSET, _dedup, _Emitter, _Params, _params
from model.fastweights import FastWeightsRNN

STATE_FORMS = ("shift-register", "matrix")
_F32 = np.float32


def _chunk_inputs(e: _Emitter, p: _Params, chunk_len: int) -> tuple[list[str], list[str]]:
    """Per chunk position j: C·x(j) + b as (B, 1, H), and "is a real token" as a (B, 1, 1) bool."""
    V = p.vocab_size
    x = e.op1("Gather", [e.const("x_table", p.table[:V]), INPUT_TOKENS], "x", axis=0)  # (B, C, H)
    xs = e.op("Split", [x], "x", outputs=chunk_len, axis=1) if chunk_len > 1 else [x]  # C × (B, 1, H)
    pad = e.op1("Equal", [INPUT_TOKENS, e.ints("pad_id", [p.pad_id])], "is_pad")  # (B, C)
    real = e.op1("Not", [pad], "real")
    real = e.op1("Unsqueeze", [real, e.ints("axis_2", [2])], "real")  # (B, C, 1)
    masks = e.op("Split", [real], "real", outputs=chunk_len, axis=1) if chunk_len > 1 else [real]
    return xs, masks  # C × (B, 1, H), C × (B, 1, 1)


def _shift_register(e: _Emitter, p: _Params, chunk_len: int, memory_len: int) -> dict[str, str]:
    H, P = p.hidden_size, memory_len
    xs, masks = _chunk_inputs(e, p, chunk_len)
    recurrent_t = e.const("recurrent_t", p.recurrent_t)  # (H, H) = Wᵀ
    # slot j (0 = oldest, P − 1 = newest) is h(t − P + j) at step t: weight η·λ^(P − 1 − j) (eq. 4 as a sum)
    weight = np.array([p.fast_lr * p.decay ** (P - 1 - j) for j in range(P)], dtype=_F32).reshape(1, 1, P)
    weight_c = e.const("weight", weight)
    gamma, beta = e.const("gamma", p.gamma), e.const("beta", p.beta)
    h = e.op1("Unsqueeze", [INPUT_STATE_H, e.ints("axis_1", [1])], "h")  # (B, 1, H)
    memory = INPUT_STATE_MEMORY  # (B, P, H)
    start, end, axis = e.ints("from_1", [1]), e.ints("to_p", [P]), e.ints("axis_1", [1])
    weighted = ""
    for j in range(chunk_len):
        older = e.op1("Slice", [memory, start, end, axis], "older")  # (B, P − 1, H)
        shifted = e.op1("Concat", [older, h], "shifted", axis=1)  # (B, P, H): h(t − 1) shifted in
        memory = e.op1("Where", [masks[j], shifted, memory], "memory")  # PAD: unchanged
        memory_t = e.op1("Transpose", [memory], "memory_t", perm=[0, 2, 1])  # (B, H, P)
        z = e.op1("MatMul", [h, recurrent_t], "wh")
        z = e.op1("Add", [z, xs[j]], "z")  # (B, 1, H)  W h(t−1) + C x(t) + b
        q = e.op1("Relu", [z], "q")
        for _ in range(p.inner_steps):
            scores = e.op1("MatMul", [q, memory_t], "scores")  # (B, 1, P)  h(τ)ᵀ q
            weighted = e.op1("Mul", [scores, weight_c], "weighted")  # (B, 1, P)  η λ^(t−1−τ) h(τ)ᵀ q
            ah = e.op1("MatMul", [weighted, memory], "ah")  # (B, 1, H)  A(t) q
            u = e.op1("Sum", [z, ah], "u")  # Sum, not Add: no SkipLayerNormalization fusion (builder.py)
            normed = e.op1("LayerNormalization", [u, gamma, beta], "ln", axis=-1, epsilon=p.eps)
            q = e.op1("Relu", [normed], "q")
        h = e.op1("Where", [masks[j], q, h], "h")  # (B, 1, H)
    h2 = e.op1("Reshape", [h, e.ints("bh", [-1, H])], "h")  # (B, H)
    # attention at the chunk's last step: the P memory slots, then 0 for the last position itself
    attention = e.op1("Pad", [weighted, e.ints("pads", [0, 0, 0, 0, 0, 1])], "attention")  # (B, 1, P + 1)
    attention = e.op1("Reshape", [attention, e.ints("b_p1", [-1, P + 1])], "attention")
    return {
        OUTPUT_LOGITS: e.head(p, h2),
        OUTPUT_ATTENTION: attention,
        OUTPUT_STATE_H: h2,
        OUTPUT_STATE_MEMORY: memory,
    }


def _matrix(e: _Emitter, p: _Params, chunk_len: int, memory_len: int) -> dict[str, str]:
    """The fast weight matrix as the state (eq. 4), for comparison: `state_memory` is A (B, H, H) here and
    the attention output is zeros (the matrix keeps no positions)."""
    H = p.hidden_size
    xs, masks = _chunk_inputs(e, p, chunk_len)
    recurrent_t = e.const("recurrent_t", p.recurrent_t)
    gamma, beta = e.const("gamma", p.gamma), e.const("beta", p.beta)
    lam, eta = e.const("decay", np.array(p.decay, dtype=_F32)), e.const("fast_lr", np.array(p.fast_lr, _F32))
    h = e.op1("Unsqueeze", [INPUT_STATE_H, e.ints("axis_1", [1])], "h")  # (B, 1, H)
    A = INPUT_STATE_MEMORY  # (B, H, H), symmetric
    for j in range(chunk_len):
        h_t = e.op1("Transpose", [h], "h_t", perm=[0, 2, 1])  # (B, H, 1)
        outer = e.op1("MatMul", [h_t, h], "outer")  # (B, H, H)  h(t−1) h(t−1)ᵀ
        updated = e.op1("Sum", [e.op1("Mul", [A, lam], "decayed"), e.op1("Mul", [outer, eta], "hebb")], "A")
        A = e.op1("Where", [masks[j], updated, A], "A")
        z = e.op1("Add", [e.op1("MatMul", [h, recurrent_t], "wh"), xs[j]], "z")
        q = e.op1("Relu", [z], "q")
        for _ in range(p.inner_steps):
            ah = e.op1("MatMul", [q, A], "ah")  # (B, 1, H)  (A q)ᵀ, A symmetric
            normed = e.op1(
                "LayerNormalization", [e.op1("Sum", [z, ah], "u"), gamma, beta], "ln", axis=-1, epsilon=p.eps
            )
            q = e.op1("Relu", [normed], "q")
        h = e.op1("Where", [masks[j], q, h], "h")
    h2 = e.op1("Reshape", [h, e.ints("bh", [-1, H])], "h")
    zeros = e.op1(
        "Mul",
        [
            e.op1("Slice", [h2, *(e.ints(n, [v]) for n, v in (("s", 0), ("e", 1), ("a", 1)))], "first"),
            e.const("zero", np.array(0, _F32)),
        ],
        "zero",
    )  # (B, 1)
    attention = e.op1("Expand", [zeros, e.ints("b_p1", [1, memory_len + 1])], "attention")
    return {
        OUTPUT_LOGITS: e.head(p, h2),
        OUTPUT_ATTENTION: attention,
        OUTPUT_STATE_H: h2,
        OUTPUT_STATE_MEMORY: A,
    }


def memory_shape(form: str, hidden_size: int, memory_len: int) -> tuple[int, int]:
    """The per-row shape of `state_memory`: (P, H) for the shift register, (H, H) for the matrix."""
    return (memory_len, hidden_size) if form == "shift-register" else (hidden_size, hidden_size)


def build_state_graph(
    model: FastWeightsRNN, chunk_len: int, memory_len: int, form: str = "shift-register"
) -> onnx.ModelProto:
    """The stream graph (opset 17, no metadata) of `model`: `chunk_len` tokens, `memory_len` slots."""
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
    if memory_len < 2:
        raise ValueError(f"memory_len must be >= 2, got {memory_len}")
    if form not in STATE_FORMS:
        raise ValueError(f"form must be one of {STATE_FORMS}, got {form!r}")
    if model.config.inner_steps < 1:
        raise ValueError("the stream graph needs at least one inner step (the attention comes from it)")
    p = _params(model, max(chunk_len, 2))
    H, classes = p.hidden_size, model.config.num_classes
    initializers: list[onnx.TensorProto] = []
    e = _Emitter("", initializers, [0])
    emit = _shift_register if form == "shift-register" else _matrix
    names = emit(e, p, chunk_len, memory_len)
    for out, name in names.items():
        e.nodes.append(helper.make_node("Identity", [name], [out], name=f"{out}_out"))
    mem = memory_shape(form, H, memory_len)
    inputs = [
        helper.make_tensor_value_info(INPUT_TOKENS, TensorProto.INT64, [BATCH_AXIS, chunk_len]),
        helper.make_tensor_value_info(INPUT_STATE_H, TensorProto.FLOAT, [BATCH_AXIS, H]),
        helper.make_tensor_value_info(INPUT_STATE_MEMORY, TensorProto.FLOAT, [BATCH_AXIS, *mem]),
    ]
    outputs = [
        helper.make_tensor_value_info(OUTPUT_LOGITS, TensorProto.FLOAT, [BATCH_AXIS, classes]),
        helper.make_tensor_value_info(OUTPUT_ATTENTION, TensorProto.FLOAT, [BATCH_AXIS, memory_len + 1]),
        helper.make_tensor_value_info(OUTPUT_STATE_H, TensorProto.FLOAT, [BATCH_AXIS, H]),
        helper.make_tensor_value_info(OUTPUT_STATE_MEMORY, TensorProto.FLOAT, [BATCH_AXIS, *mem]),
    ]
    graph = helper.make_graph(e.nodes, "fastweights_stream", inputs, outputs, _dedup(initializers, e.nodes))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    return proto
