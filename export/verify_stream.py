"""Parity of the stream graph with the whole-sequence graphs it stands in for.

Each sequence (K uniform in 1..K_max, K_max what the family's longest bucket serves) is cut at random into
chunks of 1..C tokens, each chunk left padded to C, with a random number of all-PAD chunks first (rows with
fewer chunks wait with PAD chunks, which must change nothing), and run through the stream graph, the state
carried from call to call. Its final logits and attention are compared with the whole-sequence graph of the
smallest bucket that fits (left padded as the service does): max |Δlogits|, argmax agreement, and max
|Δattention| over the right-aligned last P + 1 positions (the positions before them must be 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract import INPUT_TOKENS, OUTPUT_ATTENTION, OUTPUT_LOGITS, RepositoryEntry
from contract.stream import INPUT_STATE_H, INPUT_STATE_MEMORY, OUTPUT_STATE_H, OUTPUT_STATE_MEMORY
from contract.vocab import max_pairs_for_length, sequence_length
from model.data import PAD_ID, generate

DEFAULT_BATCH = 256


@dataclass
class StreamReport:
    name: str
    chunk_len: int
    memory_len: int
    tolerance: float
    sequences: int = 0
    calls: int = 0
    max_abs_logits: float = 0.0
    max_abs_attention: float = 0.0
    argmax_mismatches: int = 0
    num_pairs: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.sequences > 0
            and self.max_abs_logits <= self.tolerance
            and self.max_abs_attention <= self.tolerance
            and self.argmax_mismatches == 0
        )

    def format(self) -> str:
        ks = f"{min(self.num_pairs)}-{max(self.num_pairs)}" if self.num_pairs else "-"
        verdict = "PASS" if self.ok else "FAIL"
        return (
            f"{verdict}: stream {self.name} (C={self.chunk_len}, P={self.memory_len}): {self.sequences} "
            f"sequences (K {ks}) in random chunks, {self.calls} calls, against the whole-sequence graphs: "
            f"max|Δlogits| {self.max_abs_logits:.2e}, max|Δattention| {self.max_abs_attention:.2e}, "
            f"{self.argmax_mismatches} argmax mismatches (tolerance {self.tolerance:g})"
        )


def random_chunks(row: np.ndarray, chunk_len: int, rng: np.random.Generator, pad_id: int) -> list[np.ndarray]:
    """`row`'s tokens (no PAD) cut at random into pieces of 1..C tokens, each left padded to C."""
    chunks, i = [], 0
    while i < len(row):
        size = int(rng.integers(1, chunk_len + 1))
        piece = row[i : i + size]
        chunk = np.full(chunk_len, pad_id, dtype=np.int64)
        chunk[chunk_len - len(piece) :] = piece
        chunks.append(chunk)
        i += size
    return chunks


def verify_stream(
    stream_path: str | Path,
    buckets: Sequence[RepositoryEntry],
    sequences: int,
    tolerance: float,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
) -> StreamReport:
    """Run `sequences` random sequences through the stream graph in random chunks; compare (module doc)."""
    from export.verify import make_session

    stream = make_session(stream_path)
    tokens_in = next(i for i in stream.get_inputs() if i.name == INPUT_TOKENS)
    memory_in = next(i for i in stream.get_inputs() if i.name == INPUT_STATE_MEMORY)
    C, P, H = int(tokens_in.shape[1]), int(memory_in.shape[1]), int(memory_in.shape[2])
    buckets = sorted(buckets, key=lambda e: e.seq_len)
    k_max = min(max_pairs_for_length(buckets[-1].seq_len), max(0, (P - 2) // 2))
    whole = {e.seq_len: make_session(e.model_path) for e in buckets}
    report = StreamReport(Path(stream_path).parent.parent.name, C, P, tolerance)
    rng = np.random.default_rng(seed)
    data = generate(sequences, 1, k_max, np.random.SeedSequence([seed, 18]), length=sequence_length(k_max))
    report.num_pairs = sorted(set(data.num_pairs.tolist()))
    for lo in range(0, sequences, batch):
        rows = data.tokens[lo : lo + batch]
        ks = data.num_pairs[lo : lo + batch]
        bare = [r[len(r) - sequence_length(int(k)) :] for r, k in zip(rows, ks, strict=True)]
        per_row = [random_chunks(r, C, rng, PAD_ID) for r in bare]
        waits = [int(rng.integers(0, 3)) for _ in per_row]  # extra leading all-PAD chunks
        calls = max(len(c) + w for c, w in zip(per_row, waits, strict=True))
        feed = np.full((len(rows), calls, C), PAD_ID, dtype=np.int64)  # (B, calls, C)
        for i, chunks in enumerate(per_row):
            feed[i, calls - len(chunks) :] = chunks  # every row's query ends in the last call
        h = np.zeros((len(rows), H), dtype=np.float32)
        memory = np.zeros((len(rows), P, H), dtype=np.float32)
        logits = attention = None
        for c in range(calls):
            logits, attention, h, memory = stream.run(
                [OUTPUT_LOGITS, OUTPUT_ATTENTION, OUTPUT_STATE_H, OUTPUT_STATE_MEMORY],
                {INPUT_TOKENS: feed[:, c], INPUT_STATE_H: h, INPUT_STATE_MEMORY: memory},
            )
            report.calls += 1
        assert logits is not None and attention is not None
        for T, session in whole.items():
            sel = [
                i for i, k in enumerate(ks) if sequence_length(int(k)) <= T and _bucket(whole, int(k)) == T
            ]
            if not sel:
                continue
            padded = np.full((len(sel), T), PAD_ID, dtype=np.int64)
            for j, i in enumerate(sel):
                padded[j, T - len(bare[i]) :] = bare[i]
            ref_logits, ref_attention = session.run([OUTPUT_LOGITS, OUTPUT_ATTENTION], {INPUT_TOKENS: padded})
            got_logits, got_attention = logits[sel], attention[sel]
            report.max_abs_logits = max(report.max_abs_logits, float(np.abs(got_logits - ref_logits).max()))
            report.argmax_mismatches += int((got_logits.argmax(-1) != ref_logits.argmax(-1)).sum())
            width = min(P + 1, T)
            diff = np.abs(got_attention[:, -width:] - ref_attention[:, -width:]).max()
            beyond = np.abs(got_attention[:, : P + 1 - width]).max() if width < P + 1 else 0.0
            report.max_abs_attention = max(report.max_abs_attention, float(diff), float(beyond))
        report.sequences += len(rows)
    return report


def _bucket(whole: dict[int, object], num_pairs: int) -> int:
    return min(T for T in whole if sequence_length(num_pairs) <= T)
