"""The stateful ("stream") model's contract, declared once: export writes it, the service reads it.

Pure Python (no torch, no onnx, no numpy), like the rest of `contract`, because the service imports it.

The stream model carries a session's memory between calls instead of re-reading its history::

    tokens         int64   [batch, C]       one chunk, left padded with PAD (a pair, pairs, or '??k')
    state_h        float32 [batch, H]       h after the session's last real token (zeros: empty session)
    state_memory   float32 [batch, P, H]    h(τ) of the earlier steps, newest last, zero rows before them
      ->
    logits         float32 [batch, classes] the head on the chunk's last h (meaningful after a query)
    memory_attention float32 [batch, P + 1] η·λ^(t−τ)·h(τ)ᵀq at the chunk's last step, the last column
                                            the chunk's last position itself (0), right-aligned like the
                                            last P + 1 columns of the whole-sequence graph's attention
    state_h_out, state_memory_out           the state after the chunk (PAD steps leave it unchanged)

P = T_max − 1 for the longest bucket T_max = 2·K_max + 3 the family serves, so a session holds up to K_max
pairs and can still be queried. The memory is a shift register (each real step shifts h(t−1) in at the
right, the oldest row falls out), so a stored position's decay weight η·λ^(distance) is a constant of the
graph and every row of a batch may hold a session of a different length.
"""

from __future__ import annotations

INPUT_STATE_H = "state_h"
INPUT_STATE_MEMORY = "state_memory"
OUTPUT_STATE_H = "state_h_out"
OUTPUT_STATE_MEMORY = "state_memory_out"

STREAM_SUFFIX = "_stream"  # <family>_stream: the stateful model of a family, next to its buckets
DEFAULT_CHUNK_LEN = 3  # one pair (left padded by one PAD) or one query '??k' per call


def stream_model_name(family: str) -> str:
    return f"{family}{STREAM_SUFFIX}"


class StreamKeys:
    """metadata_props of a stream graph, beside `contract.MetadataKeys` (whose SEQ_LEN is C)."""

    CHUNK_LEN = "fastweights.stream.chunk_len"  # int C
    MEMORY_LEN = "fastweights.stream.memory_len"  # int P
    MAX_PAIRS = "fastweights.stream.max_pairs"  # int K_max: the pairs a session may hold
    STATE_FORM = "fastweights.stream.state_form"  # "shift-register" (the attention form's memory)


# config.pbtxt parameter that marks a stream model (the service and the verifier tell it from the buckets)
STREAM_PARAMETER = "stream_of"


def max_pairs_for_memory(memory_len: int) -> int:
    """The pairs a session may hold so that a query ('??k', 3 steps) still fits: 2K + 2 <= P."""
    return max(0, (memory_len - 2) // 2)


def state_bytes(hidden_size: int, memory_len: int) -> int:
    """float32 bytes of one session's state: h (H) and the memory (P, H)."""
    return 4 * hidden_size * (1 + memory_len)
