"""The paper's Table 1 baselines, with the same embedding, masking and output head as FastWeightsRNN.

Both return a zero `memory_attention` (they have no fast memory) so that every kind honours one contract.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contract.vocab import PAD_TOKEN, Vocabulary
from model.config import ModelConfig
from model.fastweights import RetrievalHead, pad_mask


class _Baseline(nn.Module):
    def __init__(self, config: ModelConfig, pad_id: int | None):
        super().__init__()
        self.config = config
        self.pad_id = Vocabulary().index[PAD_TOKEN] if pad_id is None else pad_id
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.head = RetrievalHead(config.hidden_size, config.head_size, config.num_classes)


class IRNN(_Baseline):
    """ReLU RNN with the recurrent matrix initialised to the identity (Le, Jaitly & Hinton, 2015)."""

    def __init__(self, config: ModelConfig, pad_id: int | None = None):
        super().__init__(config, pad_id)
        H = config.hidden_size
        self.input_proj = nn.Linear(config.embed_size, H)
        self.recurrent = nn.Linear(H, H, bias=False)
        with torch.no_grad():
            self.recurrent.weight.copy_(torch.eye(H))

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        B, T = tokens.shape
        x = self.input_proj(self.embed(tokens))  # (B, T, H)
        mask = pad_mask(tokens, self.pad_id)  # (B, T, 1)
        h = x.new_zeros(B, self.config.hidden_size)
        for t in range(T):
            m = mask[:, t]
            h = m * torch.relu(self.recurrent(h) + x[:, t]) + (1 - m) * h
        return self.head(h), x.new_zeros(B, T)


class LSTM(_Baseline):
    """A standard LSTM cell unrolled over time, PAD steps leaving (h, c) unchanged."""

    def __init__(self, config: ModelConfig, pad_id: int | None = None):
        super().__init__(config, pad_id)
        self.cell = nn.LSTMCell(config.embed_size, config.hidden_size)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        B, T = tokens.shape
        e = self.embed(tokens)  # (B, T, E)
        mask = pad_mask(tokens, self.pad_id)  # (B, T, 1)
        h = e.new_zeros(B, self.config.hidden_size)
        c = e.new_zeros(B, self.config.hidden_size)
        for t in range(T):
            m = mask[:, t]
            h_new, c_new = self.cell(e[:, t], (h, c))
            h = m * h_new + (1 - m) * h
            c = m * c_new + (1 - m) * c
        return self.head(h), e.new_zeros(B, T)
