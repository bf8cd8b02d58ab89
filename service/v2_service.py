"""The Open Inference Protocol's data plane without a transport: what the REST routes (service/routes/v2.py)
and the gRPC servicer (service/grpc/) both answer, so the two cannot drift apart.

Model descriptions (metadata, Triton's config and statistics), model lookup with the protocol's messages,
inference from a decoded `InferRequest` (service/v2_codec.py) and repository load/unload. Errors are the
domain's (`ModelNotFoundError`, `ModelNotReadyError`, batcher errors) or `ApiError` with an HTTP-style status;
each transport maps them to its own codes (service/errors.py, service/grpc/status.py).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

import numpy as np
import orjson

from contract import PLATFORM, MetadataKeys
from service.config import Settings
from service.errors import ApiError
from service.metrics import Metrics
from service.predictor import LoadedModel, ModelLoadError
from service.registry import ModelNotFoundError, ModelRegistry
from service.sessions.sequences import sequence_infer
from service.sessions.stream_model import StreamModel
from service.v2_codec import (
    CONFIG_DATA_TYPES,
    InferRequest,
    TensorMeta,
    V2Error,
    v2_datatype,
    validate_inputs,
)

# Only what is really implemented (tritonclient and perf_analyzer read this list).
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_STATUS_CODE_NAMES = {
    400: "bad_request",
    404: "not_found",
    413: "body_too_large",
    415: "unsupported_media_type",
}


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


Metas = tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]
# ModelInfo id -> (that ModelInfo, its metas): asked on every infer request, the same for a model's life.
# The entry keeps its ModelInfo alive, so an id is never reused while it is a key.
_METAS: dict[int, tuple[Any, Metas]] = {}


def tensor_metas(model: LoadedModel) -> Metas:
    """The model's contract tensors in V2 terms: symbolic dims (the batch axis) become -1."""
    hit = _METAS.get(id(model.info))
    if hit is not None and hit[0] is model.info:
        return hit[1]

    def meta(spec: Any) -> TensorMeta:
        shape = tuple(d if isinstance(d, int) else -1 for d in spec.shape)
        return TensorMeta(spec.name, v2_datatype(np.dtype(spec.dtype)), shape)

    metas = tuple(meta(s) for s in model.info.inputs), tuple(meta(s) for s in model.info.outputs)
    _METAS[id(model.info)] = (model.info, metas)
    return metas


def model_parameters(model: LoadedModel) -> dict[str, Any]:
    """What a V2 user needs to encode `tokens` and decode `logits` without the repository files."""
    info = model.info
    if isinstance(model, StreamModel):
        return stream_parameters(model)
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
        **source_parameters(info.metadata),
    }


def source_parameters(metadata: dict[str, str]) -> dict[str, Any]:
    """The graph's source checkpoint, its sha256 and its figures (steps, K range, validation/test error)."""
    figures = metadata.get(MetadataKeys.SOURCE_FIGURES)
    try:
        parsed = orjson.loads(figures) if figures else {}
    except orjson.JSONDecodeError:
        parsed = {}
    return {
        "source_checkpoint": metadata.get(MetadataKeys.SOURCE_CHECKPOINT, ""),
        "source_sha256": metadata.get(MetadataKeys.SOURCE_SHA256, ""),
        "source_figures": parsed if isinstance(parsed, dict) else {},
    }


def stream_parameters(model: StreamModel) -> dict[str, Any]:
    """The stateful model's: the sequence parameters it takes and the capacity of one sequence."""
    info, shape = model.info, model.shape
    return {
        "family": info.family,
        "stateful": True,
        "seq_len": shape.chunk_len,
        "memory_len": shape.memory_len,
        "max_pairs": shape.max_pairs,
        "vocab": list(info.vocab_tokens),
        "pad_id": info.pad_id,
        "padding": "left",
        "answer_classes": list(info.answer_classes),
        "providers": list(info.providers),
        "encoding": (
            "one chunk per request: tokens[0] = a pair (key, value) or the query '??k', left padded with "
            f"pad_id to seq_len={shape.chunk_len}; parameters sequence_id (int or string), sequence_start on "
            "the first chunk, sequence_end to drop the state. A chunk with '??' is answered without changing "
            f"the state (answer_classes[argmax(logits)]); a sequence holds at most {shape.max_pairs} pairs."
        ),
    }


def model_metadata(model: LoadedModel, registry: ModelRegistry) -> dict[str, Any]:
    inputs, outputs = tensor_metas(model)
    return {
        "name": model.info.name,
        "versions": registry.served_versions(model.info.name),
        "platform": PLATFORM,
        "inputs": [t.as_json() for t in inputs],
        "outputs": [t.as_json() for t in outputs],
        "parameters": model_parameters(model),
    }


