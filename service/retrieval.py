"""The native retrieval use case, free of HTTP: validate queries, pick the length bucket, infer, decode.

A family (e.g. "fastweights") is served by several models, one per unrolled length T (its buckets); each
query goes to the smallest ready bucket that fits it, and rows of one bucket share one `registry.infer`
call (so a batch request of 50 items is 50 rows of one onnxruntime run when they fit one bucket).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from contract import OUTPUT_ATTENTION, OUTPUT_LOGITS, MetadataKeys
from contract.vocab import ParsedQuery, SequenceError, from_pairs, parse_sequence, sequence_length
from service.echo import quoted
from service.predictor import LoadedModel, Prediction, decode
from service.registry import ModelNotFoundError, ModelNotReadyError, ModelRegistry


class Answer(NamedTuple):  # one per answered row: a NamedTuple is the cheapest immutable record
    prediction: Prediction
    num_pairs: int
    bucket: str
    version: str
    checkpoint: str = ""  # the bucket graph's source checkpoint (buckets of a family may differ)


def parse_query(item: Any, max_length: int, prefix: str = "") -> ParsedQuery:
    """A validated schema object (`sequence` or `pairs`+`query`) -> ParsedQuery; raises SequenceError.

    `prefix` (e.g. "items[3].") is prepended to the error's field.
    """
    if item.sequence is not None:
        if len(item.sequence) > max_length:
            raise SequenceError(
                "too_long",
                f"sequence has {len(item.sequence)} characters; the limit is {max_length}",
                prefix + "sequence",
            )
        try:
            return parse_sequence(item.sequence, field=prefix + "sequence")
        except SequenceError as exc:
            if not exc.field.startswith(prefix):
                exc.field = prefix + exc.field
            raise
    if len(item.pairs) > max_length:
        raise SequenceError(
            "too_long", f"{len(item.pairs)} pairs; the limit is {max_length}", prefix + "pairs"
        )
    try:
        return from_pairs(item.pairs, item.query, field=prefix + "pairs")
    except SequenceError as exc:
        if not exc.field.startswith(prefix):
            exc.field = prefix + exc.field
        raise


def buckets_for(registry: ModelRegistry, family: str) -> tuple[LoadedModel, ...]:
    """The family's ready buckets; ModelNotFoundError (unknown family) or ModelNotReadyError (none ready)."""
    buckets = registry.family_buckets(family)
    if buckets:
        return buckets
    known = {name.rsplit("_t", 1)[0] for name in registry.names()}
    if family in known:
        raise ModelNotReadyError(f"model {quoted(family)} has no bucket ready")
    raise ModelNotFoundError(f"unknown model {quoted(family)}; available: {sorted(registry.families())}")


def pick_bucket(buckets: Sequence[LoadedModel], query: ParsedQuery, field: str) -> LoadedModel:
    needed = sequence_length(query.num_pairs)
    for model in buckets:
        if model.info.seq_len >= needed:
            return model
    most = buckets[-1].info.max_pairs
    raise SequenceError(
        "too_long", f"{query.num_pairs} pairs is more than the largest bucket holds ({most} pairs)", field
    )


class BucketNotReadyError(SequenceError):
    """A valid query whose length bucket is in the repository but not ready (failed to load, unloaded): not
    the query's fault. Alone it is a 503 (`ModelNotReadyError`); in a batch, that item's error."""

    def __init__(self, message: str, field: str):
        super().__init__("not_ready", message, field)


def unready_buckets(
    registry: ModelRegistry, family: str, ready_buckets: Sequence[LoadedModel]
) -> list[tuple[int, str]]:
    """(T, name) of the family's length buckets in the repository that are not among `ready_buckets`,
    shortest first."""
    ready = {m.info.name for m in ready_buckets}
    return sorted(
        (folder.config.seq_len, folder.name)
        for folder in registry.folders()
        if folder.config is not None
        and folder.config.family == family
        and not folder.config.stateful
        and folder.name not in ready
    )


async def answer(
    registry: ModelRegistry,
    family: str,
    queries: Sequence[ParsedQuery | SequenceError],
    *,
    top_k: int = 1,
    explain: bool = False,
    deadline: float | None = None,
    fields: Sequence[str] | None = None,
) -> list[Answer | SequenceError]:
    """Answer every query (errors pass through in place). One `registry.infer` call per bucket, concurrently.

    Raises the registry/batcher errors (unknown model, not ready, queue full, deadline) for the whole call.
    """
    buckets = buckets_for(registry, family)
    results: list[Answer | SequenceError | None] = [
        q if isinstance(q, SequenceError) else None for q in queries
    ]
    groups: dict[str, tuple[LoadedModel, list[int]]] = {}
    by_pairs: dict[int, LoadedModel] = {}  # number of pairs -> its bucket, looked up once per batch
    unready: list[tuple[int, str]] | None = None
    for i, q in enumerate(queries):
        if isinstance(q, SequenceError):
            continue
        model = by_pairs.get(len(q.pairs))
        if model is None:
            try:
                model = by_pairs[len(q.pairs)] = pick_bucket(buckets, q, fields[i] if fields else "sequence")
            except SequenceError as exc:
                if unready is None:  # (read once per call, only when a query fits no ready bucket)
                    unready = unready_buckets(registry, family, buckets)
                needed = sequence_length(len(q.pairs))
                down = next((name for length, name in unready if length >= needed), None)
                if down is not None:  # not too long: the bucket that holds it is down
                    message = f"{len(q.pairs)} pairs need bucket {quoted(down)}, which is not ready: retry"
                    exc = BucketNotReadyError(message, exc.field)
                results[i] = exc
                continue
        groups.setdefault(model.info.name, (model, []))[1].append(i)

    async def run(model: LoadedModel, rows: list[int]) -> None:
        parsed = [q for q in (queries[i] for i in rows) if isinstance(q, ParsedQuery)]
        tokens = model.encode(parsed)  # (B, T)
        out = await registry.infer(model.info.name, tokens, deadline=deadline, ids_checked=True)
        preds = decode(
            parsed,
            out[OUTPUT_LOGITS],
            out[OUTPUT_ATTENTION],
            model.info.answer_classes,
            top_k=top_k,
            explain=explain,
        )
        source = model.info.metadata.get(MetadataKeys.SOURCE_CHECKPOINT, "")
        for i, q, p in zip(rows, parsed, preds, strict=True):
            results[i] = Answer(p, len(q.pairs), model.info.name, model.info.version, source)

    if len(groups) == 1:
        ((model, rows),) = groups.values()
        await run(model, rows)
    elif groups:
        await asyncio.gather(*(run(m, r) for m, r in groups.values()))
    done = [r for r in results if r is not None]
    assert len(done) == len(results), "every query is answered or has an error"
    return done


def family_version(registry: ModelRegistry, family: str) -> str:
    """The version reported for a family: the newest among its ready buckets."""
    buckets = buckets_for(registry, family)
    return max((m.info.version for m in buckets), key=int)
