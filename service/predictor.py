"""Load one model version of the repository into an onnxruntime session; encode queries, run, decode.

Knows nothing of HTTP or batching. Everything needed to encode inputs (vocabulary, PAD id, answer classes,
sequence length) comes from the ONNX graph's own metadata, read by `contract.parse_metadata`, so a model
repository is self-contained. The repository's layout is `contract.repository`'s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from contract import (
    INPUT_TOKENS,
    ONNX_FILENAME,
    OUTPUT_ATTENTION,
    OUTPUT_LOGITS,
    ContractError,
    TensorSpec,
    check_io,
    input_specs,
    output_specs,
    parse_metadata,
)
from contract.vocab import ParsedQuery, Vocabulary, max_pairs_for_length
from service.providers import DeviceUnavailableError, choose_providers, confirm_providers, warm_up_batch_sizes

log = logging.getLogger("service.predictor")


class ModelLoadError(RuntimeError):
    """A model version that could not be loaded or failed its warm-up check; the message says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"model {name!r}: {reason}")
        self.name = name
        self.reason = reason


# ----------------------------------------------------------------------------------------------------
# A loaded model version


@dataclass(frozen=True)
class ModelInfo:
    """What a client (native or V2) needs to know about one loaded model version."""

    name: str  # repository name, e.g. "fastweights_t11" (one per length bucket)
    version: str  # e.g. "1"
    family: str  # logical model users ask for, e.g. "fastweights"
    seq_len: int  # T: the graph is unrolled for exactly T tokens (shorter inputs are left padded)
    vocab_tokens: tuple[str, ...]  # index = token id
    pad_id: int
    answer_classes: tuple[str, ...]  # class index -> value string
    model_config: dict[str, Any]
    metadata: dict[str, str]  # every metadata_props entry of the graph
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    providers: tuple[str, ...]  # what the session REALLY uses (session.get_providers())
    path: str
    load_seconds: float = 0.0
    stateful: bool = False  # the stream model of memory sessions (service.sessions), not a length bucket

    @property
    def max_pairs(self) -> int:
        return max_pairs_for_length(self.seq_len)


