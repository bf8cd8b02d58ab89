"""Open Inference Protocol V2 (KServe / Triton REST): metadata, config, infer, repository (hot reload).

Thin: the wire format lives in `service.v2_codec`, models and batching in `service.registry`. Every error
leaves as the protocol's `{"error": "message"}` (`service.errors` picks that shape for `/v2` paths):
400 bad request, 404 unknown model or version, 503 not ready / overloaded / shutting down (with
Retry-After), 504 deadline exceeded.

V2 model names are the repository's, one per length bucket (`fastweights_t11` takes `tokens` INT64 [-1, 11]).
The vocabulary, PAD id and answer classes a client needs to build `tokens` and read `logits` are in the
model metadata's `parameters` (and in the config's `parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request, Security
from fastapi.security import HTTPBearer
from starlette.responses import Response

from service import v2_service
from service.config import Settings
from service.errors import ApiError, JSONResponse
from service.fastpath import RawRequest, RawResponse, fast_route
from service.predictor import LoadedModel
from service.registry import ModelRegistry
from service.routes.native import until_disconnect
from service.v2_codec import V2Error, build_infer_response, compress, parse_infer_request
from service.v2_service import (
    EXTENSIONS,
    bad_request,
    lookup,
    model_config,
    model_metadata,
    model_statistics,
    per_model_samples,
)

bearer = HTTPBearer(auto_error=False, description="Only when the server runs with FWS_API_KEY.")
router = APIRouter(prefix="/v2", tags=["Open Inference Protocol V2"], dependencies=[Security(bearer)])

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ERROR = {"content": {"application/json": {"schema": ERROR_SCHEMA, "example": {"error": "message"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad request", **_ERROR},
    404: {"description": "Unknown model or version", **_ERROR},
    503: {"description": "Not ready, overloaded or shutting down (Retry-After)", **_ERROR},
}
_INFER_ERRORS = {**_ERRORS, 504: {"description": "Deadline exceeded", **_ERROR}}


# async on purpose: FastAPI runs a plain `def` dependency in its thread pool, two thread hops per request
# just to read app.state (measured: bench.serving, docs/benchmarks.md).
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MAX_NAME_LENGTH, MAX_VERSION_LENGTH = 128, 32
ModelName = Annotated[
    str, Path(description="Repository model name, e.g. fastweights_t11", max_length=MAX_NAME_LENGTH)
]
Version = Annotated[str, Path(description="Model version, e.g. 1", max_length=MAX_VERSION_LENGTH)]


# ---------------------------------------------------------------------------------------------- server


@router.get("", summary="Server metadata: name, version and the protocol extensions implemented")
async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": request.app.title, "version": request.app.version, "extensions": EXTENSIONS})


# ---------------------------------------------------------------------------------------------- models


def _statistics(request: Request, models: list[LoadedModel]) -> Response:
    samples = per_model_samples(request.app.state.metrics)
    return JSONResponse({"model_stats": [model_statistics(m, samples) for m in models]})


# Declared before /models/{name}, which would otherwise take "stats" for a model name.
@router.get("/models/stats", summary="Inference statistics of every ready model (what perf_analyzer reads)")
async def statistics_all(request: Request, registry: RegistryDep) -> Response:
    return _statistics(request, sorted(registry.ready_models(), key=lambda m: m.info.name))


@router.get("/models/{name}/stats", responses=_ERRORS, summary="Inference statistics of one model")
async def statistics(name: ModelName, request: Request, registry: RegistryDep) -> Response:
    return _statistics(request, [lookup(registry, name)])


@router.get(
    "/models/{name}/versions/{version}/stats",
    responses=_ERRORS,
    summary="Inference statistics of one version",
)
async def statistics_version(
    name: ModelName, version: Version, request: Request, registry: RegistryDep
) -> Response:
    return _statistics(request, [lookup(registry, name, version)])


@router.get("/models/{name}", responses=_ERRORS, summary="Model metadata (serving version)")
async def metadata(name: ModelName, registry: RegistryDep) -> Response:
    return JSONResponse(model_metadata(lookup(registry, name), registry))


@router.get("/models/{name}/versions/{version}", responses=_ERRORS, summary="Model metadata of one version")
async def metadata_version(name: ModelName, version: Version, registry: RegistryDep) -> Response:
    return JSONResponse(model_metadata(lookup(registry, name, version), registry))


def _ready(registry: ModelRegistry, name: str, version: str | None) -> Response:
    lookup(registry, name, version)  # 404 unknown, 503 (+ Retry-After) not ready
    return JSONResponse({"name": name, "ready": True})


@router.get("/models/{name}/ready", responses=_ERRORS, summary="200 when the model serves requests")
async def model_ready(name: ModelName, registry: RegistryDep) -> Response:
    return _ready(registry, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready", responses=_ERRORS, summary="200 when that version serves"
)
async def model_version_ready(name: ModelName, version: Version, registry: RegistryDep) -> Response:
    return _ready(registry, name, version)


@router.get("/models/{name}/config", responses=_ERRORS, summary="Model configuration (Triton's JSON form)")
async def config(name: ModelName, registry: RegistryDep, settings: SettingsDep) -> Response:
    return JSONResponse(model_config(lookup(registry, name), registry))


@router.get(
    "/models/{name}/versions/{version}/config", responses=_ERRORS, summary="Configuration of one version"
)
async def config_version(
    name: ModelName, version: Version, registry: RegistryDep, settings: SettingsDep
) -> Response:
    return JSONResponse(model_config(lookup(registry, name, version), registry))


# ----------------------------------------------------------------------------------------------- infer

_INFER_EXAMPLE = {
    "inputs": [
        {
            "name": "tokens",
            "datatype": "INT64",
            "shape": [1, 11],
            "data": [0, 0, 0, 0, 3, 36, 11, 35, 37, 37, 3],
        }
    ],
    "outputs": [{"name": "logits"}],
}
_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "A V2 inference request: JSON, or a JSON header followed by raw little-endian tensor bytes "
            "(binary tensor extension: header length in `Inference-Header-Content-Length`, each binary "
            "input with `parameters.binary_data_size`). gzip/deflate `Content-Encoding` accepted. The "
            "example is 'c9k8??c' for fastweights_t11 (ids from the metadata's `parameters.vocab`)."
        ),
        "content": {
            "application/json": {"example": _INFER_EXAMPLE},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def infer_raw(
    body: bytes,
    headers: Mapping[str, str],
    registry: ModelRegistry,
    settings: Settings,
    name: str,
    version: str | None,
) -> tuple[bytes, dict[str, str], str]:
    """One V2 infer request from its raw body and lower-cased headers -> (payload, headers, media type).

    Shared by the FastAPI routes and the ASGI fast path (`service.fastpath`).
    """
    try:
        parsed = parse_infer_request(
            body,
            headers.get("inference-header-content-length"),
            headers.get("content-encoding"),
            max_body_bytes=settings.max_body_bytes,
        )
    except V2Error as exc:
        raise bad_request(exc) from None
    model, results = await v2_service.infer(registry, settings, parsed, name, version)
    try:
        payload, header_length = build_infer_response(
            model.info.name, model.info.version, results, parsed, settings.max_response_bytes
        )
    except V2Error as exc:
        raise bad_request(exc) from None
    out_headers: dict[str, str] = {}
    if header_length is not None:
        out_headers["Inference-Header-Content-Length"] = str(header_length)
    payload, encoding = compress(payload, headers.get("accept-encoding"))
    if encoding is not None:
        out_headers["Content-Encoding"] = encoding
    media_type = "application/json" if header_length is None else "application/octet-stream"
    return payload, out_headers, media_type


async def _infer(
    request: Request, registry: ModelRegistry, settings: Settings, name: str, version: str | None
) -> Response:
    headers = {k.lower(): v for k, v in request.headers.items()}
    work = infer_raw(await request.body(), headers, registry, settings, name, version)
    payload, out_headers, media_type = await until_disconnect(request, work)
    return Response(payload, media_type=media_type, headers=out_headers)


async def infer_fast(request: RawRequest, state: Any) -> RawResponse:
    name = request.params["name"]
    if len(name) > MAX_NAME_LENGTH:  # what the FastAPI route's path validation refuses
        raise ApiError(
            400, "invalid_request", f"name: String should have at most {MAX_NAME_LENGTH} characters", "name"
        )
    version = request.params.get("version")
    if version is not None and len(version) > MAX_VERSION_LENGTH:
        message = f"version: String should have at most {MAX_VERSION_LENGTH} characters"
        raise ApiError(400, "invalid_request", message, "version")
    payload, headers, media_type = await infer_raw(
        request.body, request.headers, state.registry, state.settings, name, version
    )
    return RawResponse(payload, media_type=media_type, headers=headers)


@router.post(
    "/models/{name}/infer",
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_DOC,
    summary="Inference: tokens INT64 [B, T] -> logits FP32 [B, 10], memory_attention FP32 [B, T]",
)
async def infer(name: ModelName, request: Request, registry: RegistryDep, settings: SettingsDep) -> Response:
    return await _infer(request, registry, settings, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_DOC,
    summary="Inference on one version (must be the serving one)",
)
async def infer_version(
    name: ModelName, version: Version, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    return await _infer(request, registry, settings, name, version)


# ------------------------------------------------------------------------------------------ repository


async def _json_body(request: Request) -> dict[str, Any]:
    """Repository requests carry an optional JSON object (tritonclient sends '' or '{...}')."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "bad_request", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    return body


