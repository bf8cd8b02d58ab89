"""The gRPC server: grpcio's asyncio server on the event loop that serves HTTP, over the same app state.

    server = await start_grpc_server(app)   # after the lifespan loaded the models; binds FWS_GRPC_PORT
    ...
    await server.stop(grace_s)              # on shutdown: refuses new calls, lets running ones finish

It serves `inference.GRPCInferenceService` (service/grpc/servicer.py) and the standard gRPC health service
(`grpc.health.v1.Health`, what Kubernetes' gRPC probes and grpc_health_probe ask), which reports SERVING
exactly when HTTP's `/v2/health/ready` answers 200. Limits: message size both ways
(FWS_GRPC_MAX_MESSAGE_BYTES), HTTP/2 streams per connection (FWS_GRPC_MAX_CONCURRENT_STREAMS) and calls in the
whole server (FWS_GRPC_MAX_CONCURRENT_RPCS, beyond it RESOURCE_EXHAUSTED at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference_grpc import grpc_service_pb2_grpc as pb_grpc
from service.config import Settings
from service.grpc.servicer import SERVICE_NAME, InferenceServicer
from service.routes.health import serving

log = logging.getLogger("service.grpc")

HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
# Watch: how often a watched status is read again (statuses are flags; nothing pushes a change).
WATCH_INTERVAL_S = 1.0


class GrpcBindError(RuntimeError):
    """FWS_GRPC_PORT could not be bound (in use, or no permission)."""


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Serving status read live from the app's flags: "" (the server) and each service it serves."""

    def __init__(self, state: Any):
        self.state = state

    def status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType | None:
        if service not in ("", SERVICE_NAME, HEALTH_SERVICE_NAME):
            return None
        if service == HEALTH_SERVICE_NAME or serving(self.state):
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = self.status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN  # Watch never fails, per the spec
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_INTERVAL_S)


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        # Workers of `--workers N` share the port (the kernel spreads connections over them); a lone server
        # owns it, so a second one on the same port fails to start instead of sharing it silently.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


def address(settings: Settings) -> str:
    host = settings.host
    return f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"


async def start_grpc_server(app: Any) -> grpc.aio.Server:
    """Build, bind and start the server for `app` (its state: settings, registry, metrics, flags)."""
    settings: Settings = app.state.settings
    server = grpc.aio.server(
        options=server_options(settings), maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(app.state), server)
    where = address(settings)
    try:
        port = server.add_insecure_port(where)
    except RuntimeError as exc:
        raise GrpcBindError(f"cannot bind the gRPC port {where}: {exc}") from None
    if port == 0:  # older grpcio reports a failed bind this way
        raise GrpcBindError(f"cannot bind the gRPC port {where}")
    await server.start()
    log.info("grpc listening", extra={"address": where})
    return server
