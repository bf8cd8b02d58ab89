"""Export-only torch modules: the same function as the training models, written for a small, fast ONNX graph.

`Checkpoint.model()` stays the reference; `export.verify` checks these against it (max |Δ| <= 1e-4, equal
argmax). What changes for the graph, and why each is exact:

* **Embedding · C folded into one lookup table.** ``C·embed(x) + b`` is linear in the one-hot token, so the
  (V, H) table ``embed.weight @ C.T + b`` gives it with one Gather instead of Gather + MatMul + Add.
* **Attention form** of the fast memory (eq. 4 as a sum): A(t)·h = η Σ_τ λ^(t−τ) h(τ)(h(τ)ᵀh). Per step
  O(t·H) instead of the O(H²) update of a (B, H, H) tensor, and no H×H state in memory.
* **Decay weights computed once, not per step.** A PAD step neither decays nor stores, so the weight of
  position τ seen from step t is ``η·m(τ)·λ^(c(t−1) − c(τ))`` with ``c`` the running count of real tokens:
  one CumSum, two MatMuls and an Exp for all T(T−1)/2 pairs, then one Split hands each step its slice.
  This is exact for any PAD pattern, not only left padding.
* **Nothing where the answer is known.** At t = 0, h = 0 and the memory is empty, so the step is
  ``relu(LN(x(0)))`` (no W·h, no attention).
* **One Where per step for PAD** (``h = m ? h_new : h``) instead of the blend ``m·h_new + (1−m)·h``.

Tensors keep a singleton middle axis, (B, 1, H), so that slices, concatenation and batched MatMul need no
Squeeze/Unsqueeze nodes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.baselines import IRNN, LSTM
from model.fastweights import FastWeightsRNN


class FastWeightsExport(nn.Module):
    """forward(tokens (B, T) int64) -> (logits (B, classes), memory_attention (B, T)) for a fixed T."""

    input_table: Tensor  # (V, H)
    recurrent_t: Tensor  # (H, H)
    gap_select: Tensor  # (T, N)
    past_select: Tensor  # (T, N)

    def __init__(self, model: FastWeightsRNN, seq_len: int):
        super().__init__()
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        cfg = model.config
        self.seq_len = seq_len
        self.pad_id = int(model.pad_id)
        self.inner_steps = cfg.inner_steps
        self.fast_lr = float(cfg.fast_lr)
        self.log_decay = math.log(cfg.decay) if cfg.decay > 0 else -1e4  # λ^n = exp(n·log λ); λ=0: forget
        with torch.no_grad():
            # (V, H): row v = C·embed(v) + b
            table = model.embed.weight @ model.input_proj.weight.T + model.input_proj.bias
            self.register_buffer("input_table", table.detach().clone())
            self.register_buffer("recurrent_t", model.recurrent.weight.T.detach().clone())  # (H, H) = Wᵀ
        self.layer_norm = model.layer_norm
        self.head = model.head
        # All (t, τ) pairs with τ < t, flattened step after step: step t owns entries [t(t−1)/2, t(t+1)/2).
        # Picking c(t−1) − c(τ) and m(τ) for every pair is linear in (c, m), so it is done by two MatMuls with
        # constant 0/±1 matrices (exact: at most two non-zero terms) instead of Gathers along axis 1, which
        # onnxruntime runs element by element (measured: ~15% of the whole graph at batch 256).
        steps = [t for t in range(1, seq_len) for _ in range(t)]
        past = [tau for t in range(1, seq_len) for tau in range(t)]
        pairs = torch.arange(len(steps))
        prev_sel = torch.zeros(seq_len, len(steps))
        past_sel = torch.zeros(seq_len, len(steps))
        prev_sel[torch.tensor([t - 1 for t in steps], dtype=torch.long), pairs] = 1.0
        past_sel[torch.tensor(past, dtype=torch.long), pairs] = 1.0
        self.register_buffer("gap_select", prev_sel - past_sel, persistent=False)  # (T, N): c(t−1) − c(τ)
        self.register_buffer("past_select", past_sel * self.fast_lr, persistent=False)  # (T, N): η·m(τ)
        self.split_sizes = list(range(1, seq_len))

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        T = self.seq_len
        real = tokens != self.pad_id  # (B, T) bool
        m = real.float()
        count = torch.cumsum(m, dim=1)  # (B, T)  c(t): real tokens up to and including t
        # (B, N, 1): weight η·m(τ)·λ^(c(t−1) − c(τ)) of past position τ at step t, all pairs at once
        gap = count @ self.gap_select  # (B, N)
        weights = ((m @ self.past_select) * torch.exp(gap * self.log_decay)).unsqueeze(-1)
        step_weights = torch.split(weights, self.split_sizes, dim=1)  # step t: (B, t, 1)
        x = torch.split(self.input_table[tokens], 1, dim=1)  # T × (B, 1, H)  C·x(t) + b
        keep = torch.split(real.unsqueeze(-1), 1, dim=1)  # T × (B, 1, 1) bool

        # t = 0: h(0) = 0 and A(0) = 0, so every inner step gives relu(LN(C·x(0))).
        h = torch.where(keep[0], torch.relu(self.layer_norm(x[0])), torch.zeros_like(x[0]))  # (B, 1, H)
        past = h  # (B, t, H): h(τ) for τ < t
        scores = x[0]  # placeholder, overwritten at t >= 1 (T >= 2)
        for t in range(1, T):
            z = torch.matmul(h, self.recurrent_t) + x[t]  # (B, 1, H)  W h(t) + C x(t)
            w = step_weights[t - 1]  # (B, t, 1)
            hs = torch.relu(z)
            for _ in range(self.inner_steps):
                # Measured forms (onnxruntime CPU, batch 1 / 256): the scores as Mul + ReduceSum over the
                # contiguous H axis (a batched MatMul runs B tiny GEMVs: slower at batch 256), the weighted
                # sum as a batched MatMul (B, 1, t)·(B, t, H) (faster than Mul + ReduceSum over the t axis).
                scores = (past * hs).sum(dim=2, keepdim=True)  # (B, t, 1)  h(τ)ᵀ h_s
                Ah = torch.matmul((w * scores).transpose(1, 2), past)  # (B, 1, H)
                hs = torch.relu(self.layer_norm(z + Ah))
            h = torch.where(keep[t], hs, h)
            if t < T - 1:
                past = torch.cat([past, h], dim=1)
        logits = self.head(h.squeeze(1))  # (B, classes)
        # (B, T): η·λ^(t−τ)·h(τ)ᵀh at the final step, 0 for the query position itself
        attention = torch.nn.functional.pad((step_weights[T - 2] * scores).squeeze(-1), (0, 1))
        return logits, attention


class BaselineExport(nn.Module):
    """IRNN/LSTM exported as they are: the contract (two outputs) already holds for them."""

    def __init__(self, model: nn.Module, seq_len: int):
        super().__init__()
        self.model = model
        self.seq_len = seq_len

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(tokens)


def export_module(model: nn.Module, seq_len: int) -> nn.Module:
    """The module that is traced into the ONNX graph for one length bucket."""
    if isinstance(model, FastWeightsRNN):
        return FastWeightsExport(model, seq_len).eval()
    if isinstance(model, IRNN | LSTM):
        return BaselineExport(model, seq_len).eval()
    raise TypeError(f"no export module for {type(model).__name__}")
