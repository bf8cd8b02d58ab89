"""The inference routes served straight from ASGI, without FastAPI's per-request machinery.

Why: on this stack FastAPI spends more CPU on one small request (routing, dependency solving, body
validation through its generic layer, response wrapping) than the batched onnxruntime run costs per row;
measured in-process, see docs/benchmarks.md. The fast routes are therefore served here: the body is read
once, validated by the same pydantic models (`validate_json` on the raw bytes), handed to the same
handler functions the FastAPI routes call, and the answer goes out as orjson bytes. Everything else
(docs, health, metrics, repository, metadata) goes to FastAPI unchanged; the fast routes stay declared in
FastAPI too, so the OpenAPI document describes them and `FWS_FAST_PATH=false` serves them there (a test
checks both give the same answers and errors).

It sits inside `ServiceMiddleware`, so request ids, the API key, body limits, metrics and the access log
apply exactly as to every other route. Errors map through `service.errors.domain_error`, the mapping the
FastAPI handlers use.

A request whose client disconnects while it waits is cancelled: its queued rows are never computed and it
is counted with status 499. The watcher task that listens for the disconnect starts only when a request is
still unanswered `WATCH_AFTER_S` after its body was read: most requests are answered well within that, and
starting, scheduling and cancelling a task for each cost ~5.5 µs of CPU (measured, docs/reliability.md). So a
client that gives up is noticed at the earliest `WATCH_AFTER_S` after it sent its request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import DOMAIN_ERRORS, ApiError, domain_error, render_json
from service.middleware import (
    CLIENT_GONE_STATUS,
    HEADERS_KEY,
    ClientGoneError,
    RequestPolicy,
    decode_headers,
)

# A request still unanswered this long after its body arrived gets a task that watches for its client leaving.
WATCH_AFTER_S = 0.05


class RawRequest(NamedTuple):
    """What a fast route's handler sees: the path, its parameters, lower-cased headers and the whole body."""

    path: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


class RawResponse(NamedTuple):
    body: bytes
    status: int = 200
    media_type: str = "application/json"
    headers: Mapping[str, str] = {}  # extra headers; never mutated (a NamedTuple default is shared)


_JSON_TYPE = (b"content-type", b"application/json")


Handler = Callable[[RawRequest, Any], Awaitable[RawResponse]]  # (request, app state) -> response


@dataclass(frozen=True)
class FastRoute:
    method: str
    pattern: re.Pattern[str]  # named groups are the path parameters
    handler: Handler
    template: str  # the FastAPI route's path, for metrics and logs


def fast_route(method: str, template: str, handler: Handler) -> FastRoute:
    """`template` in FastAPI's syntax, e.g. "/v2/models/{name}/infer" ({x} matches one path segment)."""
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return FastRoute(method, re.compile(f"^{regex}$"), handler, template)


class FastPath:
    """ASGI middleware: serves `routes` itself, passes everything else to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        routes: list[FastRoute],
        state: Any,
        fastapi_routes: Callable[[], Mapping[str, Any]] | None = None,
    ):
        self.app = app
        self.state = state  # the FastAPI app.state: settings, registry, ...
        self._exact = {(r.method, r.template): r for r in routes if "{" not in r.template}
        self._patterns = [r for r in routes if "{" in r.template]
        self._fastapi_routes = fastapi_routes  # template -> APIRoute, so metrics label by template

    def match(self, method: str, path: str) -> tuple[FastRoute, dict[str, str]] | None:
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        for route in self._patterns:
            if route.method == method:
                m = route.pattern.match(path)
                if m is not None:
                    return route, m.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.match(scope["method"], scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        route, params = found
        if self._fastapi_routes is not None:
            scope["route"] = self._fastapi_routes().get(route.template)
        path: str = scope["path"]
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGoneError  # gone before the body arrived: nothing to answer, 499 recorded
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        headers = scope.get(HEADERS_KEY)
        if headers is None:  # not behind ServiceMiddleware (which decodes them once for everyone)
            headers = decode_headers(scope.get("headers", ()))
        request = RawRequest(path, params, headers, body)

        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)  # given the loop: one lookup of the running loop, not two
        assert task is not None
        gone = False
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        def start_watching() -> None:
            nonlocal watcher
            watcher = loop.create_task(watch())

        timer = loop.call_later(WATCH_AFTER_S, start_watching)
        try:
            response = await self.respond(route, request)
        except asyncio.CancelledError:
            if not gone:
                raise  # a real cancellation (shutdown): not ours to swallow
            task.uncancel()
            response = client_gone(path)
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
        await send(
            {"type": "http.response.start", "status": response.status, "headers": header_list(response)}
        )
        await send({"type": "http.response.body", "body": response.body})

    async def respond(self, route: FastRoute, request: RawRequest) -> RawResponse:
        """The route's answer to `request`, domain errors (bad input, unknown model, overload) included."""
        try:
            return await route.handler(request, self.state)
        except DOMAIN_ERRORS as exc:
            return raw_error_response(request.path, exc, self.state.settings.retry_after_s)


class FastPathServing(NamedTuple):
    """What the HTTP protocol needs to serve the fast routes without ASGI (service/transport.py): the routes
    with their handlers, and the policy every request gets (id, API key, size limit, metrics, log)."""

    fastpath: FastPath
    policy: RequestPolicy


def client_gone(path: str) -> RawResponse:
    """What is recorded for a request whose client left before its answer (never sent: nobody is there)."""
    return raw_error_response(
        path, ApiError(CLIENT_GONE_STATUS, "client_gone", "client closed the request"), 1
    )


def header_list(response: RawResponse) -> list[tuple[bytes, bytes]]:
    """Content type and length, then the response's extra headers, as (lower-case name, value) bytes."""
    content_type = (
        _JSON_TYPE
        if response.media_type == "application/json"
        else (b"content-type", response.media_type.encode())
    )
    headers = [content_type, (b"content-length", b"%d" % len(response.body))]
    if response.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    return headers


def raw_error_response(path: str, exc: BaseException, retry_after_s: int) -> RawResponse:
    """The answer to a domain error (`service.errors.DOMAIN_ERRORS`), as the FastAPI handlers give it."""
    answer = domain_error(exc, path, retry_after_s)
    # callers pass DOMAIN_ERRORS only
    assert answer is not None, f"{type(exc).__name__} is not a domain error"
    return RawResponse(bytes(answer.body), answer.status_code, headers=_extra_headers(answer.headers))


def _extra_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}


def json_response(content: Any, status: int = 200) -> RawResponse:
    return RawResponse(render_json(content), status)
