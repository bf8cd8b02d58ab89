"""The fast-weights graph written node by node with ``onnx.helper`` from the checkpoint's weights.

Tracing (`export.graph`) gave ~12 ONNX nodes per time step plus a prologue that turned the PAD mask into decay
weights at run time. This builder emits exactly the nodes the function needs and folds what it can into
constants. Several forms of the same function, because onnxruntime's costs differ with the batch size:

* **single row** (batch 1, where onnxruntime's cost is ~0.5 µs per node): 2-D (1, H) tensors, so every
  product is a Gemm with its scalar and its addend inside: 7 nodes per time step (Concat to append to the
  memory (t, H), Gemm W h~/c + C x + b, Relu, Gemm scores q·memoryᵀ with η λ^(t−1) as alpha, Gemm
  scores·memory + z, LayerNormalization, Relu). h(0) and h(1) are not computed: h(1) depends on the first
  two tokens only, so it is a row of a (V², H) table precomputed by the training model itself (282 KiB at
  V = 38, H = 50; one time step less per call). One Gather on one table returns, for the whole call, h(0),
  h(1), every C·x(t) + b and every step's LayerNorm bias; the row ids come from one int64 MatMul of the
  tokens by a constant routing matrix (which forms a·V + b for the pair) and one Add.
* **single row, windows** (batch 1, shipped): the single-row steps without the leading PAD steps. A chain
  of If on "is the token before the next window's start PAD" (Gather, Equal, If: ~2-2.5 µs a level) picks
  the window that starts at most two positions before the row's first real token (starts 0, 2, 4, ...:
  one per task length 2K + 3 in an odd bucket), and only that window's steps run; PAD at a window's first
  two positions comes out of the h(0) and pair tables (0), so no step needs a PAD mask, and the window's
  memory at its first computed step is the gathered block [h~(0); h~(1)] (no Concat). The last of the
  `WINDOWS` windows also takes rows that start later, masking their PAD steps as the single-row form does.
  A row of K pairs in the T = 11 graph runs 2K + 1 steps instead of 9.
* Forms measured for comparison and never shipped (the fast-weight matrix instead of the history, the
  earlier few-nodes small-batch form) live next to their benchmark, in `bench/graph_forms.py`.
* **wide** (large batches, where a batched MatMul costs ~0.2-0.3 µs per row whatever its size): time-major
  memory (t, B, H), scores as Mul + ReduceSum, the weighted sum as one Mul and one (1, t)·(t, B·H) MatMul
  whose row holds the decay weights, the recurrence as a 2-D Gemm (W h + C x + b in one node), a Mul by the
  PAD mask, and a Gather of C·x(t) + b per step (one Gather + Split of all steps copied every row twice: 6%
  slower at batch 256): 15 nodes per step, each a large, vectorised kernel.

The exported graph holds single row (windows) and wide as the branches of one ``If`` on the batch size
(``SMALL_FORMS``). Each branch holds its own constants, the weights included (twice in the file): with the
weights in the main graph, onnxruntime passes them to the If as implicit inputs and the batch-1 call took
12 µs longer; with them inside, the If costs ~2-3 µs (measured).

What is folded, and why it stays exact (`export.verify` checks ≤ 1e-4 against the training model):

* **Left padding makes the decay weights constants.** The contract pads on the left, so a row's real tokens
  are contiguous and position τ is seen from step t with weight η·λ^(t−1−τ) (eq. 4 as a sum): no mask
  arithmetic (CumSum, Exp, selection matrices) at run time. (A PAD *inside* a sequence is outside the
  contract and is not a no-op here, unlike in the training model.)
* **PAD steps through the LayerNorm bias, not a Mul or Where per step.** A PAD step of a left-padded row must
  leave h = 0 and the memory empty. LayerNormalization takes a per-row bias (B, 1, H) (it broadcasts, as its
  function definition's Add does): β for a real token, β − PAD_PENALTY for PAD, gathered for all steps at
  once; relu then gives exactly 0, and a stored 0 adds exactly 0 to every later score and sum.
* **Single row: the weights live in the state's scale.** The stored state is h~(τ) = c(τ)·h(τ),
  c(τ) = λ^(−τ/2) (that step's LayerNormalization gets gain γ·c(τ) and bias β·c(τ); relu(c·y) = c·relu(y)
  for c > 0). Scores and the weighted sum both read h~, so position τ enters with c(τ)² = λ^(−τ), and one
  scalar per step, η·λ^(t−1), completes η·λ^(t−1−τ). onnxruntime fuses a scalar Mul into the MatMul before
  it (FusedMatMul's alpha; in the single-row form the scalars are Gemm's alpha), as it fuses the 1/c(t−1)
  that undoes the scale before W. For λ = 0, or a scale
  above MAX_STATE_SCALE, the per-step weight vector is multiplied instead (same node count, not fused).
* **Embedding·C folded into one table, and the first step is a table too**: h(0) = relu(LN(C·x(0) + b))
  depends on the first token only. One Gather on a (2V, H) table, the first position's ids shifted by V,
  returns h(0) and every C·x(t) + b; one Split hands them out (few-nodes form).
* **Sum + LayerNormalization, not Add**: onnxruntime fuses Add + LayerNormalization into
  SkipLayerNormalization, which ran ~4× slower than the two nodes at H = 50 (72 µs against 16 + 5 µs per step
  at batch 256, measured); it does not fuse Sum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from contract import BATCH_AXIS, INPUT_TOKENS, OUTPUT_ATTENTION, OUTPUT_LOGITS
from model.fastweights import FastWeightsRNN

OPSET = 17  # LayerNormalization is one op from opset 17
IR_VERSION = 8  # what onnxruntime 1.x and Triton's onnxruntime backend read for opset 17
# The form an If sends small batches to, and the largest batch it takes; larger ones take the wide form.
# single-row-windows: batch 1 only (shipped); single-row: batch 1 (its fallback, and shipped before).
# Other forms are measured for comparison by bench/graph_forms.py (`extra_forms`).
SMALL_FORMS = {"single-row-windows": 1, "single-row": 1}
MAX_STATE_SCALE = 1e4  # c(τ) = λ^(−τ/2) above this: explicit weights instead of the scaled state
# Subtracted from a PAD row's LayerNormalization bias: |LN(u)| <= max|γ|·sqrt(H) + max|β| (~10 here), so relu
# gives exactly 0 (checked against the weights when the graph is built).
PAD_PENALTY = 1e6
# The single-row form gathers h(1) from a (V², H) table when V² is at most this (38² = 1444 rows, 282 KiB
# at H = 50): one time step less per call.
PAIR_TABLE_MAX_ROWS = 4096
# The single-row-windows form: at most this many windows (If levels + 1); rows that start later than the
# last window's start run its steps with PAD masked (for T = 11: windows at 0, 2, 4, 6, 8, every length)
WINDOWS = 5
FORMS = ("auto", "single-row-windows", "single-row", "wide")

_F32 = np.float32


@dataclass(frozen=True)
class _Params:
    """The checkpoint's weights, folded, as float32 numpy arrays."""

    seq_len: int
    table: np.ndarray  # (2V, H): rows 0..V-1 C·x + b, rows V..2V-1 h(0) = relu(LN(C·x + b)) (0 for PAD)
    penalty: np.ndarray  # (2V, 1): 0 for a real token, -PAD_PENALTY for PAD (both halves)
    recurrent_t: np.ndarray  # (H, H) = Wᵀ
    gamma: np.ndarray
    beta: np.ndarray
    eps: float
    head: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # W1 (100, H), b1, W2 (classes, 100), b2
    decay: float
    fast_lr: float
    inner_steps: int
    pair_h1: np.ndarray | None  # (V·V, H): h(1) of every left-padded first pair (a, b), row a·V + b; or None
    pad_id: int

    @property
    def vocab_size(self) -> int:
        return self.table.shape[0] // 2

    @property
    def hidden_size(self) -> int:
        return self.table.shape[1]

    def weight(self, t: int) -> np.ndarray:
        """(t,): η·λ^(t−1−τ), the weight of stored position τ < t at step t (left padding)."""
        return np.array([self.fast_lr * self.decay ** (t - 1 - tau) for tau in range(t)], dtype=_F32)

    def state_scale(self, steps: int | None = None) -> tuple[bool, list[float]]:
        """Whether the stored state carries the decay (c(τ) = λ^(−τ/2), decided for the whole length), and
        c(τ) per step of a run of `steps` steps (default: T; the last step's state is not stored: 1)."""
        T, lam = self.seq_len, self.decay
        scaled = lam > 0 and lam ** (-(T - 2) / 2) <= MAX_STATE_SCALE
        n = T if steps is None else steps
        return scaled, [lam ** (-tau / 2) if scaled else 1.0 for tau in range(n - 1)] + [1.0]


