"""The OpenAPI schema documents what the server really answers, so the fuzzer's conformance checks mean
something: success bodies have their real schema (not `string`), and every operation guarded by the
middleware documents its 401 (API key) and, for bodies, 413 (size limit), in the shape of its API."""

from __future__ import annotations

from typing import Any

import pytest

from service.main import create_app
from service.middleware import PUBLIC_PATHS

OPENAPI: dict[str, Any] = create_app().openapi()
OPS = [(path, method, op) for path, ops in OPENAPI["paths"].items() for method, op in ops.items()]


def _schema(op: dict[str, Any], status: str) -> dict[str, Any]:
    return op["responses"][status]["content"]["application/json"]["schema"]


def test_native_success_bodies_are_documented_by_their_response_models() -> None:
    assert _schema(OPENAPI["paths"]["/v1/retrieve"]["post"], "200") == {
        "$ref": "#/components/schemas/RetrieveResponse"
    }
    assert _schema(OPENAPI["paths"]["/v1/retrieve/batch"]["post"], "200") == {
        "$ref": "#/components/schemas/BatchResponse"
    }


@pytest.mark.parametrize(("path", "method", "op"), OPS, ids=[f"{m.upper()} {p}" for p, m, _ in OPS])
def test_no_json_body_is_documented_as_a_plain_string(path: str, method: str, op: dict[str, Any]) -> None:
    for status, response in op["responses"].items():
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        assert schema != {"type": "string"}, f"{method.upper()} {path} {status}"


@pytest.mark.parametrize(("path", "method", "op"), OPS, ids=[f"{m.upper()} {p}" for p, m, _ in OPS])
def test_middleware_errors_are_documented_in_the_shape_of_their_api(
    path: str, method: str, op: dict[str, Any]
) -> None:
    if path in PUBLIC_PATHS:
        return
    statuses = ["401"] + (["413"] if method == "post" else [])
    for status in statuses:
        schema = _schema(op, status)
        if path.startswith("/v2"):
            assert schema["properties"]["error"] == {"type": "string"}, (path, status)
        else:
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)


@pytest.mark.parametrize("path", ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"])
def test_v2_infer_documents_its_deadline_and_errors_with_a_schema(path: str) -> None:
    op = OPENAPI["paths"][path]["post"]
    for status in ("400", "404", "503", "504"):
        assert _schema(op, status)["required"] == ["error"], status
