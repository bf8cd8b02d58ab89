"""The app factory and its lifespan: load every model, warm it up, then report ready; drain on shutdown.

    uvicorn --factory service.main:create_served_app   # with gRPC; or: python -m service / fastweights-serve

State on `app.state`: `settings` (Settings), `metrics` (Metrics), `registry` (ModelRegistry), `ready` (bool,
set once loading finished with at least one model), `draining` (bool, set on SIGTERM by `service.workers`).
Routers: native `/v1` (routes/native.py), health and metrics, the playground page at `/`
(routes/playground.py), and the Open Inference Protocol V2 router `service.routes.v2.router` when that module
exists.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.errors import JSONResponse, install_error_handlers, is_v2
from service.fastpath import FastPath, FastPathServing, FastRoute
from service.metrics import Metrics
from service.middleware import PUBLIC_PATHS, RequestPolicy, ServiceMiddleware
from service.providers import quiet_onnxruntime_log
from service.registry import ModelRegistry
from service.routes import health, metrics, native, playground
from service.workers import drain_on_signals

log = logging.getLogger("service")

DESCRIPTION = """
Associative retrieval with fast-weight RNNs (Ba, Hinton et al., 2016), served with onnxruntime.

* **Native API** (`/v1`): `{"sequence": "c9k8j3f1??c"}` → `{"value": "9", ...}`; errors are
  `{"error": {"code", "message", "field"}}`.
* **Open Inference Protocol V2** (`/v2`): KServe/Triton REST, works with the stock `tritonclient.http`.
* Health: `/v2/health/live`, `/v2/health/ready`; Prometheus metrics at `/metrics`.

When the server runs with `FWS_API_KEY`, send `Authorization: Bearer <key>` (everything except health,
docs and the playground page at `/`).
"""


class NoModelLoadedError(RuntimeError):
    """Every model of the repository failed to load: the start fails (`python -m service` exits 3)."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    registry: ModelRegistry = app.state.registry
    settings: Settings = app.state.settings
    drain_on_signals(app.state)  # a worker of `--workers N`: readiness turns 503 on SIGTERM there too
    grpc_server = await start_grpc(app)
    grpc_stopped = None if grpc_server is None else asyncio.create_task(stop_grpc_on_drain(app, grpc_server))
    try:
        await _load(app, registry, settings)
    except BaseException:
        if grpc_server is not None and grpc_stopped is not None:
            grpc_stopped.cancel()
            await grpc_server.stop(0)
        raise
    try:
        yield
    finally:
        app.state.ready = False
        app.state.draining = True
        if grpc_stopped is not None:
            await grpc_stopped  # sees `draining` now if the signal did not set it, and stops gRPC
        sessions = getattr(app.state, "sessions", None)
        if sessions is not None:
            await sessions.close()
        await registry.close()
        log.info("stopped")


async def start_grpc(app: FastAPI) -> Any:
    """The gRPC server of this process (service/grpc/), bound before the models load as HTTP's port is: its
    health service says NOT_SERVING until they are warm. None when off, or for an app not served as a process
    (tests' in-process clients). A port it cannot bind fails the start."""
    if not (app.state.serve_grpc and app.state.settings.grpc_enabled):
        return None
    from service.grpc.server import GrpcBindError, start_grpc_server

    try:
        return await start_grpc_server(app)
    except GrpcBindError as exc:
        log.error("grpc not started: exiting", extra={"reason": str(exc)})
        raise


async def stop_grpc_on_drain(app: FastAPI, server: Any, poll_s: float = 0.1) -> None:
    """Stop the gRPC server as soon as the process starts draining (the signal sets `draining`), at the same
    time as HTTP's drain rather than after it: new calls are refused at once, running ones (and open streams)
    get FWS_DRAIN_TIMEOUT_S, and the batchers close only after."""
    while not app.state.draining:
        await asyncio.sleep(poll_s)
    await server.stop(app.state.settings.drain_timeout_s)


async def _load(app: FastAPI, registry: ModelRegistry, settings: Settings) -> None:
    """Load and warm up every model; ready once at least one serves."""
    failures = await registry.start()
    sessions = getattr(app.state, "sessions", None)
    if sessions is not None:
        await sessions.start()
    for failure in failures:
        log.error("model not loaded", extra={"model": failure.name, "reason": failure.reason})
    if registry.ready:
        # Everything alive now (modules, sessions, schemas) lives as long as the process: keep it out of the
        # cyclic GC's full passes, which otherwise cost ~100 us per request (measured, docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        app.state.ready = True
        log.info(
            "ready",
            extra={
                "models": [
                    {"name": m.info.name, "version": m.info.version, "providers": list(m.info.providers)}
                    for m in registry.ready_models()
                ],
                "repository": str(settings.model_repository),
            },
        )
    elif failures:
        # Models were there and every one failed (corrupt, truncated): a start that cannot serve must fail
        # loudly (non-zero exit) rather than sit unready. An EMPTY repository still starts, unready.
        log.error("no model could be loaded: exiting", extra={"repository": str(settings.model_repository)})
        raise NoModelLoadedError(f"no model could be loaded from {settings.model_repository}")
    else:
        log.error(
            "no model loaded: staying NOT ready (/v2/health/ready answers 503)",
            extra={"repository": str(settings.model_repository)},
        )