def _pair_table(model: FastWeightsRNN) -> np.ndarray:
    """(V·V, H) float32: h(1) after the first two tokens (a, b), row a·V + b, from the training model itself.

    h(1) depends on those two tokens only, so the single-row form gathers it instead of running step 1. The
    model runs as it is on all V² two-token sequences, with its head replaced by the identity so that its
    first output is the final state: the same float32 arithmetic the reference does.
    """
    import copy

    body = copy.deepcopy(model).eval()
    body.head = torch.nn.Identity()  # type: ignore[assignment]  # forward then returns (h (B, H), attention)
    V = model.config.vocab_size
    first = torch.arange(V).repeat_interleave(V)
    second = torch.arange(V).repeat(V)
    with torch.no_grad():
        h1, _ = body(torch.stack([first, second], dim=1))
    return h1.to(torch.float32).numpy().copy()


def _params(model: FastWeightsRNN, seq_len: int) -> _Params:
    def np32(t: torch.Tensor) -> np.ndarray:
        return t.detach().to(torch.float32).cpu().numpy().copy()

    cfg = model.config
    with torch.no_grad():
        x_table = model.embed.weight @ model.input_proj.weight.T + model.input_proj.bias  # (V, H)
        h0_table = torch.relu(model.layer_norm(x_table))  # t = 0: h = 0, A = 0: every inner step gives this
    h0 = np32(h0_table)
    gamma, beta = np32(model.layer_norm.weight), np32(model.layer_norm.bias)
    bound = float(np.abs(gamma).max() * np.sqrt(cfg.hidden_size) + np.abs(beta).max())  # of |LN(u)|
    if 100 * bound > PAD_PENALTY:
        raise ValueError(f"LayerNorm gain/bias too large for PAD_PENALTY ({bound:.3g} per unit)")
    h0[model.pad_id] = 0.0  # a PAD first token leaves the initial state
    penalty = (
        np.where(np.arange(cfg.vocab_size) == model.pad_id, -PAD_PENALTY, 0.0).astype(_F32).reshape(-1, 1)
    )
    return _Params(
        seq_len=seq_len,
        table=np.concatenate([np32(x_table), h0]),
        penalty=np.concatenate([penalty, penalty]),
        recurrent_t=np32(model.recurrent.weight).T.copy(),
        gamma=gamma,
        beta=beta,
        eps=float(model.layer_norm.eps),
        head=(
            np32(model.head.hidden.weight),
            np32(model.head.hidden.bias),
            np32(model.head.out.weight),
            np32(model.head.out.bias),
        ),
        decay=float(cfg.decay),
        fast_lr=float(cfg.fast_lr),
        inner_steps=cfg.inner_steps,
        pair_h1=_pair_table(model) if seq_len >= 3 and cfg.vocab_size**2 <= PAIR_TABLE_MAX_ROWS else None,
        pad_id=model.pad_id,
    )


