"""The native JSON API: `POST /v1/retrieve` and `POST /v1/retrieve/batch` (documented in README.md, "Serving:
the native REST API", and in the OpenAPI schema at /docs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Request, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError

from contract.vocab import ParsedQuery, SequenceError, parse_sequence
from service.config import Settings
from service.errors import EMPTY_BODY, NOT_JSON_OBJECT, ApiError, JSONResponse, validation_message
from service.fastpath import RawRequest, RawResponse, fast_route, json_response
from service.middleware import CLIENT_GONE_STATUS
from service.registry import ModelNotReadyError, ModelRegistry
from service.retrieval import Answer, BucketNotReadyError, answer, family_version, parse_query
from service.schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    RetrieveRequest,
    RetrieveResponse,
)

# Declared for the OpenAPI docs' "Authorize" button; the check itself is in the middleware.
bearer = HTTPBearer(auto_error=False, description="Only when the server runs with FWS_API_KEY.")
router = APIRouter(prefix="/v1", tags=["native"], dependencies=[Security(bearer)])

T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    413: {"model": ErrorResponse, "description": "Body too large"},
    422: {"model": ErrorResponse, "description": "Invalid request or sequence"},
    503: {"model": ErrorResponse, "description": "Overloaded (Retry-After) or not ready"},
    504: {"model": ErrorResponse, "description": "Deadline exceeded"},
}


# async on purpose: FastAPI runs a plain `def` dependency in its thread pool, two thread hops per request
# just to read app.state (measured: bench.serving, docs/benchmarks.md).
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


RETRIEVE_EXAMPLES: dict[str, Any] = {
    "sequence": {"summary": "A sequence", "value": {"sequence": "c9k8j3f1??c"}},
    "pairs": {
        "summary": "Pairs and a query, with top_k and explain",
        "value": {"pairs": [["c", "9"], ["k", "8"]], "query": "k", "top_k": 3, "explain": True},
    },
    "error": {"summary": "An invalid sequence (422 duplicate_key)", "value": {"sequence": "a1a2??a"}},
}
BATCH_EXAMPLES: dict[str, Any] = {
    "mixed": {
        "summary": "Both forms, ids echoed, one bad item",
        "value": {
            "items": [
                {"id": "a1", "sequence": "c9k8j3f1??c"},
                {"id": "a2", "pairs": [["x", "1"], ["y", "2"]], "query": "y"},
                {"id": "a3", "sequence": "a1a2??a"},
            ]
        },
    },
    "options": {
        "summary": "top_k and explain for every item",
        "value": {"items": [{"sequence": "a1b2??b"}, {"sequence": "q5??q"}], "top_k": 2, "explain": True},
    },
}

SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it when the client disconnects (its queued rows are then never computed)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        raise ApiError(CLIENT_GONE_STATUS, "client_gone", "client closed the request")
    return task.result()


def _answer_dict(a: Answer, top_k: int, explain: bool) -> dict[str, Any]:
    p = a.prediction  # probabilities and weights come rounded to 6 decimals from `decode`
    out: dict[str, Any] = {"value": p.value, "confidence": p.confidence, "num_pairs": a.num_pairs}
    if top_k > 1:
        out["top_k"] = [{"value": v, "probability": pr} for v, pr in p.top_k]
    if explain:
        out["explanation"] = [
            {"key": k, "value": v, "position": pos, "weight": w} for k, v, pos, w in p.explanation
        ]
    return out


def _plain_sequence(raw: Any) -> str | None:
    """The sequence of an item of the usual shape: `{"sequence": str}`, `{"id": str | int, "sequence": str}`.

    Such an item is valid for `BatchItem` by construction, so it skips pydantic (the per-item validation was
    the largest per-row cost of a batch); any other shape returns None and goes through `BatchItem`.
    """
    if type(raw) is not dict:
        return None
    sequence = raw.get("sequence")
    if type(sequence) is not str:
        return None
    if len(raw) == 1 or (len(raw) == 2 and type(raw.get("id")) in (str, int)):
        return sequence
    return None


def _error_dict(exc: SequenceError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "field": exc.field}


async def handle_retrieve(
    body: RetrieveRequest, settings: Settings, registry: ModelRegistry
) -> dict[str, Any]:
    """The answer to one validated query (shared by the FastAPI route and the ASGI fast path)."""
    family = body.model or settings.default_family
    query = parse_query(body, settings.max_sequence_length)
    field = "sequence" if body.sequence is not None else "pairs"
    (result,) = await answer(
        registry, family, [query], top_k=body.top_k, explain=body.explain, fields=[field]
    )
    if isinstance(result, BucketNotReadyError):  # the query is valid; its bucket is down: 503, retry
        raise ModelNotReadyError(result.message)
    if isinstance(result, SequenceError):
        raise result
    out = _answer_dict(result, body.top_k, body.explain)
    out.update(model=family, version=result.version, bucket=result.bucket, checkpoint=result.checkpoint)
    return out


async def handle_batch(body: BatchRequest, settings: Settings, registry: ModelRegistry) -> dict[str, Any]:
    """Answers to a validated batch envelope; each item is validated here, a bad one gets its own error."""
    if len(body.items) > settings.max_batch_items:
        raise ApiError(
            422,
            "too_many_items",
            f"{len(body.items)} items; the limit is {settings.max_batch_items} per request",
            "items",
        )
    family = body.model or settings.default_family
    ids: list[Any] = []
    queries: list[ParsedQuery | SequenceError] = []
    fields: list[str] = []
    limit = settings.max_sequence_length
    for i, raw in enumerate(body.items):
        item_id = raw.get("id") if isinstance(raw, dict) else None
        ids.append(item_id if isinstance(item_id, str | int) and not isinstance(item_id, bool) else None)
        sequence = _plain_sequence(raw)
        if sequence is not None and len(sequence) <= limit:
            try:
                queries.append(parse_sequence(sequence))
                fields.append(f"items[{i}].sequence")
                continue
            except SequenceError:
                pass  # the general path below reports it with the item's field
        prefix = f"items[{i}]."
        try:
            item = BatchItem.model_validate(raw)
        except ValidationError as exc:
            message, field = validation_message(list(exc.errors()))
            queries.append(
                SequenceError("invalid_request", message, prefix + field if field else f"items[{i}]")
            )
            fields.append(f"items[{i}]")
            continue
        fields.append(prefix + ("sequence" if item.sequence is not None else "pairs"))
        try:
            queries.append(parse_query(item, settings.max_sequence_length, prefix))
        except SequenceError as exc:
            queries.append(exc)
    version = family_version(registry, family)  # unknown family -> 404 even for an empty batch
    results = await answer(registry, family, queries, top_k=body.top_k, explain=body.explain, fields=fields)
    out = []
    for i, r in enumerate(results):
        entry: dict[str, Any] = {"index": i}
        if ids[i] is not None:
            entry["id"] = ids[i]
        if isinstance(r, SequenceError):
            entry["error"] = _error_dict(r)
        else:
            entry.update(_answer_dict(r, body.top_k, body.explain))
        out.append(entry)
    return {"model": family, "version": version, "results": out}


@router.post(
    "/retrieve",
    response_model=RetrieveResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="Answer one associative-retrieval query",
)
async def retrieve(
    body: Annotated[RetrieveRequest, Body(openapi_examples=RETRIEVE_EXAMPLES)],
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
) -> Any:
    """`c9k8j3f1??c` -> `9`: give the sequence, or the pairs and the query key."""
    return JSONResponse(await until_disconnect(request, handle_retrieve(body, settings, registry)))


@router.post(
    "/retrieve/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="Answer many queries; a bad item gets its own error entry",
)
async def retrieve_batch(
    body: Annotated[BatchRequest, Body(openapi_examples=BATCH_EXAMPLES)],
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
) -> Any:
    """Results come back in request order, one per item, each with its `index` (and `id` when given)."""
    return JSONResponse(await until_disconnect(request, handle_batch(body, settings, registry)))


# ------------------------------------------------------------------------------------------ fast path


def json_body(request: RawRequest) -> bytes:
    """The body, when declared JSON (as FastAPI requires: `application/json` or `application/*+json`)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not request.body:
        raise ApiError(422, "invalid_request", EMPTY_BODY)
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(422, "invalid_request", NOT_JSON_OBJECT)
    return request.body


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], raw: bytes) -> M:
    """`raw` JSON validated into `model`, accepting what FastAPI's route (`json.loads`) accepts.

    pydantic's parser refuses a few things the JSON spec allows and `json.loads` takes, e.g. a lone
    surrogate escape ("\\ud800") in a string; such a body is parsed again with `json.loads`, so both ways of
    serving a route agree. Only bodies pydantic refuses as JSON pay for the second parse.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if exc.errors()[0].get("type") != "json_invalid":
            raise
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            raise exc from None
    return model.model_validate(parsed)


async def retrieve_fast(request: RawRequest, state: Any) -> RawResponse:
    body = validated(RetrieveRequest, json_body(request))
    return json_response(await handle_retrieve(body, state.settings, state.registry))


async def retrieve_batch_fast(request: RawRequest, state: Any) -> RawResponse:
    body = validated(BatchRequest, json_body(request))
    return json_response(await handle_batch(body, state.settings, state.registry))


FAST_ROUTES = [
    fast_route("POST", "/v1/retrieve", retrieve_fast),
    fast_route("POST", "/v1/retrieve/batch", retrieve_batch_fast),
]
