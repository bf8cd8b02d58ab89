"""The associative-retrieval alphabet and the one encoder/decoder everyone uses.

Pure Python on purpose: the service and the client import it. The service builds its `Vocabulary` from the
tokens stored in the ONNX metadata, so a model repository is self-contained.

Grammar of a query sequence (the paper's Task 1): K key/value pairs, then ``??``, then one of the keys::

    c9k8j3f1??c   ->   9
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PAD_TOKEN = "<pad>"
KEYS = string.ascii_lowercase  # 26 letters
VALUES = string.digits  # 10 digits, also the answer classes
QUERY_MARK = "?"
DEFAULT_TOKENS: tuple[str, ...] = (PAD_TOKEN, *KEYS, *VALUES, QUERY_MARK)


def sequence_length(num_pairs: int) -> int:
    """Tokens in a query with `num_pairs` pairs: 2K + len('??') + 1 key."""
    return 2 * num_pairs + 3


def max_pairs_for_length(length: int) -> int:
    """The most pairs that fit into `length` tokens."""
    return max(0, (length - 3) // 2)


class SequenceError(ValueError):
    """A query that is not a valid associative-retrieval sequence.

    `code` is a stable machine-readable reason, `field` names the part of the input at fault and
    `position` (when known) is the 0-based character index in the sequence.
    """

    def __init__(self, code: str, message: str, field: str = "sequence", position: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.position = position


@dataclass(frozen=True)
class ParsedQuery:
    pairs: tuple[tuple[str, str], ...]
    query: str
    # The canonical sequence, when the parser already holds it (saves rebuilding it for every encode).
    text: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    @property
    def answer(self) -> str | None:
        """The value stored under the query key (the ground truth for a valid query)."""
        return dict(self.pairs).get(self.query)

    def to_sequence(self) -> str:
        return self.text or "".join(k + v for k, v in self.pairs) + QUERY_MARK * 2 + self.query


# A well-formed query: pairs of (letter, digit), '??', one letter. Checked first because it is the common case
# and one regex match is far cheaper than the character loop that explains what is wrong with a bad one.
_WELL_FORMED = re.compile(r"(?:[a-z][0-9])+\?\?[a-z]")


def parse_sequence(sequence: str, field: str = "sequence") -> ParsedQuery:
    """Validate a query string like ``c9k8??c`` and split it into pairs and the query key."""
    if isinstance(sequence, str) and _WELL_FORMED.fullmatch(sequence):
        keys = sequence[0:-3:2]
        if len(set(keys)) == len(keys) and sequence[-1] in keys:
            return ParsedQuery(tuple(zip(keys, sequence[1:-3:2], strict=True)), sequence[-1], sequence)
        # duplicate key or unknown query: the full check names the culprit
    return _parse_explained(sequence, field)


def _parse_explained(sequence: str, field: str) -> ParsedQuery:
    """The character-by-character parse that says exactly what is wrong and where."""
    if not isinstance(sequence, str):
        raise SequenceError("invalid_type", "sequence must be a string", field)
    if sequence == "":
        raise SequenceError("empty", "sequence is empty", field)
    for i, ch in enumerate(sequence):
        if ch not in KEYS and ch not in VALUES and ch != QUERY_MARK:
            raise SequenceError(
                "unknown_character",
                f"unknown character {ch!r} at position {i}; allowed: a-z, 0-9 and '?'",
                field,
                i,
            )
    mark = sequence.find(QUERY_MARK * 2)
    if mark < 0:
        raise SequenceError("malformed", "sequence must contain '??' followed by the query key", field)
    body, tail = sequence[:mark], sequence[mark + 2 :]
    if len(tail) != 1 or tail not in KEYS:
        raise SequenceError(
            "malformed",
            f"'??' must be followed by exactly one key letter, got {tail!r}",
            field,
            mark + 2,
        )
    if len(body) % 2 != 0:
        raise SequenceError(
            "malformed", "the part before '??' must be key/value pairs (even length)", field, len(body) - 1
        )
    pairs = []
    for i in range(0, len(body), 2):
        key, value = body[i], body[i + 1]
        if key not in KEYS:
            raise SequenceError("malformed", f"expected a key letter at position {i}, got {key!r}", field, i)
        if value not in VALUES:
            raise SequenceError(
                "malformed", f"expected a value digit at position {i + 1}, got {value!r}", field, i + 1
            )
        pairs.append((key, value))
    return _checked(tuple(pairs), tail, field)


def from_pairs(pairs: Iterable[Sequence[str]], query: str, field: str = "pairs") -> ParsedQuery:
    """Validate the structured form ``pairs=[["c","9"], ...], query="c"``."""
    checked = []
    for i, pair in enumerate(pairs):
        where = f"{field}[{i}]"
        if len(pair) != 2:
            raise SequenceError("malformed", f"pair {i} must be [key, value]", where)
        key, value = pair
        if not (isinstance(key, str) and len(key) == 1 and key in KEYS):
            raise SequenceError("malformed", f"pair {i}: key must be one letter a-z, got {key!r}", where)
        if not (isinstance(value, str) and len(value) == 1 and value in VALUES):
            raise SequenceError("malformed", f"pair {i}: value must be one digit 0-9, got {value!r}", where)
        checked.append((key, value))
    if not (isinstance(query, str) and len(query) == 1 and query in KEYS):
        raise SequenceError("malformed", f"query must be one letter a-z, got {query!r}", "query")
    return _checked(tuple(checked), query, field)


def _checked(pairs: tuple[tuple[str, str], ...], query: str, field: str) -> ParsedQuery:
    if not pairs:
        raise SequenceError("empty", "at least one key/value pair is required", field)
    seen: dict[str, int] = {}
    for i, (key, _) in enumerate(pairs):
        if key in seen:
            raise SequenceError(
                "duplicate_key", f"key {key!r} appears twice (pairs {seen[key]} and {i})", field, 2 * i
            )
        seen[key] = i
    if query not in seen:
        raise SequenceError("query_not_found", f"query key {query!r} is not among the keys", "query")
    return ParsedQuery(pairs, query)


class Vocabulary:
    """Token string <-> id. Id 0 is PAD; sequences are left padded."""

    def __init__(self, tokens: Sequence[str] = DEFAULT_TOKENS, pad_token: str = PAD_TOKEN):
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be distinct")
        self.tokens: tuple[str, ...] = tuple(tokens)
        self.pad_token = pad_token
        self.index = {tok: i for i, tok in enumerate(self.tokens)}
        self.pad_id = self.index[pad_token]
        self.answer_classes: tuple[str, ...] = tuple(VALUES)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, sequence: str, length: int | None = None) -> list[int]:
        """Characters to ids, left padded with PAD to `length` (when given)."""
        try:
            ids = [self.index[ch] for ch in sequence]
        except KeyError as exc:
            pos = next(i for i, ch in enumerate(sequence) if ch not in self.index)
            raise SequenceError(
                "unknown_character", f"unknown character {exc.args[0]!r} at position {pos}"
            ) from None
        if length is not None:
            if len(ids) > length:
                raise SequenceError(
                    "too_long", f"sequence has {len(ids)} tokens, more than the longest supported ({length})"
                )
            ids = [self.pad_id] * (length - len(ids)) + ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to characters, dropping PAD."""
        return "".join(self.tokens[i] for i in ids if i != self.pad_id)

    def class_to_value(self, class_index: int) -> str:
        return self.answer_classes[class_index]

    def value_to_class(self, value: str) -> int:
        return self.answer_classes.index(value)