class _Emitter:
    """Appends nodes to a node list and constants to a shared initializer list, with unique names."""

    def __init__(self, prefix: str, initializers: list[onnx.TensorProto], counter: list[int]):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers = initializers
        self._counter = counter  # shared between emitters of one model, so names never collide

    def _name(self, hint: str) -> str:
        self._counter[0] += 1
        return f"{self.prefix}{hint}_{self._counter[0]}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, hint: str, values: list[int]) -> str:
        return self.const(hint, np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], hint: str, outputs: int = 1, **attrs) -> list[str]:
        names = [self._name(hint) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=names[0], **attrs))
        return names

    def op1(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        return self.op(op_type, inputs, hint, 1, **attrs)[0]

    def layer_norm_relu(self, p: _Params, u: str, gain_scale: float = 1.0, beta: str | None = None) -> str:
        """relu(LayerNorm(u)): the model's gain times `gain_scale`, its bias or the given `beta` tensor."""
        gamma = self.const("gamma", p.gamma * _F32(gain_scale))
        beta = beta if beta is not None else self.const("beta", p.beta)
        normed = self.op1("LayerNormalization", [u, gamma, beta], "ln", axis=-1, epsilon=p.eps)
        return self.op1("Relu", [normed], "h")

    def gather_rows(
        self, p: _Params, columns: list[tuple[dict[int, int], int]], table: str | np.ndarray
    ) -> str:
        """(n, H): for each column ({position: weight}, offset), row `offset + Σ weight·token[position]` of
        `table` (a name, or an array to add as a constant). One call's rows in MatMul (tokens (1, T) ·
        route (T, n)), Add, Gather, Reshape."""
        route = np.zeros((p.seq_len, len(columns)), dtype=np.int64)
        for j, (weights, _) in enumerate(columns):
            for position, w in weights.items():
                route[position, j] = w
        offset = np.array([[o for _, o in columns]], dtype=np.int64)
        ids = self.op1("MatMul", [INPUT_TOKENS, self.const("route", route)], "ids")
        ids = self.op1("Add", [ids, self.const("row_offset", offset)], "ids")  # (1, n)
        source = table if isinstance(table, str) else self.const("table", table)
        rows = self.op1("Gather", [source, ids], "rows", axis=0)  # (1, n, H)
        return self.op1("Reshape", [rows, self.ints("rows", [-1, p.hidden_size])], "rows")  # (n, H)

    def single_row_steps(
        self,
        p: _Params,
        steps: range,
        past: str,
        h: str,
        x: dict[int, str],
        bias: dict[int, str],
        scale: list[float],
        scaled: bool,
        append_first: bool,
    ) -> tuple[str, str]:
        """The attention-form steps of one row, 7 nodes each: Concat (h~(t−1) onto the memory `past`; not at
        the first step unless `append_first`), Gemm (W h + C x + b, x[t] holding C x + b), Relu, then per
        inner step Gemm (scores), Gemm (z + A(t) q), LayerNormalization, Relu (bias[t] at the last inner
        step). Returns h~ of the last step and its last scores (1, t)."""
        recurrent_t = self.const("recurrent_t", p.recurrent_t)
        lam = p.decay
        scores = ""
        for t in steps:
            if t > steps.start or append_first:
                past = self.op1("Concat", [past, h], "past", axis=0)
            z = self.op1("Gemm", [h, recurrent_t, x[t]], "z", alpha=float(1 / scale[t - 1]))  # W h + C x + b
            query = self.op1("Relu", [z], "q")
            for step in range(p.inner_steps):
                if scaled:  # η λ^(t−1−τ) h(τ)ᵀ q, the λ^(−τ) living in c(τ)²
                    alpha = p.fast_lr * lam ** (t - 1)
                    scores = self.op1("Gemm", [query, past], "scores", transB=1, alpha=alpha)
                else:
                    scores = self.op1("Gemm", [query, past], "scores", transB=1)
                    weight = self.const("weight", p.weight(t).reshape(1, t))
                    scores = self.op1("Mul", [scores, weight], "scores")
                u = self.op1("Gemm", [scores, past, z], "u")  # (1, H)  z + A(t) q
                last = step == p.inner_steps - 1  # the last inner step gives h~(t), 0 on a PAD step
                query = self.layer_norm_relu(p, u, scale[t] if last else 1.0, bias[t] if last else None)
            h = query
        return h, scores

    def head(self, p: _Params, h: str) -> str:
        """(B, H) -> logits (B, classes): Gemm, Relu, Gemm (onnxruntime fuses the first two)."""
        w1, b1, w2, b2 = p.head
        hidden = self.op1("Gemm", [h, self.const("head_w1", w1), self.const("head_b1", b1)], "head", transB=1)
        hidden = self.op1("Relu", [hidden], "head")
        return self.op1(
            "Gemm", [hidden, self.const("head_w2", w2), self.const("head_b2", b2)], "logits", transB=1
        )


def _single_row(e: _Emitter, p: _Params) -> tuple[str, str]:
    """One row, 2-D (1, H) tensors: every product a Gemm with its scalar and its addend fused in (module
    docstring). 7 nodes per step: Concat, Gemm (W h~/c + C x + b), Relu, Gemm (scores, with η λ^(t−1)),
    Gemm (A h + z), LayerNormalization, Relu; h(0) and h(1) are gathered, not computed."""
    T, V = p.seq_len, p.vocab_size
    scaled, scale = p.state_scale()
    first = 1 if p.pair_h1 is None else 2  # steps that come out of the table: h~(0), and h~(1) with pairs
    # One table, one row per (what, token): h~(0) | [h~(1) of the pair] | C·x + b | one bias per step.
    # Per step t the bias of the last LayerNormalization is c(t)·β, and c(t)·β − PAD_PENALTY·max c for PAD
    # (relu gives h~(t) = 0 on a PAD step, the initial state), so a PAD step costs no node.
    penalty = p.penalty[:V] * _F32(max(scale))  # (V, 1)
    groups = [p.table[V:] * _F32(scale[0])]  # h~(0) = c(0)·h(0) = h(0), 0 for PAD
    if p.pair_h1 is not None:
        groups.append(p.pair_h1 * _F32(scale[1]))
    groups.append(p.table[:V])  # C·x + b
    groups += [p.beta[None] * _F32(scale[t]) + penalty for t in range(first, T)]
    offsets = np.cumsum([0] + [len(g) for g in groups])
    # ids (1, n) = tokens (1, T) · route (T, n) + offset (1, n): column j picks row `offset[j] + token`
    # (the pair's column a·V + b); one Gather returns every row the call needs, one Split hands them out.
    columns: list[tuple[dict[int, int], int]] = [({0: 1}, offsets[0])]
    if p.pair_h1 is not None:
        columns.append(({0: V, 1: 1}, offsets[1]))
    x_group, bias_group = first, first + 1
    for t in range(first, T):
        columns.append(({t: 1}, offsets[x_group]))
        columns.append(({t: 1}, offsets[bias_group + t - first]))
    rows = e.gather_rows(p, columns, np.concatenate(groups))  # (n, H)
    parts = e.op("Split", [rows], "row", outputs=len(columns), axis=0)  # n × (1, H)
    x = {t: parts[first + 2 * (t - first)] for t in range(first, T)}
    bias = {t: parts[first + 2 * (t - first) + 1] for t in range(first, T)}
    # memory (t, H): h~(τ) for τ < t; h~(t−1) (1, H); with the pair table h~(1) joins the memory at t = 2
    h, scores = e.single_row_steps(
        p, range(first, T), parts[0], parts[first - 1], x, bias, scale, scaled, append_first=first == 2
    )
    logits = e.head(p, h)
    to_output = np.zeros((T - 1, T), dtype=_F32)  # times c(τ), the query position's 0 appended
    to_output[np.arange(T - 1), np.arange(T - 1)] = scale[: T - 1]
    return logits, e.op1("MatMul", [scores, e.const("to_attention", to_output)], "attention")  # (1, T)


def window_starts(seq_len: int) -> list[int]:
    """Where the windows of the single-row-windows form start: 0, 2, 4, ... while at least 3 positions
    remain, at most WINDOWS of them.

    A window from s runs the steps from s + 2 on, h~(0) and h~(1) of its first two positions coming out of
    the tables (0 for PAD), so it takes the rows whose first real token is at s, s + 1 or s + 2 without a
    single PAD step; starts 2 apart give the task's lengths (2K + 3: odd, in odd buckets) a window each.
    The last window also takes the rows that start later, zeroing their PAD steps through the LayerNorm bias
    as the single-row form does."""
    return list(range(0, seq_len - 2, 2))[:WINDOWS]


def _window(e: _Emitter, p: _Params, start: int, table: str, offsets: dict[str, int]) -> tuple[str, str]:
    """One row whose tokens before `start` are PAD: only the steps j = 2 .. T − start − 1 of the window
    run, 7 nodes each, 6 at j = 2 (its memory is the gathered block [h~(0); h~(1)]: no Concat). `table`:
    h(0) | h~(1) of every pair | C·x + b | [for the last window: c(j)·β, − the PAD penalty for PAD, per
    token and step j], the groups starting at `offsets`; the window gathers what it needs (MatMul, Add,
    Gather, Reshape, Split, as the single-row form does)."""
    T, V = p.seq_len, p.vocab_size
    L = T - start
    scaled, scale = p.state_scale(L)  # c(τ) from the window's start, scaled or not as the shared rows are
    masked = "bias" in offsets and start == offsets["last_start"]  # PAD steps can occur: biases gathered
    pair = ({start: V, start + 1: 1}, offsets["pair"])
    columns = [({start: 1}, offsets["h0"]), pair, pair]  # the block [h~(0); h~(1)], then h~(1) alone
    columns += [({start + j: 1}, offsets["x"]) for j in range(2, L)]
    if masked:
        columns += [({start + j: 1}, offsets["bias"] + V * (j - 2)) for j in range(2, L)]
    rows = e.gather_rows(p, columns, table)  # (n, H)
    sizes = [2] + [1] * (len(columns) - 2)
    parts = e.op("Split", [rows, e.ints("sizes", sizes)], "row", outputs=len(sizes), axis=0)
    past, h = parts[0], parts[1]  # [h~(0); h~(1)] (2, H), h~(1) (1, H)
    x = {j: parts[j] for j in range(2, L)}  # C·x + b at step j
    bias = {j: parts[L + j - 2] if masked else e.const("beta", p.beta * _F32(scale[j])) for j in range(2, L)}
    h, scores = e.single_row_steps(p, range(2, L), past, h, x, bias, scale, scaled, append_first=False)
    logits = e.head(p, h)
    to_output = np.zeros((L - 1, T), dtype=_F32)  # times c(τ), moved to the window's positions, 0 before
    to_output[np.arange(L - 1), start + np.arange(L - 1)] = scale[: L - 1]
    return logits, e.op1("MatMul", [scores, e.const("to_attention", to_output)], "attention")  # (1, T)


def _single_row_windows(e: _Emitter, p: _Params) -> tuple[str, str]:
    """One row, no work on its leading PAD steps: a chain of If on "is the token before the next window's
    start PAD" picks the window that starts at most 2 positions before the row's first real token
    (`window_starts`; the last window takes any later start), and only that window's steps run
    (`_window`). Without the pair table (T < 3 or a large vocabulary): the single-row form."""
    T, V = p.seq_len, p.vocab_size
    if p.pair_h1 is None:
        return _single_row(e, p)
    starts = window_starts(T)
    scale = p.state_scale()[1]
    # c(τ) counts from the window's start, so h~(0) and h~(1) are the same rows for every window: one table
    # for all, which the windows read as an outer-scope value (a Gather's input: nothing to pre-pack)
    groups = {"h0": p.table[V:], "pair": p.pair_h1 * _F32(scale[1]), "x": p.table[:V]}
    if starts[-1] + 2 < T - 1:  # the last window also takes later starts: per step c(j)·β, − PAD_PENALTY
        last = p.state_scale(T - starts[-1])[1]
        penalty = p.penalty[:V] * _F32(max(last))
        groups["bias"] = np.concatenate([p.beta[None] * _F32(last[j]) + penalty for j in range(2, len(last))])
    sizes = [len(g) for g in groups.values()]
    offsets = {name: int(o) for name, o in zip(groups, np.cumsum([0, *sizes[:-1]]), strict=True)}
    offsets["last_start"] = starts[-1]
    table = e.const("table", np.concatenate(list(groups.values())))
    classes = len(p.head[3])

    def window(i: int) -> onnx.GraphProto:
        inits: list[onnx.TensorProto] = []
        sub = _Emitter(f"{e.prefix}from_{starts[i]}/", inits, e._counter)
        logits, attn = _window(sub, p, starts[i], table, offsets)
        return _subgraph(sub, inits, logits, attn, classes, T, f"from_{starts[i]}")

    def chain(i: int, em: _Emitter) -> tuple[str, str]:
        """Window i if the token before window i + 1 is real, else the chain from window i + 1."""
        if i == len(starts) - 1:
            return _inline(em, window(i))
        position = em.const("position", np.array(starts[i + 1] - 1, dtype=np.int64))
        token = em.op1("Gather", [INPUT_TOKENS, position], "token", axis=1)  # (1,)
        later = em.op1("Equal", [token, em.ints("pad_id", [p.pad_id])], "starts_later")
        inits: list[onnx.TensorProto] = []
        sub = _Emitter(f"{e.prefix}after_{starts[i + 1]}/", inits, e._counter)
        rest = chain(i + 1, sub)
        then_branch = _subgraph(sub, inits, *rest, classes, T, f"after_{starts[i + 1]}")
        logits, attn = em.op(
            "If", [later], "window", outputs=2, then_branch=then_branch, else_branch=window(i)
        )
        return logits, attn

    return chain(0, e)


def _subgraph(
    e: _Emitter, inits: list[onnx.TensorProto], logits: str, attn: str, classes: int, T: int, name: str
) -> onnx.GraphProto:
    """The nodes of `e` as an If branch that returns (logits (1, classes), attention (1, T))."""
    outputs = [
        helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, classes]),
        helper.make_tensor_value_info(attn, TensorProto.FLOAT, [1, T]),
    ]
    return helper.make_graph(e.nodes, name, [], outputs, _dedup(inits, e.nodes))


