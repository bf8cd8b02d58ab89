"""`--protocol v2`: score through the Open Inference Protocol V2 (`/v2/models/{bucket}/infer`).

V2 moves tensors, not queries, so the client does what the native API does on the server: it discovers the
family's length buckets (`POST /v2/repository/index`), reads each bucket's vocabulary, PAD id, answer classes
and sequence length from the model metadata's `parameters` and its `max_batch_size` from the model config,
encodes every query into left-padded token ids, sends int64 tensors with the binary tensor extension, and
reads the answer as the argmax of the returned logits (confidence: its softmax probability).

What V2 cannot check: the grammar. Only characters outside the vocabulary (`unknown_character`), empty
rows (`empty`), rows longer than the largest bucket (`too_long`) and items that are not a sequence or
pairs+query (`invalid_request`) become row errors here; a row like `c9c8??c` (a duplicate key) is answered by
the model as it stands, where the native API would reject it. Use the native API (the default) when the
input may be malformed.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from client.outputs import dumps, loads
from contract.vocab import max_pairs_for_length

INPUT_NAME = "tokens"
OUTPUT_NAME = "logits"


class V2Error(Exception):
    """The server's V2 side is missing or does not describe the family the way this client needs."""


@dataclass(frozen=True)
class Bucket:
    name: str
    seq_len: int
    index: dict[str, int]  # single-character token -> id
    pad_id: int
    classes: tuple[str, ...]
    max_batch: int


def _error(code: str, message: str, field: str = "sequence") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def item_sequence(item: dict[str, Any]) -> str | dict[str, Any]:
    """The query string of a request item, or a row error (the item envelope only: not the grammar)."""
    unknown = sorted(set(item) - {"sequence", "pairs", "query"})
    if unknown:
        return _error("invalid_request", f"unknown field(s): {', '.join(unknown)}", unknown[0])
    if "sequence" in item:
        if "pairs" in item or "query" in item:
            return _error("invalid_request", "give either 'sequence' or 'pairs' and 'query', not both")
        seq = item["sequence"]
        if not isinstance(seq, str):
            return _error("invalid_request", "sequence must be a string")
        return seq
    pairs, query = item.get("pairs"), item.get("query")
    if not isinstance(pairs, list) or not isinstance(query, str):
        return _error(
            "invalid_request", "need 'sequence', or 'pairs' (a list) and 'query' (a string)", "pairs"
        )
    parts = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            return _error("invalid_request", f"pair {i} must be [key, value]", f"pairs[{i}]")
        parts.append(pair[0] + pair[1])
    return "".join(parts) + "??" + query


def int64_le(rows: Sequence[Sequence[int]]) -> bytes:
    """Token ids of equal-length rows as one flat little-endian INT64 buffer (the V2 raw tensor layout)."""
    flat = array("q")
    for ids in rows:
        flat.extend(ids)
    if sys.byteorder != "little":
        flat.byteswap()
    return flat.tobytes()


def fp32_le(raw: bytes) -> list[float]:
    """A little-endian FP32 raw tensor as floats; V2Error when it is not whole 4-byte values."""
    if len(raw) % 4:
        raise V2Error(f"raw FP32 logits of {len(raw)} bytes, not a whole number of 4-byte values")
    values = array("f")
    values.frombytes(raw)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


