"""The associative-retrieval task: a seeded generator and the fixed splits every number is reported on.

numpy only (no torch), so export checks, benchmarks and tests can draw the same sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.vocab import DEFAULT_TOKENS, KEYS, VALUES, Vocabulary, sequence_length

VOCAB = Vocabulary(DEFAULT_TOKENS)
PAD_ID = VOCAB.pad_id
_KEY_IDS = np.array([VOCAB.index[c] for c in KEYS], dtype=np.int64)  # (26,)
_VALUE_IDS = np.array([VOCAB.index[c] for c in VALUES], dtype=np.int64)  # (10,)
_QUERY_ID = VOCAB.index["?"]

# The paper's Task 1 sizes: 100k train / 10k validation / 20k test. Seeds are fixed so every reported
# number (ours and anyone's re-run) is measured on the same sequences.
SPLIT_SIZES = {"train": 100_000, "valid": 10_000, "test": 20_000}
SPLIT_SEEDS = {"train": 2016, "valid": 2017, "test": 2018}


@dataclass(frozen=True)
class Batch:
    """Encoded queries. tokens: (N, T) int64, left padded; targets: (N,) class ids; num_pairs: (N,)."""

    tokens: np.ndarray
    targets: np.ndarray
    num_pairs: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, index: np.ndarray | slice) -> Batch:
        return Batch(self.tokens[index], self.targets[index], self.num_pairs[index])

    def sequences(self) -> list[str]:
        return [VOCAB.decode(row) for row in self.tokens.tolist()]


def generate(
    n: int, k_min: int, k_max: int, seed: int | np.random.SeedSequence, length: int | None = None
) -> Batch:
    """Draw `n` queries with K uniform in [k_min, k_max], left padded to `length` (default 2·k_max+3).

    Keys are distinct letters drawn without replacement; values are digits drawn with replacement;
    the query is one of the keys, uniformly.
    """
    if not 1 <= k_min <= k_max <= len(KEYS):
        raise ValueError(f"need 1 <= k_min <= k_max <= {len(KEYS)}, got k_min={k_min}, k_max={k_max}")
    length = sequence_length(k_max) if length is None else length
    if length < sequence_length(k_max):
        raise ValueError(f"length {length} is too short for {k_max} pairs")
    rng = np.random.default_rng(seed)
    num_pairs = rng.integers(k_min, k_max + 1, size=n)  # (N,)
    keys = np.argsort(rng.random((n, len(KEYS))), axis=1)[:, :k_max]  # (N, Kmax) distinct letter indices
    values = rng.integers(0, len(VALUES), size=(n, k_max))  # (N, Kmax)
    query_slot = (rng.random(n) * num_pairs).astype(np.int64)  # (N,) in [0, K)

    tokens = np.full((n, length), PAD_ID, dtype=np.int64)  # (N, T)
    rows = np.arange(n)
    for k in np.unique(num_pairs):
        sel = rows[num_pairs == k]
        start = length - sequence_length(int(k))
        body = np.empty((len(sel), 2 * k), dtype=np.int64)
        body[:, 0::2] = _KEY_IDS[keys[sel, :k]]
        body[:, 1::2] = _VALUE_IDS[values[sel, :k]]
        tokens[sel, start : start + 2 * k] = body
        tokens[sel, start + 2 * k : start + 2 * k + 2] = _QUERY_ID
        tokens[sel, -1] = _KEY_IDS[keys[sel, query_slot[sel]]]
    targets = values[rows, query_slot].astype(np.int64)  # (N,) digit == class id
    return Batch(tokens, targets, num_pairs.astype(np.int64))


def split_seed(split: str, k_min: int, k_max: int) -> np.random.SeedSequence:
    """The fixed seed of a named split for a K range (different ranges give different sequences)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    return np.random.SeedSequence([SPLIT_SEEDS[split], k_min, k_max])


def fixed_split(
    split: str, k_min: int = 4, k_max: int = 4, size: int | None = None, length: int | None = None
) -> Batch:
    """The paper-sized fixed split (train 100k, valid 10k, test 20k) for a K range."""
    n = SPLIT_SIZES[split] if size is None else size
    return generate(n, k_min, k_max, split_seed(split, k_min, k_max), length)
