"""The native JSON API against a real server (uvicorn subprocess, real onnxruntime): every endpoint, error."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model.data import generate
from tests.integration.server import Server, start_server

SEQ = "c9k8j3f1??c"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# 26 pairs, every key letter once: the most a query can hold (keys are distinct letters)
LONGEST = "".join(f"{k}{i % 10}" for i, k in enumerate(LETTERS))


def error_of(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    return body["error"]


# -- answers ---------------------------------------------------------------------------------------


def test_retrieve_answers_a_sequence_with_model_version_and_bucket(client: httpx.Client) -> None:
    r = client.post("/v1/retrieve", json={"sequence": SEQ})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"value", "confidence", "num_pairs", "model", "version", "bucket", "checkpoint"}
    assert body["value"] == "9"
    assert 0.5 < body["confidence"] <= 1.0
    assert (body["num_pairs"], body["model"], body["version"], body["bucket"], body["checkpoint"]) == (
        4,
        "fastweights",
        "1",
        "fastweights_t11",
        "k26.pt",  # the bucket graph's source checkpoint, from its metadata
    )


def test_retrieve_accepts_pairs_and_a_query(client: httpx.Client) -> None:
    r = client.post(
        "/v1/retrieve", json={"pairs": [["c", "9"], ["k", "8"]], "query": "k", "model": "fastweights"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["value"], r.json()["num_pairs"]) == ("8", 2)


@pytest.mark.parametrize(
    ("sequence", "bucket"),
    [("a1??a", "fastweights_t5"), ("a1b2c3d4??b", "fastweights_t11"), ("a1b2c3d4e5??e", "fastweights_t19")],
)
def test_each_query_goes_to_the_smallest_bucket_that_fits(
    client: httpx.Client, sequence: str, bucket: str
) -> None:
    assert client.post("/v1/retrieve", json={"sequence": sequence}).json()["bucket"] == bucket


def test_the_longest_query_26_pairs_goes_to_the_longest_bucket_and_is_explained(client: httpx.Client) -> None:
    body = client.post("/v1/retrieve", json={"sequence": LONGEST + "??q", "explain": True}).json()
    assert (body["value"], body["num_pairs"], body["bucket"]) == ("6", 26, "fastweights_t55")
    expl = body["explanation"]
    assert sorted((e["key"], e["value"], e["position"]) for e in expl) == [
        (k, str(i % 10), 2 * i) for i, k in enumerate(LETTERS)
    ]
    assert sum(e["weight"] for e in expl) == pytest.approx(1.0, abs=1e-4)
    assert expl[0]["key"] == "q"  # the fast memory's strongest weight is on the pair asked for


def test_every_request_example_of_the_openapi_schema_is_answered(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    examples = schemas["RetrieveRequest"]["examples"]
    assert any(e.get("sequence", "").count("??") == 1 and len(e["sequence"]) == 55 for e in examples)
    for example in examples:
        r = client.post("/v1/retrieve", json=example)
        assert r.status_code == 200, (example, r.text)
        assert set(schemas["RetrieveResponse"]["examples"][0]) <= set(r.json())
    for example in schemas["BatchRequest"]["examples"]:
        assert client.post("/v1/retrieve/batch", json=example).status_code == 200


def test_fresh_26_pair_queries_are_answered_through_the_api(client: httpx.Client) -> None:
    data = generate(1000, 26, 26, seed=26026)  # at most 2 in 20 000 per K measured: ~0.1 expected here
    items = [{"sequence": s} for s in data.sequences()]
    results = client.post("/v1/retrieve/batch", json={"items": items}).json()["results"]
    assert {r["num_pairs"] for r in results} == {26}
    wrong = sum(r["value"] != str(t) for r, t in zip(results, data.targets.tolist(), strict=True))
    assert wrong <= 1, wrong


def test_top_k_returns_the_most_likely_values_in_order(client: httpx.Client) -> None:
    body = client.post("/v1/retrieve", json={"sequence": SEQ, "top_k": 3}).json()
    top = body["top_k"]
    assert top[0]["value"] == body["value"] and len(top) == 3
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and top[0]["probability"] == body["confidence"]


def test_explain_ranks_every_stored_pair_by_memory_attention(client: httpx.Client) -> None:
    body = client.post("/v1/retrieve", json={"sequence": SEQ, "explain": True}).json()
    expl = body["explanation"]
    assert sorted((e["key"], e["value"], e["position"]) for e in expl) == [
        ("c", "9", 0),
        ("f", "1", 6),
        ("j", "3", 4),
        ("k", "8", 2),
    ]
    weights = [e["weight"] for e in expl]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1.0, abs=1e-4)
    assert "top_k" not in body


def test_batch_answers_in_request_order_and_gives_bad_items_their_own_errors(client: httpx.Client) -> None:
    items = [
        {"id": "a1", "sequence": SEQ},
        {"id": 2, "sequence": "a1a2??a"},
        {"pairs": [["x", "1"], ["y", "2"]], "query": "y"},
        {"id": "bad-field", "sequence": "a1??a", "colour": "red"},
        "not an object",
        {"id": "long", "sequence": "a1" * 200 + "??a"},
        {"sequence": "a1b2c3d4e5f6g7h8i9j0k1??k"},
        {"id": "26", "sequence": LONGEST + "??q"},
    ]
    r = client.post("/v1/retrieve/batch", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("fastweights", "1")
    res = body["results"]
    assert [x["index"] for x in res] == list(range(len(items)))
    assert (res[0]["id"], res[0]["value"], res[0]["num_pairs"]) == ("a1", "9", 4)
    assert res[1]["id"] == 2 and res[1]["error"] == {
        "code": "duplicate_key",
        "message": "key 'a' appears twice (pairs 0 and 1)",
        "field": "items[1].sequence",
    }
    assert "id" not in res[2] and res[2]["value"] == "2"
    assert res[3]["id"] == "bad-field" and res[3]["error"]["code"] == "invalid_request"
    assert res[3]["error"]["field"] == "items[3].colour"
    assert res[4]["error"]["code"] == "invalid_request" and res[4]["error"]["field"] == "items[4]"
    assert res[5]["error"]["code"] == "too_long" and res[5]["id"] == "long"
    assert res[6]["num_pairs"] == 11 and "value" in res[6]
    assert (res[7]["id"], res[7]["num_pairs"], res[7]["value"]) == ("26", 26, "6")


def test_batch_options_apply_to_every_item(client: httpx.Client) -> None:
    body = client.post(
        "/v1/retrieve/batch",
        json={"items": [{"sequence": SEQ}, {"sequence": "a1??a"}], "top_k": 2, "explain": True},
    ).json()
    for res in body["results"]:
        assert len(res["top_k"]) == 2 and res["explanation"]


def test_an_empty_batch_gets_an_empty_result_list(client: httpx.Client) -> None:
    assert client.post("/v1/retrieve/batch", json={"items": []}).json()["results"] == []


def test_the_bundled_model_answers_fresh_sequences_through_the_api(client: httpx.Client) -> None:
    data = generate(2000, 1, 8, seed=90210)
    sequences = data.sequences()
    correct = 0
    for lo in range(0, len(sequences), 1000):
        chunk = sequences[lo : lo + 1000]
        r = client.post("/v1/retrieve/batch", json={"items": [{"sequence": s} for s in chunk]})
        assert r.status_code == 200
        values = [res["value"] for res in r.json()["results"]]
        correct += sum(
            v == str(t) for v, t in zip(values, data.targets[lo : lo + 1000].tolist(), strict=True)
        )
    assert correct / len(sequences) >= 0.995, correct / len(sequences)


# -- validation errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code", "field", "message"),
    [
        ({"sequence": "c9k8X3??c"}, "unknown_character", "sequence", "unknown character 'X' at position 4"),
        ({"sequence": "c9k8??"}, "malformed", "sequence", "'??' must be followed by exactly one key letter"),
        ({"sequence": "c9k??c"}, "malformed", "sequence", "key/value pairs"),
        ({"sequence": "c9c8??c"}, "duplicate_key", "sequence", "key 'c' appears twice (pairs 0 and 1)"),
        ({"sequence": "c9k8??z"}, "query_not_found", "query", "query key 'z' is not among the keys"),
        ({"sequence": ""}, "empty", "sequence", "sequence is empty"),
        ({"pairs": [], "query": "a"}, "empty", "pairs", "at least one key/value pair"),
        ({"pairs": [["a", "1", "2"]], "query": "a"}, "malformed", "pairs[0]", "pair 0 must be [key, value]"),
        ({"pairs": [["a", "1"]], "query": "b"}, "query_not_found", "query", "'b' is not among the keys"),
        (  # a 27th pair can only repeat a key
            {"sequence": LONGEST + "a1??a"},
            "duplicate_key",
            "sequence",
            "key 'a' appears twice (pairs 0 and 26)",
        ),
        (
            {"pairs": [[k, "1"] for k in LETTERS + "z"], "query": "a"},
            "duplicate_key",
            "pairs",
            "key 'z' appears twice (pairs 25 and 26)",
        ),
        ({"sequence": "a1" * 200 + "??a"}, "too_long", "sequence", "the limit is 256"),
        ({"sequence": SEQ, "colour": "red"}, "invalid_request", "colour", "unknown field 'colour'"),
        ({"sequence": 42}, "invalid_request", "sequence", "sequence"),
        ({}, "invalid_request", None, "give either 'sequence' or 'pairs'"),
        ({"sequence": SEQ, "pairs": [["c", "9"]], "query": "c"}, "invalid_request", None, "not both"),
        ({"pairs": [["c", "9"]]}, "invalid_request", None, "'pairs' and 'query' go together"),
        ({"sequence": SEQ, "top_k": 0}, "invalid_request", "top_k", "top_k"),
        ({"sequence": SEQ, "top_k": 11}, "invalid_request", "top_k", "top_k"),
        ({"sequence": SEQ, "explain": "yes"}, "invalid_request", "explain", "explain"),
    ],
)
def test_invalid_queries_get_422_with_code_field_and_an_exact_message(
    client: httpx.Client, payload: dict[str, object], code: str, field: str | None, message: str
) -> None:
    err = error_of(client.post("/v1/retrieve", json=payload), 422)
    assert (err["code"], err["field"]) == (code, field)
    assert message in str(err["message"])


def test_a_body_that_is_not_json_is_an_invalid_request(client: httpx.Client) -> None:
    r = client.post("/v1/retrieve", content=b"{not json", headers={"content-type": "application/json"})
    assert error_of(r, 422)["message"] == "request body is not valid JSON"
    r = client.post("/v1/retrieve", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert error_of(r, 422)["code"] == "invalid_request"


def test_an_unknown_model_is_404(client: httpx.Client) -> None:
    err = error_of(client.post("/v1/retrieve", json={"sequence": SEQ, "model": "lstm"}), 404)
    assert err["code"] == "model_not_found" and "unknown model 'lstm'" in str(err["message"])
    err = error_of(client.post("/v1/retrieve/batch", json={"items": [], "model": "lstm"}), 404)
    assert err["code"] == "model_not_found"


def test_a_batch_envelope_error_rejects_the_whole_request(client: httpx.Client) -> None:
    err = error_of(client.post("/v1/retrieve/batch", json={"items": [], "extra": 1}), 422)
    assert err["code"] == "invalid_request" and err["field"] == "extra"
    err = error_of(client.post("/v1/retrieve/batch", json={"items": "abc"}), 422)
    assert err["field"] == "items"


# -- the rest of the surface -----------------------------------------------------------------------


def test_health_endpoints_answer_json(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_a_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    r = client.post("/v1/retrieve", json={"sequence": SEQ}, headers={"X-Request-ID": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    generated = client.get("/v2/health/live").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    insane = client.get("/v2/health/live", headers={"X-Request-ID": "a b\tc" * 50}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", insane)


def test_the_request_id_and_route_appear_in_the_json_access_log(server: Server, client: httpx.Client) -> None:
    client.post("/v1/retrieve", json={"sequence": SEQ}, headers={"X-Request-ID": "log-me-7"})
    # The access log line is written after the response is sent and reaches us through a pipe: poll briefly.
    deadline = time.monotonic() + 5
    while not (lines := [line for line in server.logs().splitlines() if "log-me-7" in line]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines, server.logs()[-2000:]
    import json

    entry = json.loads(lines[-1])
    assert entry["request_id"] == "log-me-7" and entry["route"] == "/v1/retrieve" and entry["status"] == 200


def test_metrics_are_labelled_by_route_template_and_status(client: httpx.Client) -> None:
    client.post("/v1/retrieve", json={"sequence": SEQ})
    client.get("/no/such/path/zq12345")  # letters: a float in the metrics may hold the digits 12345
    text = client.get("/metrics").text
    assert 'fws_http_requests_total{method="POST",route="/v1/retrieve",status="200"}' in text
    assert (
        'fws_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/v1/retrieve",status="200"}'
        in text
    )
    assert 'route="unmatched",status="404"' in text and "zq12345" not in text
    for name in (
        "fws_batch_size_rows_bucket",
        "fws_queue_depth_rows",
        "fws_inference_duration_seconds_count",
        'fws_model_ready{model="fastweights_t11"} 1.0',
        'fws_model_info{model="fastweights_t11",provider="CPUExecutionProvider",version="1"} 1.0',
    ):
        assert name in text


def test_unknown_routes_and_methods_are_json(client: httpx.Client) -> None:
    err = error_of(client.get("/v1/nothing"), 404)
    assert err["code"] == "not_found"
    err = error_of(client.get("/v1/retrieve"), 405)
    assert err["code"] == "method_not_allowed"
    r = client.get("/v2/not-a-route")  # the V2 error shape on /v2 paths
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_openapi_docs_are_served_with_examples(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/retrieve", "/v1/retrieve/batch", "/v2/health/live", "/v2/health/ready", "/metrics"} <= set(
        spec["paths"]
    )
    schemas = spec["components"]["schemas"]
    assert schemas["RetrieveRequest"]["examples"][0] == {"sequence": SEQ}
    assert schemas["BatchRequest"]["properties"]["items"]["items"]["properties"]["sequence"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_every_openapi_example_request_works_as_documented(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    tried = 0
    for path in ("/v1/retrieve", "/v1/retrieve/batch"):
        examples = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
        for name, example in examples.items():
            r = client.post(path, json=example["value"])
            expected = 422 if name == "error" else 200
            assert r.status_code == expected, (path, name, r.text)
            tried += 1
    assert tried >= 5


# -- limits and auth (own server) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(model_repository: Path) -> Iterator[Server]:
    env = {"FWS_API_KEY": "s3cret", "FWS_MAX_BODY_BYTES": "2000", "FWS_MAX_BATCH_ITEMS": "5"}
    with start_server(env, repository=model_repository) as srv:
        yield srv


AUTH = {"Authorization": "Bearer s3cret"}


def test_the_api_key_is_required_except_on_health_and_docs(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.url) as c:
        r = c.post("/v1/retrieve", json={"sequence": SEQ})
        assert error_of(r, 401)["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        bad = c.post("/v1/retrieve", json={"sequence": SEQ}, headers={"Authorization": "Bearer s3creT"})
        assert bad.status_code == 401
        assert (
            c.post("/v1/retrieve", json={"sequence": SEQ}, headers={"Authorization": "s3cret"}).status_code
            == 401
        )
        assert c.post("/v1/retrieve", json={"sequence": SEQ}, headers=AUTH).json()["value"] == "9"
        assert c.get("/metrics").status_code == 401
        text = c.get("/metrics", headers=AUTH).text
        assert 'fws_http_requests_total{method="POST",route="/v1/retrieve",status="401"} 3.0' in text
        assert c.get("/v2/health/live").status_code == 200 and c.get("/v2/health/ready").status_code == 200
        assert c.get("/docs").status_code == 200 and c.get("/openapi.json").status_code == 200
        r = c.get("/v2/models/fastweights_t11")  # V2 routes too, with the V2 error shape
        assert r.status_code == 401 and isinstance(r.json()["error"], str)


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.url, headers=AUTH) as c:
        big = {"items": [{"sequence": SEQ}] * 200}
        err = error_of(c.post("/v1/retrieve/batch", json=big), 413)
        assert err["code"] == "body_too_large" and "2000 bytes" in str(err["message"])


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(guarded: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"items": ['
        for _ in range(300):
            yield b'{"sequence": "c9k8j3f1??c"},'
        yield b'{"sequence": "a1??a"}]}'

    with httpx.Client(base_url=guarded.url, headers=AUTH) as c:
        r = c.post("/v1/retrieve/batch", content=chunks(), headers={"content-type": "application/json"})
        assert error_of(r, 413)["code"] == "body_too_large"


def test_more_batch_items_than_allowed_is_422_too_many_items(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.url, headers=AUTH) as c:
        err = error_of(c.post("/v1/retrieve/batch", json={"items": [{"sequence": "a1??a"}] * 6}), 422)
        assert err == {
            "code": "too_many_items",
            "message": "6 items; the limit is 5 per request",
            "field": "items",
        }
        assert (
            len(c.post("/v1/retrieve/batch", json={"items": [{"sequence": "a1??a"}] * 5}).json()["results"])
            == 5
        )