def _inline(e: _Emitter, graph: onnx.GraphProto) -> tuple[str, str]:
    """A subgraph's nodes and constants appended to `e` (the last window needs no If)."""
    e.nodes.extend(graph.node)
    e.initializers.extend(graph.initializer)
    return graph.output[0].name, graph.output[1].name


def _wide(e: _Emitter, p: _Params) -> tuple[str, str]:
    """Time-major memory, element-wise attention, 2-D Gemm recurrence: large kernels (module docstring)."""
    T, H, V = p.seq_len, p.hidden_size, p.vocab_size
    shift = np.zeros((T, 1), dtype=np.int64)
    shift[0, 0] = V
    ids = e.op1("Transpose", [INPUT_TOKENS], "ids", perm=[1, 0])  # (T, B)
    ids = e.op1("Add", [ids, e.const("first_shift", shift)], "ids")
    ids = e.op1("Reshape", [ids, e.ints("flat", [-1])], "ids")  # (T·B,) time-major
    table = e.const("table", p.table)
    step_ids = e.op("Split", [ids], "ids", outputs=T, axis=0)  # T × (B,)
    parts = [e.op1("Gather", [table, i], "x", axis=0) for i in step_ids]  # T × (B, H)
    # PAD steps: h(t) = m(t)·h_new, a Mul per step. Here a per-row LayerNorm bias (as in the few-nodes form)
    # would cost more: LayerNormalization runs ~20 µs slower at batch 256 with a (B, H) bias, the Mul ~6 µs.
    real = e.const("real", (p.penalty == 0).astype(_F32))  # (2V, 1)
    mask = e.op1("Gather", [real, ids], "mask", axis=0)  # (T·B, 1)
    masks = e.op("Split", [mask], "mask", outputs=T, axis=0)  # T × (B, 1)

    recurrent_t = e.const("recurrent_t", p.recurrent_t)
    reduce_h = e.ints("axis_h", [2])
    h = past = parts[0]  # h(t−1) (B, H); past: h(τ) for τ < t, stacked time-major (t·B, H)
    scores = ""
    for t in range(1, T):
        if t > 1:
            past = e.op1("Concat", [past, h], "past", axis=0)  # an append: contiguous copy
        z = e.op1("Gemm", [h, recurrent_t, parts[t]], "z")  # (B, H)  W h(t−1) + C x(t) + b
        memory = e.op1("Reshape", [past, e.ints("tbh", [t, -1, H])], "memory")  # (t, B, H)
        weight = e.const("weight", p.weight(t).reshape(1, t))
        by_time = e.ints("by_time", [t, -1])
        query = e.op1("Relu", [z], "q")
        for _ in range(p.inner_steps):
            products = e.op1("Mul", [memory, query], "products")  # (t, B, H)
            scores = e.op1("ReduceSum", [products, reduce_h], "scores", keepdims=1)  # (t, B, 1) h(τ)ᵀq
            weighted = e.op1("Mul", [memory, scores], "weighted")  # (t, B, H)
            flat = e.op1("Reshape", [weighted, by_time], "weighted")  # (t, B·H)
            ah = e.op1("MatMul", [weight, flat], "ah")  # (1, B·H)  Σ_τ η λ^(t−1−τ) (h(τ)ᵀq) h(τ)
            ah = e.op1("Reshape", [ah, e.ints("bh", [-1, H])], "ah")  # (B, H)
            u = e.op1("Sum", [z, ah], "u")
            query = e.layer_norm_relu(p, u)
        h = e.op1("Mul", [query, masks[t]], "h")  # left padding: PAD steps keep h = 0

    logits = e.head(p, h)
    # memory_attention: (T−1, B, 1) scores -> (B, T−1) -> times the weights, the query position's 0 appended
    to_output = np.zeros((T - 1, T), dtype=_F32)
    to_output[np.arange(T - 1), np.arange(T - 1)] = p.weight(T - 1)
    attn = e.op1("Reshape", [scores, e.ints("tb", [T - 1, -1])], "attention")
    attn = e.op1("Transpose", [attn], "attention", perm=[1, 0])
    return logits, e.op1("MatMul", [attn, e.const("to_attention", to_output)], "attention")