@dataclass
class LoadedModel:
    """One model version in an onnxruntime session. `run` is synchronous and thread-safe (ORT releases
    the GIL).

    Call it from an executor thread, never from the event loop (the batcher does that).
    """

    info: ModelInfo
    session: ort.InferenceSession
    vocab: Vocabulary
    simulated_delay_s: float = 0.0
    _output_names: list[str] = field(default_factory=lambda: [OUTPUT_LOGITS, OUTPUT_ATTENTION])
    # The C++ binding `InferenceSession.run` calls after its Python-side checks of the feed (names, graph
    # capture, ownership): 1-3 µs less per call, a third of a batch-1 run's overhead (docs/export.md). Our
    # feed is always the one valid input, so those checks cannot fail. None (private API gone in some
    # onnxruntime release): the public `run`. Any error there also goes through `run`, which keeps
    # onnxruntime's own provider fallback and error messages.
    _binding: Any = field(default=None, init=False, repr=False)  # set from `session` in __post_init__
    # Default run options, made once and passed to the binding: given None instead, pybind11 looks for a
    # conversion from NoneType and builds and discards an AttributeError on every run (CPython 3.11).
    _run_options: ort.RunOptions = field(default_factory=ort.RunOptions, init=False, repr=False)

    def __post_init__(self) -> None:
        binding = getattr(self.session, "_sess", None)
        self._binding = binding if callable(getattr(binding, "run", None)) else None

    def run(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """tokens (B, T) int64 -> {"logits": (B, C) float32, "memory_attention": (B, T) float32}."""
        if tokens.ndim != 2 or tokens.shape[1] != self.info.seq_len:
            raise ValueError(f"tokens must have shape (B, {self.info.seq_len}), got {tokens.shape}")
        if self.simulated_delay_s:
            time.sleep(self.simulated_delay_s)
        feed = {INPUT_TOKENS: tokens.astype(np.int64, copy=False)}
        outputs = None
        if self._binding is not None:
            # An error there is answered again by the public API below, with its own handling.
            with contextlib.suppress(Exception):
                outputs = self._binding.run(self._output_names, feed, self._run_options)
        if outputs is None:
            outputs = self.session.run(self._output_names, feed)
        logits, attention = outputs
        return {OUTPUT_LOGITS: logits, OUTPUT_ATTENTION: attention}

    def encode(self, queries: Sequence[ParsedQuery]) -> np.ndarray:
        """Parsed queries -> (B, T) int64, left padded with PAD (the layout the model was trained on)."""
        return encode(queries, self.vocab, self.info.seq_len)


_NO_TOKEN = 255  # in a translation table: this byte is no token (the vocabulary has far fewer than 255)


def _byte_table(vocab: Vocabulary) -> bytes | None:
    """A `bytes.translate` table: ASCII byte -> token id, `_NO_TOKEN` where none; NUL -> PAD.

    None when some non-PAD token is not one ASCII character (then `encode` goes token by token).
    """
    return _byte_table_of(vocab.tokens, vocab.pad_id)


@functools.lru_cache(maxsize=64)
def _byte_table_of(tokens: tuple[str, ...], pad_id: int) -> bytes | None:
    if len(tokens) >= _NO_TOKEN or pad_id >= _NO_TOKEN:
        return None
    table = bytearray([_NO_TOKEN]) * 256
    for i, tok in enumerate(tokens):
        if i == pad_id:
            continue
        if len(tok) != 1 or ord(tok) > 127:
            return None
        table[ord(tok)] = i
    if table[0] != _NO_TOKEN:
        return None  # NUL is a token: it cannot be the padding byte
    table[0] = pad_id  # `encode` pads with NUL (and refuses it inside a query)
    return bytes(table)


def encode(queries: Sequence[ParsedQuery], vocab: Vocabulary, seq_len: int) -> np.ndarray:
    """Left padded (B, T) int64 ids. Every row right-justified into one byte string (NUL bytes are the
    padding), translated to ids in one `bytes.translate` call, then one conversion for the whole batch.
    """
    texts = [q.to_sequence() for q in queries]
    for text in texts:
        if len(text) > seq_len:
            raise ValueError(f"query of {len(text)} tokens does not fit T={seq_len}")
    table = _byte_table(vocab)
    if table is not None:
        joined = "".join([t.rjust(seq_len, "\0") for t in texts])
        if joined.isascii():
            ids = joined.encode("ascii").translate(table)
            # A NUL inside a query would pass for padding: such rows take the token-by-token path below.
            if _NO_TOKEN not in ids and all("\0" not in t for t in texts):
                return np.frombuffer(ids, dtype=np.uint8).astype(np.int64).reshape(len(texts), seq_len)
    tokens = np.full((len(texts), seq_len), vocab.pad_id, dtype=np.int64)  # (B, T)
    for row, text in enumerate(texts):
        tokens[row, seq_len - len(text) :] = vocab.encode(text)  # raises the typed error for a bad char
    return tokens


def _session_specs(nodes: Sequence[Any]) -> tuple[TensorSpec, ...]:
    """onnxruntime's NodeArgs as contract TensorSpecs (symbolic dims stay strings or None)."""
    return tuple(TensorSpec(n.name, n.type, tuple(n.shape)) for n in nodes)


def load_model(
    path: Path,
    name: str,
    version: str,
    *,
    device: str = "auto",
    intra_op_threads: int = 0,
    simulated_delay_s: float = 0.0,
    max_batch_size: int = 2,
) -> LoadedModel:
    """Load `path` (a model.onnx) into a session, check it against the contract and warm it up.

    Raises `ModelLoadError` with a readable reason for a missing/corrupt file, missing metadata, a wrong
    signature, or outputs of the wrong shape or with non-finite values in the warm-up run.
    """
    start = time.perf_counter()
    if not path.is_file():
        raise ModelLoadError(name, f"no {ONNX_FILENAME} in version {version}")
    try:
        choice = choose_providers(device)
    except DeviceUnavailableError as exc:
        raise ModelLoadError(name, str(exc)) from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers on every load
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(choice.providers))
    except Exception as exc:  # onnxruntime raises several unrelated types for bad files
        # onnxruntime's message names the absolute file path; reasons reach HTTP answers (index, load).
        reason = _first_line(exc).replace(str(path), f"{name}/{version}/{path.name}")
        raise ModelLoadError(name, f"onnxruntime could not load {path.name}: {reason}") from None
    try:
        confirm_providers(choice, session.get_providers())
    except DeviceUnavailableError as exc:
        raise ModelLoadError(name, str(exc)) from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    where = f"{name}/{version}/{path.name}"  # not the absolute path: reasons reach HTTP answers
    try:
        parsed = parse_metadata(meta, where)
    except ContractError as exc:
        raise ModelLoadError(name, exc.problem) from None
    from service.sessions.stream_model import is_stream_metadata, load_stream_model

    if is_stream_metadata(meta):
        stream = load_stream_model(session, meta, name, version, str(path))
        stream.info = _with_load_time(stream.info, time.perf_counter() - start)
        return stream
    seq_len = parsed.seq_len
    try:
        check_io(
            _session_specs(session.get_inputs()),
            _session_specs(session.get_outputs()),
            seq_len,
            parsed.num_classes,
            where,
        )
    except ContractError as exc:
        raise ModelLoadError(name, exc.problem) from None
    vocab = Vocabulary(parsed.vocab, parsed.pad_token)
    vocab.answer_classes = parsed.answer_classes
    info = ModelInfo(
        name=name,
        version=version,
        family=parsed.family,
        seq_len=seq_len,
        vocab_tokens=parsed.vocab,
        pad_id=parsed.pad_id,
        answer_classes=parsed.answer_classes,
        model_config=parsed.model_config,
        metadata=meta,
        inputs=input_specs(seq_len),
        outputs=output_specs(seq_len, parsed.num_classes),
        providers=tuple(session.get_providers()),
        path=str(path),
    )
    model = LoadedModel(info, session, vocab)
    warm_up(model, warm_up_batch_sizes(info.providers, max_batch_size))
    model.simulated_delay_s = simulated_delay_s
    elapsed = time.perf_counter() - start
    model.info = _with_load_time(info, elapsed)
    log.info(
        "model loaded",
        extra={
            "model": name,
            "version": version,
            "providers": list(info.providers),
            "provider_choice": choice.reason,
            "seq_len": seq_len,
            "load_seconds": round(elapsed, 3),
        },
    )
    return model


