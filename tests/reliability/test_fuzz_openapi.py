"""Property-based fuzzing of every operation of the HTTP API from its own OpenAPI schema (schemathesis).

The schema is the app's own (`create_app().openapi()`, the same document the server serves at
/openapi.json, asserted below); the requests go to a real server on 127.0.0.1 that runs WITH an API key,
so schemathesis' auth checks (requests without or with a wrong key must get 401) apply to every operation.
Every response must be non-5xx, documented (status code, content type, headers), match its documented
schema, and carry no stack trace or file path. Both valid (positive) and schema-violating (negative)
requests are generated. Excluded checks: `positive_data_acceptance` (a schema-valid string is not
necessarily a valid sequence or model name: those 4xx are the documented semantic errors), and, for
`POST /v1/retrieve/batch` only, `negative_data_rejection`: by contract a bad ITEM gets its own error entry
in a 200 (checked instead: every result then carries a value or an error).
`FWS_FUZZ_EXAMPLES` sets the examples per operation and mode (default 25; 300 with FWS_RELIABILITY_LONG=1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from service.main import create_app
from tests.integration.server import Server, start_server
from tests.reliability.conftest import LONG
from tests.reliability.leaks import assert_no_leak

EXAMPLES = int(os.environ.get("FWS_FUZZ_EXAMPLES", "300" if LONG else "25"))
API_KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OPENAPI = create_app().openapi()
SCHEMA = schemathesis.openapi.from_dict(OPENAPI)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# (operation, mode) pairs; negative mode only where there is an input to violate.
CASES = [
    (op, mode)
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or list(op.iter_parameters()) or len(op.body)
]
# Filled by the fuzz tests, reported by the last one (docs/reliability.md quotes it).
TRIED: dict[str, dict[int, int]] = {}


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with start_server({"FWS_API_KEY": API_KEY}, repository=model_repository) as srv:
        yield srv


def test_the_fuzzed_schema_is_the_one_the_server_serves(server: Server) -> None:
    served = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert served == OPENAPI
    assert len(OPERATIONS) >= 20


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{op.label} {m.value}" for op, m in CASES])
def test_every_operation_answers_documented_non_5xx_responses_without_leaks(
    operation, mode: GenerationMode, server: Server
) -> None:
    counts = TRIED.setdefault(f"{operation.label} [{mode.value}]", {})

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case) -> None:
        # Always the right key (it overrides a generated one), so the fuzzing reaches the routes; the
        # `ignored_auth` check re-sends each case without and with a wrong key and expects 401.
        response = case.call(base_url=server.url, headers=AUTH, timeout=30)
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
        if response.status_code == 400 and response.text == "Invalid HTTP request received.":
            return  # a malformed header (e.g. `content-length: False`) refused by uvicorn, before the app
        excluded = [positive_data_acceptance]
        if operation.label == "POST /v1/retrieve/batch":
            excluded.append(negative_data_rejection)
            if response.status_code == 200:
                results = response.json()["results"]
                assert all(("value" in r) != ("error" in r) for r in results), response.text
        case.validate_response(response, excluded_checks=excluded, headers=AUTH)
        assert_no_leak(response.text)

    run()
    assert sum(counts.values()) >= 1
    assert server.alive()


def test_zz_the_server_is_healthy_after_fuzzing_and_reports_what_was_tried(server: Server) -> None:
    assert httpx.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    statuses: dict[int, int] = {}
    for c in TRIED.values():
        for k, v in c.items():
            statuses[k] = statuses.get(k, 0) + v
    total = sum(statuses.values())
    print(f"\nfuzz: {len(TRIED)} operation/mode pairs, {total} requests, statuses {sorted(statuses.items())}")
    assert len(TRIED) == len(CASES) and total >= len(CASES)
    assert not any(k >= 500 for k in statuses)
