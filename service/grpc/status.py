"""Errors -> gRPC status codes, the way Triton maps them, from the one error table of the service.

Every exception first goes through `service.errors.domain_error`, the table the REST side answers from, so the
message is the same word for word; its HTTP status then picks the gRPC code: 400 INVALID_ARGUMENT,
401 UNAUTHENTICATED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED.
UNAVAILABLE carries when to retry: a `google.rpc.RetryInfo` in the rich status (`grpc-status-details-bin`,
what gRPC's own retry policies and `grpc_status.rpc_status.from_call` read) and a plain `retry-after`
trailer (seconds, as the HTTP header).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import grpc
import orjson
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.errors import domain_error
from service.v2_codec import V2Error

log = logging.getLogger("service.grpc")

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Trailers = tuple[tuple[str, str | bytes], ...]


class Failure(NamedTuple):
    code: grpc.StatusCode
    message: str
    trailing_metadata: Trailers = ()


def failure(exc: BaseException, retry_after_s: int) -> Failure:
    """The status a call that raised `exc` ends with (unexpected exceptions: INTERNAL, logged)."""
    if isinstance(exc, V2Error):
        return Failure(_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
    answer = domain_error(exc, "/v2", retry_after_s)
    if answer is None:
        log.error("unhandled error", exc_info=exc)
        return Failure(grpc.StatusCode.INTERNAL, "internal server error")
    message = orjson.loads(answer.body)["error"]
    code = _CODES.get(answer.status_code, grpc.StatusCode.INTERNAL)
    if code is grpc.StatusCode.UNAVAILABLE:
        return unavailable(message, retry_after_s)
    return Failure(code, message)


def unavailable(message: str, retry_after_s: int) -> Failure:
    """UNAVAILABLE with when to retry, in the rich status and as a plain trailer."""
    detail = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_s))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(detail)
    rich = rpc_status.to_status(status)
    return Failure(rich.code, message, (*rich.trailing_metadata, ("retry-after", str(retry_after_s))))
