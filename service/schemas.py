"""Request and response models of the native API (`/v1`), with the examples shown at /docs.

The sequence grammar itself (unknown characters, duplicate keys, ...) is checked by `contract.vocab`, which
gives typed error codes; these models check only the JSON shape (unknown fields, wrong types).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

TopK = Annotated[StrictInt, Field(ge=1, le=10, description="How many most likely values to return (1..10).")]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sequence: StrictStr | None = Field(
        default=None,
        description="K key/value pairs (keys distinct letters: K <= 26), '??', then one of the keys.",
        examples=["c9k8j3f1??c"],
    )
    pairs: list[list[StrictStr]] | None = Field(
        default=None,
        description="The pairs as [key, value] lists (use with `query`).",
        examples=[[["c", "9"], ["k", "8"]]],
    )
    query: StrictStr | None = Field(
        default=None, description="The key to look up (with `pairs`).", examples=["c"]
    )

    @model_validator(mode="after")
    def _exactly_one_form(self) -> _Query:
        has_sequence = self.sequence is not None
        has_pairs = self.pairs is not None or self.query is not None
        if has_sequence == has_pairs:
            raise ValueError("give either 'sequence' or 'pairs' with 'query', not both and not neither")
        if has_pairs and (self.pairs is None or self.query is None):
            raise ValueError("'pairs' and 'query' go together")
        return self


class RetrieveRequest(_Query):
    """One query: either `{"sequence": ...}` or `{"pairs": [...], "query": ...}`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"sequence": "c9k8j3f1??c"},
                {"pairs": [["c", "9"], ["k", "8"]], "query": "k", "top_k": 3, "explain": True},
                {  # the longest query the bundled model serves: 26 pairs, every key letter once
                    "sequence": "a0b1c2d3e4f5g6h7i8j9k0l1m2n3o4p5q6r7s8t9u0v1w2x3y4z5??q",
                    "explain": True,
                },
            ]
        },
    )

    top_k: TopK = 1
    explain: StrictBool = Field(
        default=False, description="Rank the stored pairs by the fast memory's attention."
    )
    model: StrictStr | None = Field(
        default=None, description="Model family (default: the server's default family)."
    )


class BatchItem(_Query):
    """One item of a batch request; `id` (string or int) is echoed back."""

    id: StrictStr | StrictInt | None = Field(default=None, description="Echoed back in the item's result.")


_ITEMS_SCHEMA = {
    "type": "array",
    "items": BatchItem.model_json_schema(),
    "description": "Queries to answer, each in either form; a bad item gets its own error entry.",
}


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"id": "a1", "sequence": "c9k8j3f1??c"},
                        {"id": "a2", "pairs": [["x", "1"], ["y", "2"]], "query": "y"},
                        {"id": "a3", "sequence": "a1a2??a"},
                    ]
                }
            ]
        },
    )

    # Items are validated one by one in the route (a bad item must not fail the whole request).
    items: Annotated[list[Any], WithJsonSchema(_ITEMS_SCHEMA)]
    top_k: TopK = 1
    explain: StrictBool = False
    model: StrictStr | None = None


class ErrorDetail(BaseModel):
    code: str = Field(examples=["duplicate_key"])
    message: str = Field(examples=["key 'a' appears twice (pairs 0 and 1)"])
    field: str | None = Field(default=None, examples=["sequence"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Candidate(BaseModel):
    value: str
    probability: float


class Explanation(BaseModel):
    key: str
    value: str
    position: int = Field(description="Character position of the pair's key in the sequence.")
    weight: float = Field(description="Share of the fast memory's attention on this pair (sums to 1).")


class RetrieveResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "value": "9",
                    "confidence": 0.993,
                    "num_pairs": 4,
                    "model": "fastweights",
                    "version": "1",
                    "bucket": "fastweights_t11",
                    "checkpoint": "k26.pt",
                }
            ]
        }
    )

    value: str
    confidence: float
    num_pairs: int
    model: str
    version: str
    bucket: str
    checkpoint: str | None = Field(
        default=None,
        description="The checkpoint the bucket's graph was exported from (buckets of one model may come from "
        "different checkpoints; /v2/models/{bucket} gives its figures).",
    )
    top_k: list[Candidate] | None = Field(default=None, description="Only when top_k > 1.")
    explanation: list[Explanation] | None = Field(default=None, description="Only when explain is true.")


class BatchResult(BaseModel):
    index: int
    id: str | int | None = None
    value: str | None = None
    confidence: float | None = None
    num_pairs: int | None = None
    top_k: list[Candidate] | None = None
    explanation: list[Explanation] | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    model: str
    version: str
    results: list[BatchResult]