def model_config(model: LoadedModel, registry: ModelRegistry) -> dict[str, Any]:
    """Triton's model configuration (JSON form of config.pbtxt) with what this server REALLY uses for the
    model: its config.pbtxt, and the FWS_ defaults for what the file leaves out.

    With max_batch_size > 0, dims leave out the batch dimension (Triton's convention, read by perf_analyzer).
    """
    serving = registry.serving_config(model.info.name)
    inputs, outputs = tensor_metas(model)

    def entry(t: TensorMeta) -> dict[str, Any]:
        return {"name": t.name, "data_type": CONFIG_DATA_TYPES[t.datatype], "dims": list(t.shape[1:])}

    return {
        "name": model.info.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "input": [entry(t) for t in inputs],
        "output": [entry(t) for t in outputs],
        **serving.as_triton(),
        "instance_group": [
            {
                "count": serving.instances,
                "kind": serving.instance_kind
                if serving.instance_kind != "KIND_AUTO"
                else "KIND_GPU"
                if "CUDAExecutionProvider" in model.info.providers[:1]
                else "KIND_CPU",
            }
        ],
        "parameters": {
            k: {"string_value": v if isinstance(v, str) else orjson.dumps(v).decode()}
            for k, v in model_parameters(model).items()
        },
        **_sequence_batching(model, registry.settings),
    }


def _sequence_batching(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    """Triton's sequence_batching of the stateful model (the state as implicit state tensors); else {}."""
    if not isinstance(model, StreamModel):
        return {}
    s = model.shape
    state = [
        ("state_h", "state_h_out", [s.hidden_size]),
        ("state_memory", "state_memory_out", [s.memory_len, s.hidden_size]),
    ]
    return {
        "sequence_batching": {
            "max_sequence_idle_microseconds": int(settings.session_idle_ttl_s * 1_000_000),
            "state": [
                {"input_name": i, "output_name": o, "data_type": "TYPE_FP32", "dims": d} for i, o, d in state
            ],
        }
    }


# ---------------------------------------------------------------------------------------- statistics


def per_model_samples(metrics: Metrics) -> dict[tuple[str, str], float]:
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


# ----------------------------------------------------------------------------------------------- infer


async def infer(
    registry: ModelRegistry,
    settings: Settings,
    request: InferRequest,
    name: str,
    version: str | None,
    deadline: float | None = None,
) -> tuple[LoadedModel, dict[str, np.ndarray]]:
    """Validate a decoded request against the serving model and run it through the batcher.

    Returns the model that answered (its name and version go into the response) and its outputs. `deadline`
    (a `time.monotonic()` value, e.g. the gRPC call's) and the request's `timeout` parameter may only shorten
    the server's own request timeout.
    """
    if request.timeout_us is not None:
        asked = time.monotonic() + request.timeout_us / 1e6
        deadline = asked if deadline is None else min(deadline, asked)
    for attempt in range(2):
        model = lookup(registry, name, version)
        inputs, outputs = tensor_metas(model)
        try:
            tensors = validate_inputs(
                request,
                inputs,
                outputs,
                max_batch_size=registry.serving_config(model.info.name).max_batch_size,
                token_range={"tokens": (0, len(model.info.vocab_tokens))},
            )
        except V2Error as exc:
            raise bad_request(exc) from None
        if isinstance(model, StreamModel):  # Triton's sequence semantics (service/sessions/sequences.py)
            return model, await sequence_infer(
                registry.sessions, model, tensors["tokens"], request.parameters
            )
        # Pin the version validated here: the answer must come from it and say so.
        try:
            return model, await registry.infer(name, tensors["tokens"], model.info.version, deadline)
        except ModelNotFoundError:
            # A reload swapped versions between the lookup and the submit: a request that named no version
            # goes to the new one (validated again); one that named the old version gets the 404.
            if version is not None or attempt == 1 or not registry.is_ready(name):
                raise
    raise AssertionError("unreachable: the second attempt returns or raises")


# ------------------------------------------------------------------------------------------ repository


async def load(registry: ModelRegistry, name: str, parameters: dict[str, Any]) -> LoadedModel:
    """Load or hot-reload the newest version of `name`; a version that fails leaves the old one serving."""
    checked_name(name)
    if "config" in parameters or any(str(k).startswith("file:") for k in parameters):
        raise ApiError(
            400,
            "bad_request",
            "loading with an override config or files is not supported; put the version in the repository",
        )
    if name not in registry.names():
        raise ModelNotFoundError(f"unknown model {name!r}: not in the model repository")
    try:
        return await registry.load(name)
    except ModelLoadError:
        row = next((r for r in registry.index() if r["name"] == name), None)
        reason = row["reason"] if row else "load failed"
        raise ApiError(400, "load_failed", f"failed to load model {name!r}: {reason}") from None


async def unload(registry: ModelRegistry, name: str) -> None:
    """Stop serving `name`; requests already queued on it still complete."""
    checked_name(name)
    await registry.unload(name)
