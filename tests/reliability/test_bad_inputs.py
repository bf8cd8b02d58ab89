"""A corpus of hand-made bad inputs against the native and V2 endpoints of a real server.

Each gets its documented 4xx JSON error (native: 422/413/404 `{"error": {"code", "message", "field"}}` with
the expected code; V2: 400/404/413 `{"error": "message"}`), an `X-Request-ID`, and no stack trace or file
path; the server stays live and ready afterwards and still answers a good request correctly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from model.data import PAD_ID, VOCAB
from tests.integration.server import Server, start_server
from tests.reliability.leaks import find_leak

MAX_BODY = 1024 * 1024
JSON = {"Content-Type": "application/json"}
V2 = "/v2/models/fastweights_t11/infer"
GOOD_ROW = [int(t) for t in VOCAB.encode("c9k8j3f1??c")]


@dataclass
class Bad:
    name: str
    path: str
    body: bytes
    status: int
    code: str | None = None  # native error code expected
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def v2(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return j({"inputs": inputs, **extra})


def tokens(
    data: object, shape: list[int] | None = None, datatype: str = "INT64", name: str = "tokens"
) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [1, 11], "data": data}


R, B = "/v1/retrieve", "/v1/retrieve/batch"
INVALID = "invalid_request"
CORPUS: list[Bad] = [
    # --- native: transport-level garbage
    Bad("not json", R, b"sequence=c9k8j3f1??c", 422, INVALID),
    Bad("truncated json", R, b'{"sequence": "c9k8', 422, INVALID),
    Bad("invalid utf-8", R, b'{"sequence": "\xff\xfe\x80"}', 422, INVALID),
    Bad(
        "wrong content type", R, j({"sequence": "c9k8j3f1??c"}), 422, INVALID, {"Content-Type": "text/plain"}
    ),
    Bad("no content type", R, j({"sequence": "c9k8j3f1??c"}), 422, INVALID, {}),
    Bad("empty body", R, b"", 422, INVALID),
    Bad("whitespace body", R, b"   \n", 422, INVALID),
    Bad("10 MB body", R, b'{"sequence": "' + b"a" * (10 * 1024 * 1024) + b'"}', 413, "body_too_large"),
    Bad("deeply nested json", R, b'{"sequence": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 422, INVALID),
    Bad("nested object", R, b'{"pairs": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", 422, INVALID),
    Bad("json array", R, j([{"sequence": "c9k8j3f1??c"}]), 422, INVALID),
    Bad("json string", R, j("c9k8j3f1??c"), 422, INVALID),
    Bad("json null", R, b"null", 422, INVALID),
    # --- native: sequence semantics
    Bad("NUL byte", R, j({"sequence": "c9k8\x00j3f1??c"}), 422, "unknown_character"),
    Bad("fullwidth letter", R, j({"sequence": "c9k8j3f1??ｃ"}), 422, "unknown_character"),
    Bad("emoji", R, j({"sequence": "c9😀8??c"}), 422, "unknown_character"),
    Bad("rtl override", R, j({"sequence": "c9\u202ek8??c"}), 422, "unknown_character"),
    Bad("lone surrogate", R, b'{"sequence": "c9\\ud800??c"}', 422, None),
    Bad("unknown character", R, j({"sequence": "c9k#j3??c"}), 422, "unknown_character"),
    Bad("upper case", R, j({"sequence": "C9K8??C"}), 422, "unknown_character"),
    Bad("too long", R, j({"sequence": "a1" * 600 + "??a"}), 422, "too_long"),
    Bad(  # 26 pairs fill the largest bucket (T = 55); a 27th can only repeat a key
        "more pairs than the largest bucket",
        R,
        j({"sequence": "".join(f"{k}1" for k in "abcdefghijklmnopqrstuvwxyz") + "a2??a"}),
        422,
        "duplicate_key",
    ),
    Bad("duplicate key", R, j({"sequence": "a1a2??a"}), 422, "duplicate_key"),
    Bad("query not among keys", R, j({"sequence": "a1b2??c"}), 422, "query_not_found"),
    Bad("no query marker", R, j({"sequence": "a1b2c"}), 422, "malformed"),
    Bad("odd pair", R, j({"sequence": "a1b??a"}), 422, "malformed"),
    Bad("empty sequence", R, j({"sequence": ""}), 422, "empty"),
    Bad("pairs duplicate key", R, j({"pairs": [["a", "1"], ["a", "2"]], "query": "a"}), 422, "duplicate_key"),
    Bad("pairs query missing", R, j({"pairs": [["a", "1"]], "query": "z"}), 422, "query_not_found"),
    Bad("pairs long element", R, j({"pairs": [["ab", "1"]], "query": "ab"}), 422, None),
    Bad("pairs not a list", R, j({"pairs": "a1", "query": "a"}), 422, INVALID),
    Bad("pairs empty", R, j({"pairs": [], "query": "a"}), 422, None),
    # --- native: schema
    Bad("missing fields", R, j({}), 422, INVALID),
    Bad("extra field", R, j({"sequence": "c9k8j3f1??c", "temperature": 2}), 422, INVALID),
    Bad("both forms", R, j({"sequence": "c9??c", "pairs": [["c", "9"]], "query": "c"}), 422, None),
    Bad("sequence is an int", R, j({"sequence": 123}), 422, INVALID),
    Bad("top_k zero", R, j({"sequence": "c9??c", "top_k": 0}), 422, INVALID),
    Bad("top_k negative", R, j({"sequence": "c9??c", "top_k": -5}), 422, INVALID),
    Bad("top_k huge", R, j({"sequence": "c9??c", "top_k": 10**40}), 422, INVALID),
    Bad("top_k float", R, j({"sequence": "c9??c", "top_k": 2.5}), 422, INVALID),
    Bad("top_k NaN", R, b'{"sequence": "c9??c", "top_k": NaN}', 422, INVALID),
    Bad("top_k Infinity", R, b'{"sequence": "c9??c", "top_k": Infinity}', 422, INVALID),
    Bad("explain not bool", R, j({"sequence": "c9??c", "explain": "maybe"}), 422, INVALID),
    Bad("duplicate json keys", R, b'{"sequence": "c9??c", "sequence": "a1a2??a"}', 422, "duplicate_key"),
    Bad("unknown model", R, j({"sequence": "c9??c", "model": "nope"}), 404, "model_not_found"),
    Bad("model path traversal", R, j({"sequence": "c9??c", "model": "../../etc/passwd"}), 404, None),
    Bad("model absolute path", R, j({"sequence": "c9??c", "model": "/etc/passwd"}), 404, None),
    Bad("batch over the limit", B, j({"items": [{"sequence": "c9??c"}] * 1025}), 422, "too_many_items"),
    Bad("batch items not a list", B, j({"items": {"sequence": "c9??c"}}), 422, INVALID),
    Bad("batch missing items", B, j({"top_k": 2}), 422, INVALID),
    Bad("batch extra field", B, j({"items": [], "priority": 1}), 422, INVALID),
    Bad("batch not json", B, b"[[[", 422, INVALID),
    # --- V2 infer
    Bad("v2 not json", V2, b"tokens please", 400),
    Bad("v2 empty body", V2, b"", 400),
    Bad("v2 deeply nested", V2, b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    Bad("v2 10 MB body", V2, b'{"inputs": [' + b"1," * (5 * 1024 * 1024) + b"1]}", 413),
    Bad("v2 missing inputs", V2, j({"outputs": [{"name": "logits"}]}), 400),
    Bad("v2 inputs empty", V2, v2([]), 400),
    Bad("v2 wrong tensor name", V2, v2([tokens(GOOD_ROW, name="input_ids")]), 400),
    Bad("v2 two tensors", V2, v2([tokens(GOOD_ROW), tokens(GOOD_ROW, name="extra")]), 400),
    Bad("v2 wrong shape", V2, v2([tokens([*GOOD_ROW, PAD_ID], shape=[1, 12])]), 400),
    Bad("v2 rank 1", V2, v2([tokens(GOOD_ROW, shape=[11])]), 400),
    Bad("v2 shape/data mismatch", V2, v2([tokens(GOOD_ROW, shape=[2, 11])]), 400),
    Bad("v2 negative shape", V2, v2([tokens(GOOD_ROW, shape=[-1, 11])]), 400),
    Bad("v2 wrong datatype", V2, v2([tokens([float(t) for t in GOOD_ROW], datatype="FP32")]), 400),
    Bad("v2 unknown datatype", V2, v2([tokens(GOOD_ROW, datatype="INT128")]), 400),
    Bad("v2 BYTES", V2, v2([tokens(["c9k8j3f1??c"], shape=[1, 1], datatype="BYTES")]), 400),
    Bad("v2 token out of range", V2, v2([tokens([999] * 11)]), 400),
    Bad("v2 negative token", V2, v2([tokens([-1] * 11)]), 400),
    Bad("v2 huge int", V2, v2([tokens([2**70] * 11)]), 400),
    Bad("v2 floats for ints", V2, v2([tokens([1.5] * 11)]), 400),
    Bad(
        "v2 NaN",
        V2,
        b'{"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, 1], "data": [NaN]}]}',
        400,
    ),
    Bad("v2 strings for ints", V2, v2([tokens(["1"] * 11)]), 400),
    Bad("v2 unknown output", V2, v2([tokens(GOOD_ROW)], outputs=[{"name": "secrets"}]), 400),
    Bad(
        "v2 bad header length",
        V2,
        v2([tokens(GOOD_ROW)]),
        400,
        None,
        {"Inference-Header-Content-Length": "999999"},
    ),
    Bad(
        "v2 header length not a number",
        V2,
        v2([tokens(GOOD_ROW)]),
        400,
        None,
        {"Inference-Header-Content-Length": "abc"},
    ),
    Bad(
        "v2 binary size beyond body",
        V2,
        j(
            {
                "inputs": [
                    {
                        "name": "tokens",
                        "datatype": "INT64",
                        "shape": [1, 11],
                        "parameters": {"binary_data_size": 88},
                    }
                ]
            }
        )
        + struct.pack("<4q", 1, 2, 3, 4),
        400,
        None,
        {
            "Inference-Header-Content-Length": str(
                len(
                    j(
                        {
                            "inputs": [
                                {
                                    "name": "tokens",
                                    "datatype": "INT64",
                                    "shape": [1, 11],
                                    "parameters": {"binary_data_size": 88},
                                }
                            ]
                        }
                    )
                )
            )
        },
    ),
    Bad("v2 bad gzip", V2, b"\x1f\x8bnot gzip", 400, None, {"Content-Encoding": "gzip"}),
    Bad("v2 unknown encoding", V2, v2([tokens(GOOD_ROW)]), 415, None, {"Content-Encoding": "br"}),
    Bad("v2 unknown model", "/v2/models/nope/infer", v2([tokens(GOOD_ROW)]), 404),
    Bad("v2 unknown version", "/v2/models/fastweights_t11/versions/99/infer", v2([tokens(GOOD_ROW)]), 404),
    Bad("v2 load traversal", "/v2/repository/models/..%2F..%2Fetc/load", b"", 404),
    Bad("v2 load dotdot", "/v2/repository/models/../load", b"", 404),
    Bad(
        "v2 load config override",
        "/v2/repository/models/fastweights_t11/load",
        j({"parameters": {"config": "{}"}}),
        400,
    ),
    Bad(
        "v2 load file override",
        "/v2/repository/models/fastweights_t11/load",
        j({"parameters": {"file:1/model.onnx": "AAAA"}}),
        400,
    ),
    Bad("v2 repository index not json", "/v2/repository/index", b"{", 400),
]


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with start_server({"FWS_MAX_BODY_BYTES": str(MAX_BODY)}, repository=model_repository) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_the_corpus_is_big_and_covers_both_apis() -> None:
    assert len(CORPUS) >= 40
    assert len({b.name for b in CORPUS}) == len(CORPUS)
    assert sum(b.path.startswith("/v2") for b in CORPUS) >= 20
    assert sum(b.path.startswith("/v1") for b in CORPUS) >= 20


@pytest.mark.parametrize("bad", CORPUS, ids=[b.name for b in CORPUS])
def test_a_bad_input_gets_its_documented_json_error(bad: Bad, client: httpx.Client) -> None:
    r = client.post(bad.path, content=bad.body, headers=bad.headers)
    assert r.status_code == bad.status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    body = r.json()
    if bad.path.startswith("/v2"):
        assert isinstance(body["error"], str) and body["error"]
        assert set(body) == {"error"}
    else:
        error = body["error"]
        assert set(error) == {"code", "message", "field"} and error["message"]
        if bad.code is not None:
            assert error["code"] == bad.code, error
    assert find_leak(r.text) is None, r.text[:500]
    assert len(r.content) < 4096  # an error never echoes a big input back


def test_a_bad_batch_item_gets_its_own_error_entry_and_the_rest_are_answered(client: httpx.Client) -> None:
    items = [{"sequence": "c9k8j3f1??c"}, {"sequence": "c9\x00??c"}, {"pairs": "x"}, {"sequence": "a1??a"}]
    r = client.post(B, json={"items": items})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x.get("value") for x in results] == ["9", None, None, "1"]
    assert results[1]["error"]["code"] == "unknown_character"
    assert results[2]["error"]["code"] == "invalid_request"


def test_zz_the_server_is_healthy_and_correct_after_the_corpus(server: Server, client: httpx.Client) -> None:
    assert server.alive()
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    r = client.post(R, json={"sequence": "c9k8j3f1??c"})
    assert r.status_code == 200 and r.json()["value"] == "9"
    r = client.post(V2, json={"inputs": [tokens(GOOD_ROW)]})
    assert r.status_code == 200, r.text
    assert "unhandled error" not in server.logs()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(B, id="batch item id"),
        pytest.param(B, id="batch item unknown field"),
        pytest.param(V2, id="v2 request id"),
    ],
)
def test_lone_surrogates_echoed_from_the_request_never_cause_a_500(
    path: str, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    # JSON allows "\ud800" escapes; such a string cannot be UTF-8 encoded, so echoing it must escape it.
    body = {
        "batch item id": b'{"items": [{"id": "x\\ud800", "sequence": "c9k8j3f1??c"}]}',
        "batch item unknown field": b'{"items": [{"sequence": "c9k8j3f1??c", "\\udfff": 1}]}',
        "v2 request id": b'{"id": "\\ud800", "inputs": ' + j([tokens(GOOD_ROW)]) + b"}",
    }[request.node.callspec.id]
    r = client.post(path, content=body, headers=JSON)
    assert r.status_code in (200, 400), r.text
    assert r.json()  # valid JSON
    if path == B:
        (result,) = r.json()["results"]
        assert "value" in result or result["error"]["code"] == "invalid_request"
