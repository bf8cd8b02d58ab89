"""`--protocol grpc`: score through the Open Inference Protocol over gRPC (`inference.GRPCInferenceService`).

The same encoding as `--protocol v2` (client.v2.V2Codec: buckets, left-padded token ids, argmax of the
logits), with the tokens sent as `raw_input_contents` and the logits read from `raw_output_contents`, both
little-endian, over one HTTP/2 connection per server. The gRPC ModelMetadataResponse has no `parameters`
field: the vocabulary, PAD id, answer classes and sequence length come from the model config's `parameters`
(string values; JSON text for those that are not strings), where the server puts the same ones.

Status codes decide what happens to a call, as HTTP statuses do for the other protocols (client.retry):
UNAVAILABLE, RESOURCE_EXHAUSTED (too many calls), DEADLINE_EXCEEDED, ABORTED and CANCELLED are retried with
backoff (the server's `retry-after` trailer first); UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND and
UNIMPLEMENTED end the run; anything else (INVALID_ARGUMENT, INTERNAL, a message over the server's size
limit...) refuses the request as a whole: the scorer halves it until the rows at fault are alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

import grpc

from client.retry import RetryPolicy, RunFailed, parse_retry_after
from client.stats import Stats
from client.v2 import (
    INPUT_NAME,
    OUTPUT_NAME,
    Bucket,
    V2Codec,
    V2Error,
    bucket_names,
    fp32_le,
    int64_le,
    parse_buckets,
)
from inference_grpc import grpc_service_pb2 as pb
from inference_grpc import grpc_service_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:8001"

RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# grpc core's words for a message over the receiver's limit: RESOURCE_EXHAUSTED as an overload is, but
# resending the same message can never pass; a smaller one can.
_TOO_LARGE = ("message larger than max",)
# The parameters that are not strings on the wire (JSON text in `string_value`): what encoding reads.
_JSON_PARAMETERS = ("vocab", "answer_classes", "seq_len", "pad_id")


def target_of(url: str) -> str:
    """`host:port` of a `--url` for gRPC: `host:port` or `grpc://host:port` (plain text; no TLS)."""
    target = url.removeprefix("grpc://").rstrip("/")
    if "://" in target or "/" in target or not target:
        raise ValueError(
            f"a gRPC server is host:port or grpc://host:port (the gRPC port, 8001 by default), got {url!r}"
        )
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a gRPC server needs host:port, got {url!r}")
    return target


def classify(code: grpc.StatusCode, details: str) -> str:
    """'retry', 'fatal' or 'split' for a failed call (see the module docstring)."""
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and any(w in details for w in _TOO_LARGE):
        return "split"
    if code in RETRY_CODES:
        return "retry"
    if code in FATAL_CODES:
        return "fatal"
    return "split"


def row_error(code: grpc.StatusCode, details: str) -> dict[str, Any]:
    """A refused request's error object, shaped like a per-item error of the batch API."""
    return {"code": f"grpc_{code.name.lower()}", "message": details, "field": ""}


def config_parameters(config: Any) -> dict[str, Any]:
    """The model config's `parameters` as the HTTP metadata's `parameters` (JSON text decoded)."""
    out: dict[str, Any] = {}
    for key, value in config.parameters.items():
        text = value.string_value
        if key in _JSON_PARAMETERS:
            try:
                out[key] = json.loads(text)
            except ValueError:
                raise V2Error(f"model {config.name}: parameter {key!r} is not JSON: {text[:80]!r}") from None
        else:
            out[key] = text
    return out


