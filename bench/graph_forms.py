"""Fast-weights graph forms that never ship, kept for comparison by `bench.inference --graphs`.

Built with the emitter of `export.builder` (its module docstring explains the shipped forms):

* **single row, matrix**: carries the fast-weight matrix A(t) (H, H) instead of the history, 6 nodes per
  step (Gemm A = η hᵀh + λ A replaces the Concat and the scores Gemm), but that outer-product Gemm (K = 1)
  costs ~1.4 µs against ~0.5 µs for the Concat and ~0.4 µs for the Gemm it replaces: 8-13% slower at
  batch 1, measured.
* **few nodes** (the small-batch form before, up to 3 rows): (B, 1, H) tensors, the fast memory as a
  (B, t, H) tensor and both attention products as batched MatMuls: 9 nodes per time step after
  onnxruntime's fusions (FusedMatMul, Add, Relu, FusedMatMul, MatMul, Sum, LayerNormalization, Relu,
  Concat).
"""

from __future__ import annotations

import numpy as np
import onnx

from contract import INPUT_TOKENS
from export.builder import (
    _F32,
    MAX_STATE_SCALE,
    Form,
    _Emitter,
    _Params,
    build_fast_weights_graph,
)
from model.fastweights import FastWeightsRNN


def _few_nodes(e: _Emitter, p: _Params) -> tuple[str, str]:
    """Batch-major, batched MatMuls, scaled state: the fewest nodes (see the module docstring)."""
    T, H, V = p.seq_len, p.hidden_size, p.vocab_size
    lam = p.decay
    scaled, scale = p.state_scale()  # c(τ); the last step's state is not stored

    shift = np.zeros((1, T), dtype=np.int64)
    shift[0, 0] = V  # position 0 reads h(0) from the second half of the table
    ids = e.op1("Add", [INPUT_TOKENS, e.const("first_shift", shift)], "ids")  # (B, T)
    rows = e.op1("Gather", [e.const("table", p.table), ids], "rows", axis=0)  # (B, T, H)
    ones = e.ints("ones", [1] * T)
    parts = e.op("Split", [rows, ones], "x", outputs=T, axis=1)  # T × (B, 1, H): h(0), C·x(1)+b, ...
    # Per row and step, the bias of the step's last LayerNormalization: c(t)·β for a real token,
    # c(t)·β − PAD_PENALTY for PAD, so that relu gives h~(t) = 0 on PAD steps (the initial state).
    penalty = e.const("penalty", p.penalty * _F32(max(scale)))  # beats c(t)·|LN(u)| for every t
    penalty = e.op1("Gather", [penalty, ids], "penalty", axis=0)  # (B, T, 1)
    scaled_beta = np.stack([p.beta * _F32(c) for c in scale])[None]  # (1, T, H)
    bias = e.op1("Add", [penalty, e.const("beta_by_step", scaled_beta)], "bias")  # (B, T, H)
    biases = e.op("Split", [bias, ones], "bias", outputs=T, axis=1)  # T × (B, 1, H)

    recurrent_t = e.const("recurrent_t", p.recurrent_t)
    h = past = parts[0]  # h~(t−1) (B, 1, H); past: h~(τ) for τ < t (B, t, H)
    scores = ""
    for t in range(1, T):
        if t > 1:
            past = e.op1("Concat", [past, h], "past", axis=1)
        zw = e.op1("MatMul", [h, recurrent_t], "zw")
        if scale[t - 1] != 1.0:  # undo c(t−1); a scalar, fused into the MatMul
            zw = e.op1("Mul", [zw, e.const("unscale", np.array(1 / scale[t - 1], dtype=_F32))], "zw")
        z = e.op1("Add", [zw, parts[t]], "z")  # (B, 1, H)  W h(t−1) + C x(t) + b
        past_t = e.op1("Transpose", [past], "past_t", perm=[0, 2, 1])  # (B, H, t); fused into the MatMul
        w = np.array(p.fast_lr * lam ** (t - 1), dtype=_F32) if scaled else p.weight(t)
        weight = e.const("weight", w)
        query = e.op1("Relu", [z], "q")
        for step in range(p.inner_steps):
            scores = e.op1("MatMul", [query, past_t], "scores")  # (B, 1, t)  h~(τ)ᵀ q
            scores = e.op1("Mul", [scores, weight], "scores")  # η λ^(t−1−τ) h(τ)ᵀ q, up to c(τ)
            ah = e.op1("MatMul", [scores, past], "ah")  # (B, 1, H)  A(t) q
            u = e.op1("Sum", [z, ah], "u")
            last = step == p.inner_steps - 1  # the last inner step gives h~(t), 0 on a PAD step
            query = e.layer_norm_relu(p, u, scale[t] if last else 1.0, biases[t] if last else None)
        h = query

    logits = e.head(p, e.op1("Reshape", [h, e.ints("flat", [-1, H])], "h_final"))
    # memory_attention: the last scores carry η·λ^(T−2−τ)·h(τ)ᵀh / c(τ); one (T−1, T) matrix multiplies by
    # c(τ) and appends the query position's 0, then a Reshape drops the middle axis.
    to_output = np.zeros((T - 1, T), dtype=_F32)
    to_output[np.arange(T - 1), np.arange(T - 1)] = scale[: T - 1]
    attn = e.op1("MatMul", [scores, e.const("to_attention", to_output)], "attention")  # (B, 1, T)
    return logits, e.op1("Reshape", [attn, e.ints("flat_t", [-1, T])], "attention")


