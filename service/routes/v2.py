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

import re
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Path, Request, Security
from fastapi.security import HTTPBearer
from starlette.responses import Response

from service.config import Settings
from service.errors import ApiError, JSONResponse
from service.fastpath import RawRequest, RawResponse, hot_route
from service.metrics import Metrics
from service.predictor import LoadedModel, ModelLoadError
from service.registry import ModelNotFoundError, ModelRegistry
from service.routes.native import until_disconnect
from service.v2_codec import (
    CONFIG_DATA_TYPES,
    TensorMeta,
    V2Error,
    build_infer_response,
    compress,
    parse_infer_request,
    v2_datatype,
    validate_inputs,
)

bearer = HTTPBearer(auto_error=False, description="Only when the server runs with FWS_API_KEY.")
router = APIRouter(prefix="/v2", tags=["Open Inference Protocol V2"], dependencies=[Security(bearer)])

PLATFORM = "onnxruntime_onnx"
# Only what is really implemented (tritonclient and perf_analyzer read this list).
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ERROR = {"content": {"application/json": {"schema": ERROR_SCHEMA, "example": {"error": "message"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad request", **_ERROR},
    404: {"description": "Unknown model or version", **_ERROR},
    503: {"description": "Not ready, overloaded or shutting down (Retry-After)", **_ERROR},
}
_INFER_ERRORS = {**_ERRORS, 504: {"description": "Deadline exceeded", **_ERROR}}

_STATUS_CODE_NAMES = {
    400: "bad_request",
    404: "not_found",
    413: "body_too_large",
    415: "unsupported_media_type",
}


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


def bad_request(exc: V2Error) -> ApiError:
    return ApiError(exc.status, _STATUS_CODE_NAMES.get(exc.status, "bad_request"), exc.message)


def checked_name(name: str) -> str:
    # Path segments like ".." must never reach the repository's file system paths.
    if not _MODEL_NAME.match(name) or ".." in name:
        raise ApiError(400, "bad_request", f"invalid model name {name!r}")
    return name


def lookup(registry: ModelRegistry, name: str, version: str | None = None) -> LoadedModel:
    """The serving model; an unknown name's 404 lists the V2 model names (one per length bucket)."""
    try:
        return registry.get(name, version)
    except ModelNotFoundError as exc:
        if version is not None and name in registry.names():
            raise
        known = ", ".join(registry.names()) or "none"
        raise ModelNotFoundError(f"{exc}; V2 models here (one per sequence length): {known}") from None


# ---------------------------------------------------------------------------------------- descriptions


def tensor_metas(model: LoadedModel) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
    """The model's contract tensors in V2 terms: symbolic dims (the batch axis) become -1."""

    def meta(spec: Any) -> TensorMeta:
        shape = tuple(d if isinstance(d, int) else -1 for d in spec.shape)
        return TensorMeta(spec.name, v2_datatype(np.dtype(spec.dtype)), shape)

    return tuple(meta(s) for s in model.info.inputs), tuple(meta(s) for s in model.info.outputs)


def model_parameters(model: LoadedModel) -> dict[str, Any]:
    """What a V2 user needs to encode `tokens` and decode `logits` without the repository files."""
    info = model.info
    return {
        "family": info.family,
        "seq_len": info.seq_len,
        "max_pairs": info.max_pairs,
        "vocab": list(info.vocab_tokens),
        "pad_id": info.pad_id,
        "padding": "left",
        "answer_classes": list(info.answer_classes),
        "providers": list(info.providers),
        "encoding": (
            f"tokens[b] = ids of the query characters (index in 'vocab'), left padded with pad_id to "
            f"seq_len={info.seq_len}; e.g. 'c9k8??c'. The answer is answer_classes[argmax(logits[b])]."
        ),
    }


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    inputs, outputs = tensor_metas(model)
    return {
        "name": model.info.name,
        "versions": [model.info.version],
        "platform": PLATFORM,
        "inputs": [t.as_json() for t in inputs],
        "outputs": [t.as_json() for t in outputs],
        "parameters": model_parameters(model),
    }


def model_config(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    """Triton's model configuration (JSON form of config.pbtxt) with the settings this server REALLY uses.

    With max_batch_size > 0, dims leave out the batch dimension (Triton's convention, read by perf_analyzer).
    """
    inputs, outputs = tensor_metas(model)

    def entry(t: TensorMeta) -> dict[str, Any]:
        return {"name": t.name, "data_type": CONFIG_DATA_TYPES[t.datatype], "dims": list(t.shape[1:])}

    return {
        "name": model.info.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": settings.max_batch_size,
        "input": [entry(t) for t in inputs],
        "output": [entry(t) for t in outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(settings.max_queue_delay_ms * 1000),
            "default_queue_policy": {
                "max_queue_size": settings.max_queue_rows,
                "default_timeout_microseconds": int(settings.request_timeout_s * 1_000_000),
                "allow_timeout_override": True,
            },
        },
        "instance_group": [
            {
                "count": settings.inference_threads,
                "kind": "KIND_GPU" if "CUDAExecutionProvider" in model.info.providers[:1] else "KIND_CPU",
            }
        ],
        "parameters": {
            k: {"string_value": v if isinstance(v, str) else orjson.dumps(v).decode()}
            for k, v in model_parameters(model).items()
        },
    }


# ---------------------------------------------------------------------------------------------- server


@router.get("", summary="Server metadata: name, version and the protocol extensions implemented")
async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": request.app.title, "version": request.app.version, "extensions": EXTENSIONS})


# ---------------------------------------------------------------------------------------------- models


def _per_model_samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    """(sample name, model) -> value, summed over any other label (e.g. the rejection reason)."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for family in metrics.registry.collect():
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is not None:
                out[(sample.name, model)] += sample.value
    return out


def model_statistics(model: LoadedModel, samples: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Triton's statistics extension, derived from the Prometheus metrics the batcher keeps per model.

    Counts are exact: requests that reached a run (success), runs (execution_count), rows (inference_count),
    requests refused or dropped (fail). Durations are sums: queue time per request, and per request the
    wall time of the run it was part of (so compute_infer.ns / count is the mean run time a request saw).
    """
    name = model.info.name

    def get(sample: str) -> float:
        return samples.get((sample, name), 0.0)

    requests = int(get("fws_queue_wait_seconds_count"))
    runs = int(get("fws_inference_duration_seconds_count"))
    queue_ns = int(get("fws_queue_wait_seconds_sum") * 1e9)
    run_ns = get("fws_inference_duration_seconds_sum") * 1e9
    compute_ns = int(run_ns * requests / runs) if runs else 0
    return {
        "name": name,
        "version": model.info.version,
        "last_inference": 0,  # not tracked
        "inference_count": int(get("fws_batch_size_rows_sum")),
        "execution_count": int(get("fws_batch_size_rows_count")),
        "inference_stats": {
            "success": {"count": requests, "ns": queue_ns + compute_ns},
            "fail": {"count": int(get("fws_requests_rejected_total")), "ns": 0},
            "queue": {"count": requests, "ns": queue_ns},
            "compute_input": {"count": requests, "ns": 0},
            "compute_infer": {"count": requests, "ns": compute_ns},
            "compute_output": {"count": requests, "ns": 0},
        },
        "batch_stats": [],
    }


def _statistics(request: Request, models: list[LoadedModel]) -> Response:
    samples = _per_model_samples(request.app.state.metrics)
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
    return JSONResponse(model_metadata(lookup(registry, name)))


@router.get("/models/{name}/versions/{version}", responses=_ERRORS, summary="Model metadata of one version")
async def metadata_version(name: ModelName, version: Version, registry: RegistryDep) -> Response:
    return JSONResponse(model_metadata(lookup(registry, name, version)))


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
    return JSONResponse(model_config(lookup(registry, name), settings))


@router.get(
    "/models/{name}/versions/{version}/config", responses=_ERRORS, summary="Configuration of one version"
)
async def config_version(
    name: ModelName, version: Version, registry: RegistryDep, settings: SettingsDep
) -> Response:
    return JSONResponse(model_config(lookup(registry, name, version), settings))


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
    deadline = None if parsed.timeout_us is None else time.monotonic() + parsed.timeout_us / 1e6
    for attempt in range(2):
        model = lookup(registry, name, version)
        if model.info.stateful:
            raise ApiError(
                400, "bad_request", f"model {name!r} is stateful: its sequences are not served yet"
            )
        inputs, outputs = tensor_metas(model)
        try:
            tensors = validate_inputs(
                parsed,
                inputs,
                outputs,
                max_batch_size=settings.max_batch_size,
                token_range={"tokens": (0, len(model.info.vocab_tokens))},
            )
        except V2Error as exc:
            raise bad_request(exc) from None
        # Pin the version validated here: the answer must come from it and say so.
        try:
            results = await registry.infer(name, tensors["tokens"], model.info.version, deadline)
            break
        except ModelNotFoundError:
            # A reload swapped versions between the lookup and the submit: a request that named no version
            # goes to the new one (validated again); one that named the old version gets the 404.
            if version is not None or attempt == 1 or not registry.is_ready(name):
                raise
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
    checked_name(name)
    params = await _parameters(request)
    if "config" in params or any(str(k).startswith("file:") for k in params):
        raise ApiError(
            400,
            "bad_request",
            "loading with an override config or files is not supported; put the version in the repository",
        )
    if name not in registry.names():
        raise ModelNotFoundError(f"unknown model {name!r}: not in the model repository")
    try:
        model = await registry.load(name)
    except ModelLoadError:
        row = next((r for r in registry.index() if r["name"] == name), None)
        reason = row["reason"] if row else "load failed"
        raise ApiError(400, "load_failed", f"failed to load model {name!r}: {reason}") from None
    return JSONResponse({"name": name, "version": model.info.version, "state": "READY"})


@router.post(
    "/repository/models/{name}/unload",
    responses=_ERRORS,
    summary="Stop serving a model; requests already queued on it still complete",
)
async def unload(name: ModelName, request: Request, registry: RegistryDep) -> Response:
    checked_name(name)
    await _parameters(request)  # checked, though unload takes none
    await registry.unload(name)
    return JSONResponse({"name": name, "state": "UNAVAILABLE"})


HOT_ROUTES = [
    hot_route("POST", "/v2/models/{name}/infer", infer_fast),
    hot_route("POST", "/v2/models/{name}/versions/{version}/infer", infer_fast),
]
