"""The stream model (`<family>_stream`, contract `contract.stream`) loaded for memory sessions.

One onnxruntime run takes one chunk per row with that row's state, so steps of many sessions share a run.
The registry's batcher hands a run function ONE array of rows, so a row here is the chunk and the state
packed side by side (`pack`): [C token ids as float32 (exact below 2²⁴) | h (H) | memory (P·H)]; `run`
unpacks it and returns every output row-aligned, as the batcher slices them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from contract import (
    INPUT_TOKENS,
    ONNX_FILENAME,
    OUTPUT_ATTENTION,
    OUTPUT_LOGITS,
    ContractError,
    TensorSpec,
    parse_metadata,
)
from contract.stream import (
    INPUT_STATE_H,
    INPUT_STATE_MEMORY,
    OUTPUT_STATE_H,
    OUTPUT_STATE_MEMORY,
    StreamKeys,
    state_bytes,
)
from contract.vocab import Vocabulary
from service.predictor import LoadedModel, ModelInfo, ModelLoadError

_OUTPUTS = [OUTPUT_LOGITS, OUTPUT_ATTENTION, OUTPUT_STATE_H, OUTPUT_STATE_MEMORY]


@dataclass(frozen=True)
class StreamShape:
    chunk_len: int  # C
    memory_len: int  # P
    hidden_size: int  # H
    max_pairs: int  # K_max: pairs a session may hold

    @property
    def row_width(self) -> int:
        return self.chunk_len + self.hidden_size * (1 + self.memory_len)

    @property
    def state_bytes(self) -> int:
        return state_bytes(self.hidden_size, self.memory_len)


def is_stream_metadata(meta: dict[str, str]) -> bool:
    return StreamKeys.CHUNK_LEN in meta


class StreamModel(LoadedModel):
    """A LoadedModel whose `run` takes packed rows (module docstring) instead of bare tokens."""

    shape: StreamShape

    def pack(self, tokens: np.ndarray, h: np.ndarray, memory: np.ndarray) -> np.ndarray:
        """tokens (B, C) int64, h (B, H), memory (B, P, H) float32 -> (B, row_width) float32."""
        B = tokens.shape[0]
        return np.concatenate(
            [tokens.astype(np.float32), h.reshape(B, -1), memory.reshape(B, -1)], axis=1, dtype=np.float32
        )

    def run(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Packed rows (B, row_width) float32 -> logits, memory_attention, state_h_out, state_memory_out."""
        s = self.shape
        if tokens.ndim != 2 or tokens.shape[1] != s.row_width:
            raise ValueError(f"packed rows must have shape (B, {s.row_width}), got {tokens.shape}")
        B, C, H = tokens.shape[0], s.chunk_len, s.hidden_size
        feed = {
            INPUT_TOKENS: tokens[:, :C].astype(np.int64),
            INPUT_STATE_H: np.ascontiguousarray(tokens[:, C : C + H]),
            INPUT_STATE_MEMORY: np.ascontiguousarray(tokens[:, C + H :]).reshape(B, s.memory_len, H),
        }
        outputs = self.session.run(_OUTPUTS, feed)
        return dict(zip(_OUTPUTS, outputs, strict=True))


def load_stream_model(
    session: ort.InferenceSession, meta: dict[str, str], name: str, version: str, path: str
) -> StreamModel:
    """The stream graph already opened by `service.predictor.load_model`, checked and warmed up."""
    try:
        parsed = parse_metadata(meta, f"{name}/{version}/{ONNX_FILENAME}")
    except ContractError as exc:
        raise ModelLoadError(name, exc.problem) from None
    tokens, pad_id, classes, config = parsed.vocab, parsed.pad_id, parsed.answer_classes, parsed.model_config
    vocab = Vocabulary(tokens, tokens[pad_id])
    try:
        chunk_len = int(meta[StreamKeys.CHUNK_LEN])
        memory_len = int(meta[StreamKeys.MEMORY_LEN])
        max_pairs = int(meta[StreamKeys.MAX_PAIRS])
        hidden = int(config["hidden_size"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(name, f"unreadable stream metadata: {exc}") from None
    if chunk_len < 3:
        raise ModelLoadError(name, f"chunk length {chunk_len} cannot hold a query '??k' (3 tokens)")
    vocab.answer_classes = classes
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    want_in = {INPUT_TOKENS, INPUT_STATE_H, INPUT_STATE_MEMORY}
    if set(inputs) != want_in or not set(_OUTPUTS) <= outputs:
        raise ModelLoadError(name, f"stream graph takes {sorted(inputs)} and gives {sorted(outputs)}")
    if list(inputs[INPUT_STATE_MEMORY].shape[1:]) != [memory_len, hidden]:
        raise ModelLoadError(name, f"state_memory is {inputs[INPUT_STATE_MEMORY].shape}, not [B, P, H]")
    info = ModelInfo(
        name=name,
        version=version,
        family=parsed.family,
        seq_len=chunk_len,
        vocab_tokens=tokens,
        pad_id=pad_id,
        answer_classes=classes,
        model_config=config,
        metadata=meta,
        inputs=(TensorSpec(INPUT_TOKENS, "int64", ("batch", chunk_len)),),
        outputs=(
            TensorSpec(OUTPUT_LOGITS, "float32", ("batch", len(classes))),
            TensorSpec(OUTPUT_ATTENTION, "float32", ("batch", memory_len + 1)),
        ),
        providers=tuple(session.get_providers()),
        path=path,
        stateful=True,
    )
    model = StreamModel(info, session, vocab)
    model.shape = StreamShape(chunk_len, memory_len, hidden, max_pairs)
    _warm_up(model)
    return model


def _warm_up(model: StreamModel) -> None:
    s = model.shape
    for batch in (1, 2):
        tokens = np.full((batch, s.chunk_len), model.info.pad_id, dtype=np.int64)
        h = np.zeros((batch, s.hidden_size), dtype=np.float32)
        memory = np.zeros((batch, s.memory_len, s.hidden_size), dtype=np.float32)
        try:
            out = model.run(model.pack(tokens, h, memory))
        except Exception as exc:
            raise ModelLoadError(model.info.name, f"warm-up run failed: {exc}") from None
        if out[OUTPUT_STATE_MEMORY].shape != (batch, s.memory_len, s.hidden_size):
            raise ModelLoadError(model.info.name, "warm-up: state_memory_out has the wrong shape")
        if np.abs(out[OUTPUT_STATE_MEMORY]).max() != 0 or np.abs(out[OUTPUT_STATE_H]).max() != 0:
            raise ModelLoadError(model.info.name, "warm-up: an all-PAD chunk changed the state")