def _single_row_matrix(e: _Emitter, p: _Params) -> tuple[str, str]:
    """One row, the fast-weight matrix A(t) (H, H) carried instead of the history: 6 nodes per step, Gemm
    (W h~/c + C x + b), Relu, Gemm (q A + z), LayerNormalization, Relu, Gemm (A = η/c² h~ᵀh~ + λ A); the
    states h~(τ) are stacked once, at the end, for memory_attention (module docstring)."""
    T, H, V = p.seq_len, p.hidden_size, p.vocab_size
    lam, eta = p.decay, p.fast_lr
    # c(τ) = λ^(−τ): position τ then enters memory_attention with η·λ^(T−2)·h~(τ)ᵀq, one Gemm's alpha
    scaled = lam > 0 and lam ** (-(T - 2)) <= MAX_STATE_SCALE
    scale = [lam ** (-tau) if scaled else 1.0 for tau in range(T - 1)] + [1.0]
    first = 1 if p.pair_h1 is None else 2  # steps that come out of the table
    penalty = p.penalty[:V] * _F32(max(scale))  # (V, 1), as in the single-row form
    groups = [p.table[V:] * _F32(scale[0])]  # h~(0), 0 for PAD
    if p.pair_h1 is not None:
        groups.append(p.pair_h1 * _F32(scale[1]))  # h~(1) of the pair
        # A(2) = η (λ h(0)ᵀh(0) + h(1)ᵀh(1)) is one Gemm of the block [c(1)·√λ·h(0); h~(1)] with itself
        groups.append(p.table[V:] * _F32(scale[1] * np.sqrt(lam)))
    groups.append(p.table[:V])  # C·x + b
    groups += [p.beta[None] * _F32(scale[t]) + penalty for t in range(first, T)]
    offsets = np.cumsum([0] + [len(g) for g in groups])
    x_group = len(groups) - (T - first) - 1
    pair = ({0: V, 1: 1}, offsets[1])
    columns: list[tuple[dict[int, int], int]] = []
    if p.pair_h1 is not None:
        columns += [({0: 1}, offsets[2]), pair]  # the (2, H) block for A(2)
    columns.append(({0: 1}, offsets[0]))  # h~(0)
    if p.pair_h1 is not None:
        columns.append(pair)  # h~(1) (the same table row again)
    for t in range(first, T):
        columns.append(({t: 1}, offsets[x_group]))
        columns.append(({t: 1}, offsets[x_group + 1 + t - first]))
    rows = e.gather_rows(p, columns, np.concatenate(groups))  # (n, H)
    block_rows = 2 if p.pair_h1 is not None else 0  # rows of the (2, H) block that A(2) is made of
    sizes = [2] * (block_rows // 2) + [1] * (len(columns) - block_rows)
    parts = e.op("Split", [rows, e.ints("sizes", sizes)], "row", outputs=len(sizes), axis=0)
    if p.pair_h1 is not None:
        block, parts = parts[0], parts[1:]
        memory = e.op1("Gemm", [block, block], "A", transA=1, alpha=eta / scale[1] ** 2)  # A(2)
    else:
        memory = e.op1("Gemm", [parts[0], parts[0]], "A", transA=1, alpha=eta / scale[0] ** 2)  # A(1)
    states = parts[:first]  # h~(τ) for τ < t, stacked at the end
    x = {t: parts[first + 2 * (t - first)] for t in range(first, T)}
    bias = {t: parts[first + 2 * (t - first) + 1] for t in range(first, T)}

    recurrent_t = e.const("recurrent_t", p.recurrent_t)
    h = states[-1]  # h~(t−1) (1, H)
    query = ""
    for t in range(first, T):
        z = e.op1("Gemm", [h, recurrent_t, x[t]], "z", alpha=float(1 / scale[t - 1]))  # W h + C x + b
        query = e.op1("Relu", [z], "q")
        h = query
        for step in range(p.inner_steps):
            query = h
            u = e.op1("Gemm", [query, memory, z], "u")  # (1, H)  z + A(t) q  (A symmetric)
            last = step == p.inner_steps - 1  # the last inner step gives h~(t), 0 on a PAD step
            h = e.layer_norm_relu(p, u, scale[t] if last else 1.0, bias[t] if last else None)
        if t < T - 1:
            states.append(h)
            memory = e.op1(
                "Gemm", [h, h, memory], "A", transA=1, alpha=eta / scale[t] ** 2, beta=lam
            )  # A(t+1) = λ A(t) + η h(t)ᵀh(t)

    logits = e.head(p, h)
    # memory_attention: η λ^(T−2−τ) h(τ)ᵀq at the last inner step of the last step, the query position's 0
    # from a zero row
    stacked = e.op1("Concat", [*states, e.const("zero_row", np.zeros((1, H), dtype=_F32))], "states", axis=0)
    if scaled:
        return logits, e.op1(
            "Gemm", [query, stacked], "attention", transB=1, alpha=eta * lam ** (T - 2)
        )  # (1, T)
    scores = e.op1("Gemm", [query, stacked], "scores", transB=1)
    weight = np.append(p.weight(T - 1), _F32(0)).reshape(1, T)
    return logits, e.op1("Mul", [scores, e.const("weight", weight)], "attention")


# name -> (emitter, the largest batch it takes as the small form of an If)
COMPARISON_FORMS: dict[str, tuple[Form, int]] = {
    "single-row-matrix": (_single_row_matrix, 1),
    "few-nodes": (_few_nodes, 3),
}


def build_graph(
    model: FastWeightsRNN, seq_len: int, form: str = "auto", small_form: str = "single-row-windows"
) -> onnx.ModelProto:
    """`export.builder.build_fast_weights_graph` with the comparison forms available too."""
    return build_fast_weights_graph(model, seq_len, form, small_form, extra_forms=COMPARISON_FORMS)
