"""Every error leaves as JSON, never a stack trace.

Two shapes, chosen by path:
- native API and everything else: ``{"error": {"code": "...", "message": "...", "field": "..."}}``
- Open Inference Protocol (`/v2...`): ``{"error": "message"}`` (the stock tritonclient requires it)

Domain exceptions map to statuses here once, so routes just raise:
`SequenceError` 422, `ModelNotFoundError` 404, `ModelNotReadyError` 503, `QueueFullError` 503 + Retry-After,
`BatcherClosedError` 503 + Retry-After, `DeadlineExceededError` 504, anything unexpected 500 (logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response

from contract.vocab import SequenceError
from service.batcher import BatcherClosedError, DeadlineExceededError, QueueFullError
from service.echo import MESSAGE_CHARS, clip, quoted
from service.predictor import ModelLoadError
from service.registry import ModelNotFoundError, ModelNotReadyError

log = logging.getLogger("service.errors")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal",
    503: "unavailable",
    504: "deadline_exceeded",
}
_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"
EMPTY_BODY = "request body is empty (send a JSON object)"
NOT_JSON_OBJECT = "request body must be a JSON object (send Content-Type: application/json)"


class JSONResponse(StarletteJSONResponse):
    """orjson-encoded JSON (fast for big batch answers; numpy floats must be converted before).

    A JSONResponse subclass, not a bare Response: FastAPI documents a route's response model only for
    JSONResponse classes (a bare Response made every success body `{"type": "string"}` in the OpenAPI).
    """

    def render(self, content: Any) -> bytes:
        return render_json(content)


def render_json(content: Any) -> bytes:
    try:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        # A string echoed from the request (a batch item's id) may hold a lone surrogate: JSON allows
        # "\ud800" escapes, UTF-8 cannot encode them. Escape it as the stdlib does instead of a 500.
        return json.dumps(content, ensure_ascii=True, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


class ApiError(Exception):
    """An HTTP error with our code; raise it from routes and middleware-free helpers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_body(path: str, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    message = clip(message, MESSAGE_CHARS)  # messages quote input clipped already (service.echo); a backstop
    if field is not None:
        field = clip(field)  # a field path can hold a client's JSON key (an unknown field's name)
    if is_v2(path):
        return {"error": message}
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(
    path: str,
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(path, code, message, field), status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """The first pydantic error as (message, field), phrased for people."""
    if not errors:
        return "invalid request", None
    err = errors[0]
    field = _field_of(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown field {quoted(field)}", field
    if kind == "missing":
        return (f"missing field {quoted(field)}", field) if field else (EMPTY_BODY, None)
    if kind == "json_invalid":
        return "request body is not valid JSON", None
    if field is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return NOT_JSON_OBJECT, None
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return (f"{field}: {msg}" if field else msg), field


def _validation_answer(exc: ValidationError, path: str, retry: dict[str, str]) -> JSONResponse:
    message, field = validation_message(list(exc.errors()))
    return error_response(path, 400 if is_v2(path) else 422, "invalid_request", message, field)


def _queue_full_answer(exc: QueueFullError, path: str, retry: dict[str, str]) -> JSONResponse:
    msg = f"overloaded: {exc}; retry later. Exceeds maximum queue size"
    return error_response(path, 503, "overloaded", msg, None, retry)


# Each exception the routes raise on purpose -> its answer (path, Retry-After headers). Checked in this order.
_DOMAIN_ANSWERS: dict[type[Exception], Callable[[Any, str, dict[str, str]], JSONResponse]] = {
    ApiError: lambda e, path, retry: error_response(path, e.status, e.code, e.message, e.field, e.headers),
    ValidationError: _validation_answer,  # a body validated by the fast path (FastAPI's own: below)
    SequenceError: lambda e, path, retry: error_response(path, 422, e.code, e.message, e.field),
    ModelNotFoundError: lambda e, path, retry: error_response(path, 404, "model_not_found", str(e), "model"),
    ModelNotReadyError: lambda e, path, retry: error_response(path, 503, "not_ready", str(e), "model", retry),
    ModelLoadError: lambda e, path, retry: error_response(
        path, 400 if is_v2(path) else 500, "load_failed", str(e)
    ),
    QueueFullError: _queue_full_answer,
    BatcherClosedError: lambda e, path, retry: error_response(
        path, 503, "shutting_down", str(e), None, retry
    ),
    DeadlineExceededError: lambda e, path, retry: error_response(path, 504, "deadline_exceeded", str(e)),
}
DOMAIN_ERRORS: tuple[type[Exception], ...] = tuple(_DOMAIN_ANSWERS)


def domain_error(exc: BaseException, path: str, retry_after_s: int = 1) -> JSONResponse | None:
    """The JSON error answer for an exception the routes raise on purpose; None for anything else.

    One mapping for both ways a request is served: FastAPI's exception handlers and the ASGI fast path
    (`service.fastpath`), so a status or message cannot differ between them.
    """
    for kind, answer in _DOMAIN_ANSWERS.items():
        if isinstance(exc, kind):
            return answer(exc, path, {"Retry-After": str(retry_after_s)})
    return None


def _retry_after_s(request: Request) -> int:
    settings = getattr(request.app.state, "settings", None)
    return settings.retry_after_s if settings is not None else 1


def install_error_handlers(app: FastAPI) -> None:
    async def _domain(request: Request, exc: Exception) -> Response:
        response = domain_error(exc, request.url.path, _retry_after_s(request))
        assert response is not None, f"{type(exc).__name__} is registered as a domain error"
        return response

    for kind in DOMAIN_ERRORS:
        app.add_exception_handler(kind, _domain)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, field = validation_message(list(exc.errors()))
        path = request.url.path
        return error_response(path, 400 if is_v2(path) else 422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_PARSE_ERROR and not is_v2(request.url.path):
            # FastAPI's body reader answers 400 for JSON it cannot even decode (bytes that are not UTF-8,
            # nesting deeper than the recursion limit); the native contract says 422 invalid_request.
            return error_response(request.url.path, 422, "invalid_request", "request body is not valid JSON")
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {clip(request.method)} {clip(request.url.path)}"
        headers = dict(exc.headers) if exc.headers else None
        return error_response(request.url.path, exc.status_code, code, message, None, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return error_response(request.url.path, 500, "internal", "internal server error")