def _document_middleware_errors(routes: list[Any]) -> None:
    """The middleware answers 401 (API key) and 413 (body size) before routing: say so in the OpenAPI of
    every route it guards, in that route's error shape, so clients and schema fuzzers see the real answers."""
    from service.routes.v2 import ERROR_SCHEMA
    from service.schemas import ErrorResponse

    for route in routes:
        if not isinstance(route, APIRoute) or route.path in PUBLIC_PATHS:
            continue
        v2 = is_v2(route.path)
        shape: dict[str, Any] = (
            {"content": {"application/json": {"schema": ERROR_SCHEMA}}} if v2 else {"model": ErrorResponse}
        )
        route.responses.setdefault(401, {"description": "Missing or wrong API key", **shape})
        if "POST" in (route.methods or set()):
            route.responses.setdefault(413, {"description": "Body too large", **shape})


def fast_routes(settings: Settings | None = None) -> list[FastRoute]:
    from service.routes import v2

    routes = [*native.FAST_ROUTES, *v2.FAST_ROUTES]
    if settings is not None and settings.sessions:
        from service.routes import sessions as session_routes

        routes += session_routes.FAST_ROUTES
    return routes


def create_served_app() -> FastAPI:
    """The app a server process runs (`python -m service`, each worker of `--workers N`): with gRPC."""
    return create_app(serve_grpc=True)


def create_app(settings: Settings | None = None, *, serve_grpc: bool = False) -> FastAPI:
    """The HTTP app; with `serve_grpc` its lifespan also runs the gRPC server (when FWS_GRPC_ENABLED)."""
    settings = settings or Settings()
    quiet_onnxruntime_log(settings.log_level)
    metrics_ = Metrics()
    app = ServiceApp(
        title="fastweights-serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.settings = settings
    app.state.metrics = metrics_
    app.state.registry = ModelRegistry(settings, metrics_)
    app.state.ready = False
    app.state.draining = False
    app.state.serve_grpc = serve_grpc
    install_error_handlers(app)
    routers = [health.router, metrics.router, native.router, playground.router]
    if settings.sessions:  # memory sessions (service/sessions/): /v1/sessions and V2 sequences
        from service.routes import sessions as session_routes
        from service.sessions import build_sessions

        app.state.sessions = build_sessions(settings, app.state.registry, metrics_)
        app.state.registry.sessions = app.state.sessions
        routers.append(session_routes.router)
    if importlib.util.find_spec("service.routes.v2") is not None:
        routers.append(importlib.import_module("service.routes.v2").router)
    for router in routers:
        app.include_router(router)
    # The middleware labels requests it rejects before routing (401, 413) by these routes' templates.
    routes = [route for router in routers for route in router.routes]
    _document_middleware_errors(routes)
    fastapi_stack: ASGIApp = partial(FastAPI.__call__, app)
    policy = RequestPolicy(settings, metrics_)
    if settings.fast_path:  # the fast routes straight from ASGI (service/fastpath.py)
        by_template = {r.path: r for r in routes if isinstance(r, APIRoute)}
        fast = FastPath(fastapi_stack, fast_routes(settings), app.state, lambda: by_template)
        fastapi_stack = fast
        # ... and, under `python -m service`, straight from the HTTP protocol (service/transport.py)
        app.fast_path_serving = FastPathServing(fast, policy)
    app.front = ServiceMiddleware(fastapi_stack, policy, lambda: routes)
    return app


def _stored(name: str) -> property:
    """`State`'s own lookup of `name` (its dict; AttributeError when not set), found on the class."""

    def get(self: State) -> Any:
        try:
            return self._state[name]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'") from None

    return property(get)


class ServiceState(State):
    """`app.state`, with what the request paths read found on the class.

    Starlette's `State` keeps its attributes in a dict reached through `__getattr__`, which Python calls only
    after the normal lookup failed: on CPython 3.11 that failure builds and discards an AttributeError, about
    2 000 instructions on every read (counted with valgrind, docs/benchmarks.md). Setting, deleting and the
    rest of `State` are unchanged."""

    settings = _stored("settings")
    registry = _stored("registry")
    metrics = _stored("metrics")
    ready = _stored("ready")
    draining = _stored("draining")
    sessions = _stored("sessions")


class ServiceApp(FastAPI):
    """FastAPI with `front` in front of its whole stack: our middleware, then the fast path, then FastAPI.

    In front rather than `add_middleware`: FastAPI's own outer layers (error page, telemetry probe, body
    limit, exception middleware) cost CPU on every request, and the fast routes need none of them (measured,
    docs/benchmarks.md). `ServiceMiddleware` still sees every request, so ids, auth, limits, metrics and logs
    apply to all routes alike.
    """

    front: ASGIApp | None = None
    fast_path_serving: FastPathServing | None = (
        None  # what the HTTP protocol may serve itself (service/transport.py)
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = ServiceState()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)
