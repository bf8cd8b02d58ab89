"""One pure-ASGI middleware for what every request needs, in this order:

1. request id: `X-Request-ID` accepted (when sane) or generated, echoed on the response, in every log line;
2. API key (when `FWS_API_KEY` is set): `Authorization: Bearer <key>`, compared in constant time, required on
   everything except health, the docs and the playground page;
3. body size limit: a declared `Content-Length` over the limit is answered 413 before a byte is read; a
   chunked body is counted while it streams and cut off at the limit;
4. metrics (count and latency per route TEMPLATE and status) and one JSON access-log line;
5. last-resort 500: an unexpected exception becomes a JSON 500, never a stack trace.

Pure ASGI (not BaseHTTPMiddleware): no extra task per request, and `receive` stays the real one so routes
can notice a client that went away.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.errors import error_body
from service.logs import request_id_var
from service.metrics import Metrics

log = logging.getLogger("service.access")

PUBLIC_PATHS = frozenset(
    {"/v2/health/live", "/v2/health/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
    # the playground page (service/routes/playground.py); its API calls carry the key the user types
    | {"/", "/playground/playground.css", "/playground/playground.js"}
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
CLIENT_GONE_STATUS = 499  # nginx's convention for "client closed the request"
HEADERS_KEY = "fws.headers"  # scope key: the request's headers as a dict, lower-case names


class ClientGoneError(Exception):
    """Raised by a route whose client left before it could be answered: nothing is sent, 499 is recorded."""


class BodyTooLargeError(HTTPException):
    """Raised from `receive` once a streamed body passes the limit. An HTTPException, so FastAPI's body
    reader lets it through (it wraps other exceptions in a 400) and the error handlers answer 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


class RequestPolicy:
    """What every request gets, whoever serves it (this middleware, or the HTTP protocol serving the fast-path
    routes itself, `service/transport.py`): its id, API key and body-size checks, metrics and access log."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        # Compare digests: constant time, and the key's length does not leak either.
        self._expected = hashlib.sha256(key.encode()).digest() if key else None
        # FWS_METRICS_PUBLIC: a Prometheus scraper that holds no key may read /metrics (docs/deployment.md).
        self._public = PUBLIC_PATHS | {"/metrics"} if settings.metrics_public else PUBLIC_PATHS
        # (method, template, status) -> metric children: labels() per request costs a lock and a hash.
        # Bounded: templates are the app's routes (or "unmatched") and statuses a few dozen codes.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Generated request ids: unique per process start (random prefix) and cheap (a counter, no uuid4).
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)

    def request_id(self, headers: dict[str, str]) -> str:
        """The client's `X-Request-ID` when it is sane, else a new one."""
        rid = headers.get("x-request-id", "")
        return rid if _REQUEST_ID.match(rid) else f"{self._id_prefix}{next(self._id_counter):016x}"

    def refusal(self, path: str, headers: dict[str, str]) -> Refusal | None:
        """Why this request is answered before its body is read (401, 413), or None."""
        if self._expected is not None and path not in self._public and not self._authorized(headers):
            return Refusal(
                401,
                "unauthorized",
                "missing or wrong API key (Authorization: Bearer <key>)",
                ((b"www-authenticate", b"Bearer"),),
            )
        if _declared_length(headers) > self.settings.max_body_bytes:
            return self.too_large()
        return None

    def too_large(self) -> Refusal:
        limit = self.settings.max_body_bytes
        return Refusal(413, "body_too_large", f"request body larger than the limit of {limit} bytes")

    def record(self, method: str, template: str, path: str, status: int, elapsed: float) -> None:
        """Count and time one answered request; one access-log line (health checks excepted)."""
        key = (method, template, status)
        children = self._children.get(key)
        if children is None:
            label = str(status)
            children = self._children[key] = (
                self.metrics.http_requests.labels(method, template, label),
                self.metrics.http_latency.labels(method, template, label),
            )
        children[0].inc()
        children[1].observe(elapsed)
        if log.isEnabledFor(logging.INFO) and not template.startswith("/v2/health"):
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": path,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

    def _authorized(self, headers: dict[str, str]) -> bool:
        """`Authorization: Bearer <key>`; the scheme's case does not matter (RFC 9110, 11.1), one space."""
        assert self._expected is not None
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(credentials.encode("latin-1")).digest()
        return hmac.compare_digest(given, self._expected) and scheme.lower() == "bearer"


class Refusal(NamedTuple):
    status: int
    code: str
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def body(self, path: str) -> bytes:
        return orjson.dumps(error_body(path, self.code, self.message))


class ServiceMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        policy: RequestPolicy,
        routes: Callable[[], Sequence[BaseRoute]] | None = None,
    ):
        self.app = app
        self.policy = policy
        self._routes = routes  # to label requests rejected before routing (401, 413) by their template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        policy = self.policy
        headers = decode_headers(scope.get("headers", ()))
        scope[HEADERS_KEY] = headers  # decoded once: the fast path reads them from here
        rid = policy.request_id(headers)
        token = request_id_var.set(rid)
        path: str = scope["path"]
        state: dict[str, Any] = {"status": 500, "started": False, "bytes": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        async def reject(refusal: Refusal) -> None:
            body = refusal.body(path)
            hdrs = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *refusal.headers,
            ]
            await send_wrapper({"type": "http.response.start", "status": refusal.status, "headers": hdrs})
            await send_wrapper({"type": "http.response.body", "body": body})

        limit = policy.settings.max_body_bytes

        async def receive_limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > limit:
                    raise BodyTooLargeError(limit)
            return message

        try:
            refusal = policy.refusal(path, headers)
            if refusal is not None:
                await reject(refusal)
            else:
                await self.app(scope, receive_limited, send_wrapper)
        except BodyTooLargeError:
            if not state["started"]:
                await reject(policy.too_large())
        except ClientGoneError:
            state["status"] = CLIENT_GONE_STATUS
        except Exception:
            log.exception("unhandled error", extra={"path": path})
            if not state["started"]:
                await reject(INTERNAL)
        finally:
            elapsed = time.perf_counter() - start
            policy.record(scope.get("method", ""), self._template(scope), path, state["status"], elapsed)
            request_id_var.reset(token)

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None and self._routes is not None:
            route = next((r for r in self._routes() if r.matches(scope)[0] is Match.FULL), None)
        return getattr(route, "path", None) or "unmatched"


INTERNAL = Refusal(500, "internal", "internal server error")


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Raw (name, value) header pairs as a dict with lower-case names (the last of a repeated header wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


def _declared_length(headers: dict[str, str]) -> int:
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 0