def _with_load_time(info: ModelInfo, seconds: float) -> ModelInfo:
    return replace(info, load_seconds=seconds)


def warm_up(model: LoadedModel, batch_sizes: Sequence[int] = (1, 2)) -> None:
    """Run each batch size once (first runs allocate) and check the outputs' shapes and values."""
    info = model.info
    for batch in batch_sizes:
        tokens = np.full((batch, info.seq_len), info.pad_id, dtype=np.int64)
        try:
            out = model.run(tokens)
        except Exception as exc:
            raise ModelLoadError(info.name, f"warm-up run failed: {_first_line(exc)}") from None
        logits, attention = out[OUTPUT_LOGITS], out[OUTPUT_ATTENTION]
        if logits.shape != (batch, len(info.answer_classes)):
            raise ModelLoadError(info.name, f"warm-up: logits shape {logits.shape}, expected ({batch}, C)")
        if attention.shape != (batch, info.seq_len):
            raise ModelLoadError(info.name, f"warm-up: memory_attention shape {attention.shape}")
        if not (np.isfinite(logits).all() and np.isfinite(attention).all()):
            raise ModelLoadError(info.name, "warm-up: non-finite outputs")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------
# Decoding


class Prediction(NamedTuple):  # built once per row of every batch: cheaper to create than a frozen dataclass
    value: str
    confidence: float
    top_k: list[tuple[str, float]]  # (value, probability), most likely first
    explanation: list[tuple[str, str, int, float]]  # (key, value, position, weight), highest weight first


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# Up to this many rows, `decode` ranks in plain Python: a dozen numpy calls on a (1, 10) array cost more
# than the arithmetic (a single request is decoded on its own; measured, docs/benchmarks.md).
SMALL_BATCH = 2


def _rank_rows(
    logits: list[list[float]], answer_classes: Sequence[str], k: int
) -> tuple[list[list[str]], list[list[float]]]:
    """`decode`'s ranking for a few rows, without numpy: the same float64 softmax, order and rounding."""
    values, chances = [], []
    for row in logits:
        top = max(row)
        e = [math.exp(x - top) for x in row]
        total = math.fsum(e)
        probs = [x / total for x in e]
        if k == 1:  # the usual question: no sort, the first of a tie as below
            best = max(probs)
            c = probs.index(best)
            values.append([answer_classes[c]])
            chances.append([round(best, 6)])
            continue
        order = sorted(range(len(probs)), key=lambda c: -probs[c])[:k]  # stable: ties keep the first
        values.append([answer_classes[c] for c in order])
        chances.append([round(probs[c], 6) for c in order])
    return values, chances


def decode(
    queries: Sequence[ParsedQuery],
    logits: np.ndarray,
    attention: np.ndarray,
    answer_classes: Sequence[str],
    *,
    top_k: int = 1,
    explain: bool = False,
) -> list[Prediction]:
    """Model outputs -> predictions. `attention` (B, T) is left padded like the input.

    The explanation ranks the stored pairs by the fast memory's attention at the final step: the weights of
    a pair's key and value positions are summed, then normalised to sum to 1 over the pairs.

    Probabilities are rounded to 6 decimals (what the APIs report). The whole batch is ranked at once;
    only the explanation, when asked for, is built row by row.
    """
    k = max(1, min(top_k, logits.shape[1]))
    if logits.shape[0] <= SMALL_BATCH:
        values, chances = _rank_rows(logits.tolist(), answer_classes, k)
    else:
        probs = softmax(logits.astype(np.float64))  # (B, C)
        # (B, k) class indices, most likely first (argmax and the stable sort both keep the first of a tie)
        order = probs.argmax(axis=1)[:, None] if k == 1 else np.argsort(-probs, axis=1, kind="stable")[:, :k]
        values = np.asarray(answer_classes, dtype=object)[order].tolist()  # (B, k) value strings
        chances = np.round(probs[np.arange(len(order))[:, None], order], 6).tolist()  # (B, k)
    T = attention.shape[1]
    out = []
    for row, query in enumerate(queries):
        best = list(zip(values[row], chances[row], strict=True))
        explanation: list[tuple[str, str, int, float]] = []
        if explain:
            start = T - (2 * query.num_pairs + 3)
            att = np.clip(attention[row].astype(np.float64), 0.0, None)
            weights = np.array([att[start + 2 * i] + att[start + 2 * i + 1] for i in range(query.num_pairs)])
            total = weights.sum()
            weights = weights / total if total > 0 else np.full(len(weights), 1.0 / len(weights))
            ranked = sorted(range(query.num_pairs), key=lambda i: -weights[i])
            explanation = [(*query.pairs[i], 2 * i, round(float(weights[i]), 6)) for i in ranked]
        out.append(Prediction(best[0][0], best[0][1], best, explanation))
    return out