class V2Codec:
    """The family's buckets; encodes queries and decodes logits."""

    def __init__(self, buckets: list[Bucket]):
        if not buckets:
            raise V2Error("no buckets")
        self.buckets = sorted(buckets, key=lambda b: b.seq_len)

    def bucket_for(self, item: dict[str, Any]) -> tuple[Bucket, list[int], int] | dict[str, Any]:
        """(bucket, left-padded ids, query length), or a row error."""
        seq = item_sequence(item)
        if isinstance(seq, dict):
            return seq
        if seq == "":
            return _error("empty", "sequence is empty")
        longest = self.buckets[-1]
        if len(seq) > longest.seq_len:
            return _error(
                "too_long",
                f"sequence has {len(seq)} tokens, more than the longest bucket ({longest.seq_len})",
            )
        bucket = next(b for b in self.buckets if b.seq_len >= len(seq))
        try:
            ids = [bucket.index[ch] for ch in seq]
        except KeyError:
            pos = next(i for i, ch in enumerate(seq) if ch not in bucket.index)
            return _error("unknown_character", f"unknown character {seq[pos]!r} at position {pos}")
        return bucket, [bucket.pad_id] * (bucket.seq_len - len(ids)) + ids, len(ids)

    @staticmethod
    def request(rows: list[list[int]], seq_len: int) -> tuple[bytes, dict[str, str]]:
        """A binary-tensor infer request: JSON header, then the int64 tokens little-endian."""
        raw = int64_le(rows)
        header = dumps(
            {
                "inputs": [
                    {
                        "name": INPUT_NAME,
                        "datatype": "INT64",
                        "shape": [len(rows), seq_len],
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
            }
        )
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        return header + raw, headers

    @staticmethod
    def logits(content: bytes, header_length: str | None, n_rows: int, n_classes: int) -> list[float]:
        """The flat logits of an infer response, JSON `data` or binary."""
        if header_length:
            hl = int(header_length)
            header, binary = loads(content[:hl]), content[hl:]
        else:
            header, binary = loads(content), b""
        offset = 0
        for out in header.get("outputs", []):
            size = int((out.get("parameters") or {}).get("binary_data_size", 0))
            if out.get("name") == OUTPUT_NAME:
                if "data" in out:
                    flat = [float(x) for x in out["data"]]
                else:
                    flat = fp32_le(binary[offset : offset + size])
                if len(flat) != n_rows * n_classes:
                    raise V2Error(f"logits of {len(flat)} values for {n_rows} rows x {n_classes} classes")
                return flat
            offset += size
        raise V2Error(f"the infer response has no {OUTPUT_NAME!r} output")

    @staticmethod
    def answers(flat: list[float], bucket: Bucket, seq_lens: list[int]) -> list[dict[str, Any]]:
        c = len(bucket.classes)
        results = []
        for i, length in enumerate(seq_lens):
            row = flat[i * c : (i + 1) * c]
            top = max(range(c), key=row.__getitem__)
            m = row[top]
            total = sum(math.exp(x - m) for x in row)
            results.append(
                {
                    "value": bucket.classes[top],
                    "confidence": round(1.0 / total, 6),
                    "num_pairs": max_pairs_for_length(length),
                }
            )
        return results


def bucket_names(family: str, index: Any) -> list[str]:
    """The READY models `{family}_t<T>` of a V2 repository index."""
    pattern = re.compile(rf"^{re.escape(family)}_t(\d+)$")
    return [
        e["name"]
        for e in (index if isinstance(index, list) else [])
        if isinstance(e, dict)
        and pattern.match(str(e.get("name", "")))
        and e.get("state", "READY") == "READY"
    ]


def parse_buckets(family: str, index: Any, metadata: dict[str, Any], configs: dict[str, Any]) -> list[Bucket]:
    """Buckets from the repository index, each model's metadata and config (separated out for unit tests)."""
    buckets = []
    for name in bucket_names(family, index):
        if name not in metadata:
            continue
        params = metadata[name].get("parameters") or {}
        try:
            vocab = list(params["vocab"])
            bucket = Bucket(
                name=name,
                seq_len=int(params["seq_len"]),
                index={tok: i for i, tok in enumerate(vocab) if isinstance(tok, str) and len(tok) == 1},
                pad_id=int(params["pad_id"]),
                classes=tuple(str(c) for c in params["answer_classes"]),
                max_batch=int((configs.get(name) or {}).get("max_batch_size") or 0) or 256,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise V2Error(f"model {name}: metadata parameters lack what encoding needs ({exc})") from None
        if params.get("padding", "left") != "left":
            raise V2Error(f"model {name}: padding {params.get('padding')!r}, this client pads left")
        buckets.append(bucket)
    if not buckets:
        raise V2Error(f"no READY models named {family}_t<T> in the server's repository index")
    return buckets
