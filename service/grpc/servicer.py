"""`inference.GRPCInferenceService`: the KServe V2 gRPC service and the Triton extensions tritonclient calls.

Thin, like the REST routes: every answer comes from `service.v2_service` (the same registry, batcher, limits
and descriptions as `/v2`); this module only translates protobuf. Each call is authorised with the server's
API key (`authorization: Bearer <key>` metadata; liveness and readiness are public, as on HTTP), counted and
timed in `fws_grpc_requests` / `fws_grpc_request_duration_seconds`, logged like an HTTP request, and ends
with the status code `service.grpc.status` maps its error to.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from inference_grpc import grpc_service_pb2 as pb
from inference_grpc import grpc_service_pb2_grpc as pb_grpc
from inference_grpc import model_config_pb2
from service import v2_service
from service.config import Settings
from service.grpc import codec
from service.grpc.status import Failure, failure
from service.logs import request_id_var
from service.metrics import Metrics
from service.middleware import RequestPolicy
from service.registry import ModelRegistry
from service.routes.health import serving

log = logging.getLogger("service.access")

SERVICE_NAME = "inference.GRPCInferenceService"
# ModelStreamInfer: requests of one stream computed at once (they batch together); answers keep their order.
STREAM_WINDOW = 64

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


class CallFailedError(Exception):
    """Ends a call with this status (the API key refused, ...)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def rpc(public: bool = False) -> Callable[[Handler[Request, Response]], Handler[Request, Response]]:
    """A unary call: authorised (unless public), timed, counted, logged, its errors mapped to a status."""

    def wrap(fn: Handler[Request, Response]) -> Handler[Request, Response]:
        method = fn.__name__

        @functools.wraps(fn)
        async def call(
            self: InferenceServicer, request: Request, context: grpc.aio.ServicerContext
        ) -> Response:
            start = time.perf_counter()
            metadata = _metadata(context)
            token = request_id_var.set(self.policy.request_id(metadata))
            ended: Failure | None = None
            code = grpc.StatusCode.CANCELLED  # unless it returns or fails: the client went away
            try:
                if not public:
                    self.authorize(metadata)
                result = await fn(self, request, context)
                code = grpc.StatusCode.OK
                return result
            except CallFailedError as exc:
                ended = exc.failure
            except Exception as exc:
                ended = failure(exc, self.settings.retry_after_s)
            finally:
                if ended is not None:
                    code = ended.code
                self.record(method, code, time.perf_counter() - start, public)
                request_id_var.reset(token)
            await context.abort(ended.code, ended.message, ended.trailing_metadata)
            raise AssertionError("unreachable: abort raises")

        return call

    return wrap


