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


# Named stress sets (``generate(..., stress=NAME)``): the cases that separate recipes, reported beside random
# data. Each rewrites the random draw's values and/or which key is queried; keys stay distinct letters.
STRESS_SETS: dict[str, str] = {
    "repeat3_odd": "one value repeated in three pairs, the others differ from it; a key with another "
    "value is queried (K >= 4)",
    "aabb": "values in runs of two equal ones, neighbouring runs differ (a a b b c c ...) (K >= 2)",
    "aabc": "the first two pairs share a value, every later pair's value differs from it (K >= 3)",
    "first": "the key of the first pair is queried",
    "last": "the key of the last pair is queried",
}
_STRESS_MIN_PAIRS = {"repeat3_odd": 4, "aabb": 2, "aabc": 3, "first": 1, "last": 1}


def stress_min_pairs(stress: str) -> int:
    """The fewest pairs a stress set can be drawn with."""
    if stress not in STRESS_SETS:
        raise ValueError(f"unknown stress set {stress!r}; expected one of {sorted(STRESS_SETS)}")
    return _STRESS_MIN_PAIRS[stress]


def generate(
    n: int,
    k_min: int,
    k_max: int,
    seed: int | np.random.SeedSequence,
    length: int | None = None,
    stress: str | None = None,
) -> Batch:
    """Draw `n` queries with K uniform in [k_min, k_max], left padded to `length` (default 2·k_max+3).

    Keys are distinct letters drawn without replacement; values are digits drawn with replacement;
    the query is one of the keys, uniformly. `stress` names one of STRESS_SETS, which reshapes the values
    and/or the query of every row (the same random draw underneath, so sets differ only where they must).
    """
    if not 1 <= k_min <= k_max <= len(KEYS):
        raise ValueError(f"need 1 <= k_min <= k_max <= {len(KEYS)}, got k_min={k_min}, k_max={k_max}")
    if stress is not None and k_min < stress_min_pairs(stress):
        raise ValueError(
            f"stress set {stress!r} needs at least {stress_min_pairs(stress)} pairs, got {k_min}"
        )
    length = sequence_length(k_max) if length is None else length
    if length < sequence_length(k_max):
        raise ValueError(f"length {length} is too short for {k_max} pairs")
    rng = np.random.default_rng(seed)
    num_pairs = rng.integers(k_min, k_max + 1, size=n)  # (N,)
    keys = np.argsort(rng.random((n, len(KEYS))), axis=1)[:, :k_max]  # (N, Kmax) distinct letter indices
    values = rng.integers(0, len(VALUES), size=(n, k_max))  # (N, Kmax)
    query_slot = (rng.random(n) * num_pairs).astype(np.int64)  # (N,) in [0, K)
    if stress is not None:
        values, query_slot = _apply_stress(stress, rng, num_pairs, values, query_slot)

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


def _other_value(rng: np.random.Generator, avoid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Digits uniform over the 9 that differ from `avoid` (broadcast against `shape`)."""
    return (avoid + rng.integers(1, len(VALUES), size=shape)) % len(VALUES)


def _apply_stress(
    stress: str, rng: np.random.Generator, num_pairs: np.ndarray, values: np.ndarray, query_slot: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(values (N, Kmax), query_slot (N,)) reshaped into the named stress set; padding slots are ignored."""
    n, k_max = values.shape
    values, query_slot = values.copy(), query_slot.copy()
    slots = np.arange(k_max)[None, :]  # (1, Kmax)
    if stress == "first":
        query_slot[:] = 0
    elif stress == "last":
        query_slot = num_pairs - 1
    elif stress == "aabb":
        runs = rng.integers(0, len(VALUES), size=(n, 1)) + np.cumsum(
            rng.integers(1, len(VALUES), size=(n, (k_max + 1) // 2)), axis=1
        )  # (N, runs): each run's value differs from the run before it
        values = (runs % len(VALUES))[:, slots[0] // 2]  # (N, Kmax): a a b b ...
    elif stress == "aabc":
        shared = values[:, :1]  # (N, 1)
        values = np.where(slots < 2, shared, _other_value(rng, shared, (n, k_max)))
    elif stress == "repeat3_odd":
        order = np.argsort(rng.random((n, k_max)) + (slots >= num_pairs[:, None]), axis=1)  # real slots first
        triple = order[:, :3]  # (N, 3) three distinct slots among the row's K
        repeated = values[:, :1]  # (N, 1)
        values = _other_value(rng, repeated, (n, k_max))
        np.put_along_axis(values, triple, repeated, axis=1)
        query_slot = order[np.arange(n), 3 + (rng.random(n) * (num_pairs - 3)).astype(np.int64)]  # an odd key
    return values, query_slot


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