def request(bucket: Bucket, rows: Sequence[Sequence[int]]) -> pb.ModelInferRequest:
    """One infer request: the rows' token ids as one INT64 tensor (n, seq_len), raw little-endian."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=INPUT_NAME, datatype="INT64", shape=(len(rows), bucket.seq_len)
    )
    wanted = pb.ModelInferRequest.InferRequestedOutputTensor(name=OUTPUT_NAME)
    return pb.ModelInferRequest(
        model_name=bucket.name, inputs=(tensor,), outputs=(wanted,), raw_input_contents=(int64_le(rows),)
    )


def logits(response: pb.ModelInferResponse, n_rows: int, n_classes: int) -> list[float]:
    """The flat FP32 logits of an infer response (raw contents, or typed when the server sent those)."""
    for i, out in enumerate(response.outputs):
        if out.name != OUTPUT_NAME:
            continue
        if out.datatype != "FP32":
            raise V2Error(f"logits of datatype {out.datatype}, expected FP32")
        if i < len(response.raw_output_contents):
            flat = fp32_le(response.raw_output_contents[i])
        else:
            flat = list(out.contents.fp32_contents)
        if len(flat) != n_rows * n_classes:
            raise V2Error(f"logits of {len(flat)} values for {n_rows} rows x {n_classes} classes")
        return flat
    raise V2Error(f"the infer response has no {OUTPUT_NAME!r} output")


class GrpcV2Client:
    """Calls to one or more servers, round-robin per attempt, retried as the module docstring says."""

    def __init__(
        self,
        targets: Sequence[str],
        stats: Stats,
        policy: RetryPolicy,
        timeout: float,
        api_key: str | None = None,
    ):
        if not targets:
            raise ValueError("at least one gRPC server is needed")
        self.stats = stats
        self.policy = policy
        self.timeout = timeout
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        # Unlimited both ways on this side: the server's FWS_GRPC_MAX_MESSAGE_BYTES is the limit that counts.
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self._channels = [grpc.aio.insecure_channel(t, options=options) for t in targets]
        self._stubs = itertools.cycle(
            [(t, pb_grpc.GRPCInferenceServiceStub(c)) for t, c in zip(targets, self._channels, strict=True)]
        )

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def __aenter__(self) -> GrpcV2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def codec(self, family: str) -> V2Codec:
        """The family's buckets from the repository index and each bucket's model config."""
        index = await self.call("RepositoryIndex", pb.RepositoryIndexRequest(ready=True))
        rows = [{"name": m.name, "state": m.state} for m in index.models]
        names = bucket_names(family, rows)
        configs = {}
        for name in names:
            answer = await self.call("ModelConfig", pb.ModelConfigRequest(name=name))
            configs[name] = answer.config
        metadata = {name: {"parameters": config_parameters(c)} for name, c in configs.items()}
        max_batch = {name: {"max_batch_size": c.max_batch_size} for name, c in configs.items()}
        return V2Codec(parse_buckets(family, rows, metadata, max_batch))

    async def infer(self, bucket: Bucket, rows: Sequence[Sequence[int]]) -> list[float] | dict[str, Any]:
        """The flat logits of `rows`, or the error object of a refusal worth splitting."""
        answer = await self.call("ModelInfer", request(bucket, rows), n_items=len(rows))
        if isinstance(answer, dict):
            return answer
        return logits(answer, len(rows), len(bucket.classes))

    async def call(self, method: str, message: Any, n_items: int = 0) -> Any:
        """One call, retried on transient failures, each attempt to the next server. Returns the answer, or
        (for ModelInfer) the error object of a refusal worth splitting; raises RunFailed otherwise."""
        for attempt in itertools.count():
            target, stub = next(self._stubs)
            retry_after: float | None = None
            try:
                self.stats.requests += 1
                return await getattr(stub, method)(message, timeout=self.timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
                kind = classify(code, details)
                reason = f"{target}: gRPC {code.name}: {details[:200]}"
                if kind == "fatal":
                    raise RunFailed(reason) from None
                if kind == "split":
                    if n_items:
                        return row_error(code, details)
                    raise RunFailed(reason) from None
                trailers = exc.trailing_metadata() or ()
                retry_after = parse_retry_after(
                    next((str(v) for k, v in trailers if k == "retry-after"), None)
                )
            if not self.policy.should_retry(attempt):
                what = f"a chunk of {n_items} rows" if n_items else method
                raise RunFailed(f"gave up on {what} after {attempt + 1} attempts; last: {reason}")
            self.stats.retries += 1
            await asyncio.sleep(self.policy.delay(attempt, retry_after))
        raise AssertionError("unreachable")