def sequence_id(request: pb.ModelInferRequest) -> Any:
    """The request's `sequence_id` parameter (an int or a string, as Triton takes it), or None."""
    if "sequence_id" not in request.parameters:
        return None
    return codec.parameter_value(request.parameters["sequence_id"]) or None


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata as a dict of text values, lower-case keys (binary `-bin` values left out)."""
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, app: Any):
        self.state = app.state
        self.settings: Settings = app.state.settings
        self.registry: ModelRegistry = app.state.registry
        self.metrics: Metrics = app.state.metrics
        self.policy = RequestPolicy(self.settings, self.metrics)
        self.server_name: str = app.title
        self.server_version: str = app.version
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}

    # -- policy -------------------------------------------------------------------------------------------

    def authorize(self, metadata: dict[str, str]) -> None:
        """The HTTP API's key check on the `authorization` metadata (same rule, same message)."""
        refusal = self.policy.refusal("grpc", {"authorization": metadata.get("authorization", "")})
        if refusal is not None:
            raise CallFailedError(Failure(grpc.StatusCode.UNAUTHENTICATED, refusal.message))

    def record(self, method: str, code: grpc.StatusCode, elapsed: float, quiet: bool = False) -> None:
        key = (method, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.grpc_requests.labels(method, code.name),
                self.metrics.grpc_latency.labels(method, code.name),
            )
        children[0].inc()
        children[1].observe(elapsed)
        if not quiet and log.isEnabledFor(logging.INFO):
            log.info(
                "request",
                extra={
                    "grpc_method": method,
                    "grpc_code": code.name,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    # -- health and metadata ------------------------------------------------------------------------------

    @rpc(public=True)
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc(public=True)
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=serving(self.state))

    @rpc()
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        # As Triton: an unknown or unready model answers ready=false, not an error.
        return pb.ModelReadyResponse(ready=self.registry.is_ready(request.name, request.version or None))

    @rpc()
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=self.server_name, version=self.server_version, extensions=v2_service.EXTENSIONS
        )

    @rpc()
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        meta = v2_service.model_metadata(
            v2_service.lookup(self.registry, request.name, request.version or None), self.registry
        )
        meta.pop("parameters")  # not in the gRPC message: the config's `parameters` carry the same
        return json_format.ParseDict(meta, pb.ModelMetadataResponse())

    @rpc()
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        model = v2_service.lookup(self.registry, request.name, request.version or None)
        config = json_format.ParseDict(
            v2_service.model_config(model, self.registry), model_config_pb2.ModelConfig()
        )
        return pb.ModelConfigResponse(config=config)

    @rpc()
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [v2_service.lookup(self.registry, request.name, request.version or None)]
        else:
            models = sorted(self.registry.ready_models(), key=lambda m: m.info.name)
        samples = v2_service.per_model_samples(self.metrics)
        stats = {"model_stats": [v2_service.model_statistics(m, samples) for m in models]}
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

    # -- repository ---------------------------------------------------------------------------------------

    @rpc()
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        rows = self.registry.index()
        if request.ready:
            rows = [r for r in rows if r["state"] == "READY"]
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows])

    @rpc()
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        params = {
            k: getattr(v, v.WhichOneof("parameter_choice") or "bool_param")
            for k, v in request.parameters.items()
        }
        await v2_service.load(self.registry, request.model_name, params)
        return pb.RepositoryModelLoadResponse()

    @rpc()
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await v2_service.unload(self.registry, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference ----------------------------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest, deadline: float | None) -> pb.ModelInferResponse:
        decoded, raw = codec.decode_request(request)
        model, results = await v2_service.infer(
            self.registry, self.settings, decoded, request.model_name, request.model_version or None, deadline
        )
        return codec.encode_response(model.info.name, model.info.version, results, decoded, raw)

    @rpc()
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._infer(request, self._deadline(context))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Many requests on one stream: up to STREAM_WINDOW computed at once, answered in request order;
        those of one sequence (`sequence_id`) computed one after the other.

        A request that fails answers `error_message` (with its id) and the stream goes on, as Triton does.
        """
        metadata = _metadata(context)
        try:
            self.authorize(metadata)
        except CallFailedError as exc:
            self.record("ModelStreamInfer", exc.failure.code, 0.0)
            await context.abort(exc.failure.code, exc.failure.message)
        pending: asyncio.Queue[asyncio.Task[pb.ModelStreamInferResponse] | None] = asyncio.Queue(
            STREAM_WINDOW
        )
        deadline = self._deadline(context)

        async def one(
            request: pb.ModelInferRequest, after: asyncio.Task[Any] | None
        ) -> pb.ModelStreamInferResponse:
            if after is not None:
                await asyncio.wait([after])  # the previous request of its sequence, finished either way
            start = time.perf_counter()
            code = grpc.StatusCode.CANCELLED
            try:
                response = pb.ModelStreamInferResponse(infer_response=await self._infer(request, deadline))
                code = grpc.StatusCode.OK
                return response
            except Exception as exc:
                ended = failure(exc, self.settings.retry_after_s)
                code = ended.code
                return pb.ModelStreamInferResponse(
                    error_message=ended.message,
                    infer_response=pb.ModelInferResponse(
                        id=request.id, model_name=request.model_name, model_version=request.model_version
                    ),
                )
            finally:
                self.record("ModelStreamInfer", code, time.perf_counter() - start)

        # Requests of one sequence (the `sequence_id` parameter) run one after the other, in stream order;
        # only different sequences and sequence-less requests overlap.
        last_of_sequence: dict[Any, asyncio.Task[Any]] = {}

        def forget(sequence: Any, task: asyncio.Task[Any]) -> None:
            if last_of_sequence.get(sequence) is task:
                del last_of_sequence[sequence]

        async def read() -> None:
            try:
                async for request in requests:
                    sequence = sequence_id(request)
                    task = asyncio.create_task(one(request, last_of_sequence.get(sequence)))
                    if sequence is not None:
                        last_of_sequence[sequence] = task
                        task.add_done_callback(functools.partial(forget, sequence))
                    await pending.put(task)  # waits while the window is full
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
            await reader  # a broken stream's error surfaces here
        finally:
            reader.cancel()
            while not pending.empty():
                left = pending.get_nowait()
                if left is not None:
                    left.cancel()

    # -- not implemented here: shared memory, tracing, log settings ---------------------------------------

    async def _unimplemented(self, what: str, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not supported by this server")

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("system shared memory", context)

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("system shared memory", context)

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("system shared memory", context)

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("CUDA shared memory", context)

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("CUDA shared memory", context)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("CUDA shared memory", context)

    async def TraceSetting(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("tracing", context)

    async def LogSettings(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("log settings", context)
