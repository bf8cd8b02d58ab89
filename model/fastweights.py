"""FastWeightsRNN: a ReLU RNN with a fast associative memory (Ba, Hinton et al., NIPS 2016, eqs. 1-4).

Per time step t, with slow weights W (recurrent) and C (input):

    preliminary     z(t+1)   = W h(t) + C x(t)                                  (the paper's [W h + C x])
    first guess     h_0      = ReLU(z(t+1))
    inner loop      h_{s+1}  = ReLU(LN(z(t+1) + A(t) h_s))        s = 0 .. S-1
    fast weights    A(t+1)   = λ A(t) + η h(t+1) h(t+1)ᵀ,         A = 0 at the start of a sequence

so A(t) already holds h(t) when step t+1 runs. A(t)·h is computed in one of two equal forms:

    matrix form     the explicit (B, H, H) tensor A(t)                       O(H²) per step, the reference
    attention form  A(t) h = η Σ_τ λ^(t−τ) h(τ) (h(τ)ᵀ h)                   O(t·H) per step, no H×H state

PAD steps (mask 0) leave both h and A unchanged, so left padding never changes the answer. In the attention
form that means a PAD step neither decays the stored weights nor adds an entry.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contract.vocab import PAD_TOKEN, Vocabulary
from model.config import ModelConfig


class RetrievalHead(nn.Module):
    """The paper's output: a 100-unit ReLU layer, then logits over the answer classes."""

    def __init__(self, hidden_size: int, head_size: int, num_classes: int):
        super().__init__()
        self.hidden = nn.Linear(hidden_size, head_size)
        self.out = nn.Linear(head_size, num_classes)

    def forward(self, h: Tensor) -> Tensor:  # (B, H) -> (B, classes)
        return self.out(torch.relu(self.hidden(h)))


def pad_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """(B, T) int64 -> (B, T, 1) float: 1 for a real token, 0 for PAD."""
    return (tokens != pad_id).unsqueeze(-1).float()


class FastWeightsRNN(nn.Module):
    """forward(tokens (B, T) int64, left padded) -> (logits (B, classes), memory_attention (B, T))."""

    def __init__(self, config: ModelConfig, pad_id: int | None = None):
        super().__init__()
        self.config = config
        self.pad_id = Vocabulary().index[PAD_TOKEN] if pad_id is None else pad_id
        H = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.input_proj = nn.Linear(config.embed_size, H)  # C (with the bias of the hidden layer)
        self.recurrent = nn.Linear(H, H, bias=False)  # W
        self.layer_norm = nn.LayerNorm(H)  # per example, over its H hidden units; learned gain and bias
        self.head = RetrievalHead(H, config.head_size, config.num_classes)
        with torch.no_grad():
            self.recurrent.weight.copy_(config.recurrent_init_scale * torch.eye(H))

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if self.config.memory_form == "matrix":
            return self._forward_matrix(tokens)
        return self._forward_attention(tokens)

    def _inputs(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        x = self.input_proj(self.embed(tokens))  # (B, T, H)  C·x(t)
        return x, pad_mask(tokens, self.pad_id)  # (B, T, H), (B, T, 1)

    def _forward_matrix(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The reference: the explicit fast weight matrix A(t), (B, H, H)."""
        cfg = self.config
        B, T = tokens.shape
        x, mask = self._inputs(tokens)
        h = x.new_zeros(B, cfg.hidden_size)  # (B, H)
        A = x.new_zeros(B, cfg.hidden_size, cfg.hidden_size)  # (B, H, H)
        history: list[Tensor] = []
        weights = x.new_zeros(B, 0)  # (B, t) η·λ^(t−τ) per stored step, only for memory_attention
        scores = x.new_zeros(B, 0)
        for t in range(T):
            m = mask[:, t]  # (B, 1)
            z = self.recurrent(h) + x[:, t]  # (B, H)
            hs = torch.relu(z)
            for _ in range(cfg.inner_steps):
                if history:
                    scores = torch.bmm(torch.stack(history, 1), hs.unsqueeze(-1)).squeeze(-1)  # (B, t)
                Ah = torch.bmm(A, hs.unsqueeze(-1)).squeeze(-1)  # (B, H)
                hs = torch.relu(self.layer_norm(z + Ah))
            h = m * hs + (1 - m) * h
            keep = 1 - m * (1 - cfg.decay)  # λ on a real step, 1 on PAD
            A = keep.unsqueeze(-1) * A + cfg.fast_lr * m.unsqueeze(-1) * h.unsqueeze(2) * h.unsqueeze(1)
            if t < T - 1:
                history.append(h)
                weights = torch.cat([weights * keep, cfg.fast_lr * m], dim=1)
        return self.head(h), _attention_output(weights, scores, B, T)

    def _forward_attention(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """A(t)·h as η Σ_τ λ^(t−τ) h(τ)(h(τ)ᵀh): no H×H state, O(t·H) per step."""
        cfg = self.config
        B, T = tokens.shape
        x, mask = self._inputs(tokens)
        h = x.new_zeros(B, cfg.hidden_size)  # (B, H)
        past = x.new_zeros(B, 0, cfg.hidden_size)  # (B, t, H)  h(τ) for every step τ < t
        weights = x.new_zeros(B, 0)  # (B, t)  η·λ^(#real steps after τ), 0 where τ was PAD
        scores = x.new_zeros(B, 0)  # (B, t)  h(τ)ᵀ h_s at the last inner step
        for t in range(T):
            m = mask[:, t]  # (B, 1)
            z = self.recurrent(h) + x[:, t]  # (B, H)
            hs = torch.relu(z)
            for _ in range(cfg.inner_steps):
                if t > 0:
                    scores = torch.bmm(past, hs.unsqueeze(-1)).squeeze(-1)  # (B, t)
                    Ah = torch.bmm((weights * scores).unsqueeze(1), past).squeeze(1)  # (B, H)
                    hs = torch.relu(self.layer_norm(z + Ah))
                else:
                    hs = torch.relu(self.layer_norm(z))  # A(0) = 0
            h = m * hs + (1 - m) * h
            if t < T - 1:
                keep = 1 - m * (1 - cfg.decay)  # λ on a real step, 1 on PAD
                past = torch.cat([past, h.unsqueeze(1)], dim=1)
                weights = torch.cat([weights * keep, cfg.fast_lr * m], dim=1)
        return self.head(h), _attention_output(weights, scores, B, T)


def _attention_output(weights: Tensor, scores: Tensor, B: int, T: int) -> Tensor:
    """(B, T): η·λ^(t−τ)·h(τ)ᵀh at the final step for τ < T−1; the query position itself gets 0."""
    if scores.shape[1] == 0:
        return weights.new_zeros(B, T)
    return torch.cat([weights * scores, weights.new_zeros(B, 1)], dim=1)