def _io(seq_len: int, num_classes: int, batch: str | int = BATCH_AXIS):
    inputs = [helper.make_tensor_value_info(INPUT_TOKENS, TensorProto.INT64, [batch, seq_len])]
    outputs = [
        helper.make_tensor_value_info(OUTPUT_LOGITS, TensorProto.FLOAT, [batch, num_classes]),
        helper.make_tensor_value_info(OUTPUT_ATTENTION, TensorProto.FLOAT, [batch, seq_len]),
    ]
    return inputs, outputs


Form = Callable[["_Emitter", _Params], tuple[str, str]]  # writes one form's nodes: -> (logits, attention)

_EMITTERS: dict[str, Form] = {
    "single-row": _single_row,
    "single-row-windows": _single_row_windows,
    "wide": _wide,
}


def build_fast_weights_graph(
    model: FastWeightsRNN,
    seq_len: int,
    form: str = "auto",
    small_form: str = "single-row-windows",
    extra_forms: Mapping[str, tuple[Form, int]] | None = None,
) -> onnx.ModelProto:
    """The ONNX graph (opset 17, no metadata) of `model` for left-padded sequences of `seq_len` tokens.

    form: "auto" (an If on the batch size: `small_form` up to SMALL_FORMS[small_form] rows, "wide" above),
    or one form alone ("single-row" alone declares a batch of exactly 1).
    small_form: "single-row-windows" (shipped), or "single-row" (shipped before: every step runs, PAD steps
    masked). `extra_forms` adds forms by name (emitter, largest batch as a small form) for comparisons
    (bench/graph_forms.py).
    """
    emitters = {**_EMITTERS, **{name: emit for name, (emit, _) in (extra_forms or {}).items()}}
    small_forms = {**SMALL_FORMS, **{name: rows for name, (_, rows) in (extra_forms or {}).items()}}
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if form not in (*FORMS, *emitters):
        raise ValueError(f"form must be one of {(*FORMS, *(extra_forms or {}))}, got {form!r}")
    if small_form not in small_forms:
        raise ValueError(f"small_form must be one of {sorted(small_forms)}, got {small_form!r}")
    p = _params(model, seq_len)
    initializers: list[onnx.TensorProto] = []
    counter = [0]
    batch = 1 if form.startswith("single-row") else BATCH_AXIS
    inputs, outputs = _io(seq_len, model.config.num_classes, batch)
    if form == "auto":
        main = _Emitter("", initializers, counter)
        batch = main.op1("Shape", [INPUT_TOKENS], "batch", start=0, end=1)
        limit = main.ints("small_batch_max", [small_forms[small_form]])
        small = main.op1("LessOrEqual", [batch, limit], "small")
        branches = {}
        for name in (small_form, "wide"):
            # Every constant lives in its branch, the weight tables twice: onnxruntime passes outer-scope
            # values to an If as implicit inputs, and does not pre-pack or fuse against them (measured at
            # batch 1: 12 µs more per call with the four weight matrices outside, 3 µs for the If itself).
            branch_inits: list[onnx.TensorProto] = []
            graph_name = name.replace("-", "_")
            e = _Emitter(f"{graph_name}/", branch_inits, counter)
            logits, attn = emitters[name](e, p)
            branch_outputs = [
                helper.make_tensor_value_info(
                    logits, TensorProto.FLOAT, [BATCH_AXIS, model.config.num_classes]
                ),
                helper.make_tensor_value_info(attn, TensorProto.FLOAT, [BATCH_AXIS, seq_len]),
            ]
            branches[name] = helper.make_graph(
                e.nodes, graph_name, [], branch_outputs, _dedup(branch_inits, e.nodes)
            )
        main.nodes.append(
            helper.make_node(
                "If",
                [small],
                [OUTPUT_LOGITS, OUTPUT_ATTENTION],
                name="by_batch_size",
                then_branch=branches[small_form],
                else_branch=branches["wide"],
            )
        )
        nodes = main.nodes
    else:
        e = _Emitter("", initializers, counter)
        logits, attn = emitters[form](e, p)
        e.nodes.append(helper.make_node("Identity", [logits], [OUTPUT_LOGITS], name="logits_out"))
        e.nodes.append(helper.make_node("Identity", [attn], [OUTPUT_ATTENTION], name="attention_out"))
        nodes = e.nodes
    graph = helper.make_graph(nodes, "fastweights", inputs, outputs, _dedup(initializers, nodes))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    return proto


def _dedup(initializers: list[onnx.TensorProto], nodes: list[onnx.NodeProto]) -> list[onnx.TensorProto]:
    """Each distinct constant once: the inputs that used a copy are renamed to the kept one."""
    seen: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    rename: dict[str, str] = {}
    kept = []
    for init in initializers:
        key = (init.data_type, tuple(init.dims), numpy_helper.to_array(init).tobytes())
        if key in seen:
            rename[init.name] = seen[key]
        else:
            seen[key] = init.name
            kept.append(init)

    def visit(node_list) -> None:
        for node in node_list:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g.node)

    visit(nodes)
    return kept