@router.post("/repository/index", summary="Every model of the repository with its state (READY, ...)")
async def repository_index(request: Request, registry: RegistryDep) -> Response:
    body = await _json_body(request)
    ready_only = body.get("ready", False)
    if not isinstance(ready_only, bool):
        raise ApiError(400, "bad_request", "'ready' must be a boolean")
    rows = registry.index()
    if ready_only:
        rows = [r for r in rows if r["state"] == "READY"]
    return JSONResponse(rows)


async def _parameters(request: Request) -> dict[str, Any]:
    """The optional `parameters` object of a repository load/unload body."""
    params = (await _json_body(request)).get("parameters") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "bad_request", "'parameters' must be an object")
    return params


@router.post(
    "/repository/models/{name}/load",
    responses=_ERRORS,
    summary="Load or hot-reload the newest version; a version that fails leaves the old one serving",
)
async def load(name: ModelName, request: Request, registry: RegistryDep) -> Response:
    v2_service.checked_name(name)  # before the body: a bad name is the first thing wrong
    model = await v2_service.load(registry, name, await _parameters(request))
    return JSONResponse({"name": name, "version": model.info.version, "state": "READY"})


@router.post(
    "/repository/models/{name}/unload",
    responses=_ERRORS,
    summary="Stop serving a model; requests already queued on it still complete",
)
async def unload(name: ModelName, request: Request, registry: RegistryDep) -> Response:
    v2_service.checked_name(name)
    await _parameters(request)  # checked, though unload takes none
    await v2_service.unload(registry, name)
    return JSONResponse({"name": name, "state": "UNAVAILABLE"})


FAST_ROUTES = [
    fast_route("POST", "/v2/models/{name}/infer", infer_fast),
    fast_route("POST", "/v2/models/{name}/versions/{version}/infer", infer_fast),
]
