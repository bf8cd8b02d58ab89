"""The ASGI fast path serves the fast routes exactly as the FastAPI routes would: same statuses, same bodies.

Both apps run in-process on the bundled model repository (real onnxruntime sessions); the only difference
is `fast_path`. If a handler, a validation rule or an error mapping ever differs between the two ways of
serving a route, one of these cases shows it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.data import VOCAB
from service.config import Settings
from service.main import create_app

JSON = {"content-type": "application/json"}


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


R, B = "/v1/retrieve", "/v1/retrieve/batch"
V2, V2V = "/v2/models/fastweights_t11/infer", "/v2/models/fastweights_t11/versions/1/infer"
TOKENS = {"name": "tokens", "datatype": "INT64", "shape": [1, 11], "data": VOCAB.encode("c9k8j3f1??c")}
CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("sequence", R, j({"sequence": "c9k8j3f1??c"}), JSON),
    (
        "pairs, top_k, explain",
        R,
        j({"pairs": [["c", "9"], ["k", "8"]], "query": "k", "top_k": 3, "explain": True}),
        JSON,
    ),
    (
        "charset in content type",
        R,
        j({"sequence": "a1??a"}),
        {"content-type": "application/json; charset=utf-8"},
    ),
    ("vendor +json", R, j({"sequence": "a1??a"}), {"content-type": "application/vnd.fws+json"}),
    ("text/plain", R, j({"sequence": "a1??a"}), {"content-type": "text/plain"}),
    ("no content type", R, j({"sequence": "a1??a"}), {}),
    ("empty body", R, b"", JSON),
    ("whitespace body", R, b"  \n", JSON),
    ("not json", R, b"sequence=a1??a", JSON),
    ("invalid utf-8", R, b'{"sequence": "\xff\xfe"}', JSON),
    ("deep nesting", R, b'{"sequence": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON),
    ("json array", R, j([1, 2]), JSON),
    ("null", R, b"null", JSON),
    ("extra field", R, j({"sequence": "a1??a", "x": 1}), JSON),
    ("both forms", R, j({"sequence": "a1??a", "pairs": [["a", "1"]], "query": "a"}), JSON),
    ("top_k NaN", R, b'{"sequence": "a1??a", "top_k": NaN}', JSON),
    ("top_k too big", R, j({"sequence": "a1??a", "top_k": 11}), JSON),
    ("duplicate key", R, j({"sequence": "a1a2??a"}), JSON),
    ("unknown character", R, j({"sequence": "a1#2??a"}), JSON),
    ("too many pairs", R, j({"sequence": "a1b2c3d4e5f6g7h8i9j0k1l2m3??a"}), JSON),
    ("unknown model", R, j({"sequence": "a1??a", "model": "nope"}), JSON),
    ("duplicate json keys", R, b'{"sequence": "a1??a", "sequence": "a1a2??a"}', JSON),
    ("lone surrogate", R, b'{"sequence": "a1\\ud800??a"}', JSON),
    (
        "batch with bad items",
        B,
        j(
            {
                "items": [
                    {"id": "a", "sequence": "c9k8j3f1??c"},
                    {"id": 7, "pairs": [["x", "1"], ["y", "2"]], "query": "y"},
                    {"sequence": "a1a2??a"},
                    {"sequence": 5},
                    "not an object",
                    {"id": True, "sequence": "q5??q"},
                ],
                "top_k": 2,
                "explain": True,
            }
        ),
        JSON,
    ),
    ("batch surrogate id", B, b'{"items": [{"id": "x\\ud800", "sequence": "a1??a"}]}', JSON),
    ("batch empty", B, j({"items": []}), JSON),
    ("batch too many", B, j({"items": [{"sequence": "a1??a"}] * 1025}), JSON),
    ("batch missing items", B, j({"top_k": 2}), JSON),
    ("batch unknown model", B, j({"items": [], "model": "nope"}), JSON),
    ("v2 infer", V2, j({"id": "q", "inputs": [TOKENS]}), JSON),
    ("v2 infer of one output", V2, j({"inputs": [TOKENS], "outputs": [{"name": "logits"}]}), JSON),
    ("v2 infer of one version", V2V, j({"inputs": [TOKENS]}), JSON),
    ("v2 wrong version", "/v2/models/fastweights_t11/versions/7/infer", j({"inputs": [TOKENS]}), JSON),
    ("v2 unknown model", "/v2/models/nope/infer", j({"inputs": [TOKENS]}), JSON),
    ("v2 name too long", f"/v2/models/{'m' * 129}/infer", j({"inputs": [TOKENS]}), JSON),
    ("v2 bad name", "/v2/models/a..b/infer", j({"inputs": [TOKENS]}), JSON),
    ("v2 not json", V2, b"tokens please", JSON),
    ("v2 wrong shape", V2, j({"inputs": [{**TOKENS, "shape": [1, 12]}]}), JSON),
    ("v2 token out of range", V2, j({"inputs": [{**TOKENS, "data": [999] * 11}]}), JSON),
    ("v2 gzip body", V2, gzip.compress(j({"inputs": [TOKENS]})), {**JSON, "content-encoding": "gzip"}),
    (
        "v2 binary output",
        V2,
        j({"inputs": [TOKENS], "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}),
        JSON,
    ),
]


@pytest.fixture(scope="module")
def clients(model_repository: Path) -> Iterator[dict[bool, TestClient]]:
    fast = TestClient(create_app(Settings(model_repository=model_repository, fast_path=True)))
    slow = TestClient(create_app(Settings(model_repository=model_repository, fast_path=False)))
    with fast, slow:
        yield {True: fast, False: slow}


@pytest.mark.parametrize(("name", "path", "body", "headers"), CASES, ids=[c[0] for c in CASES])
def test_the_fast_path_answers_exactly_as_the_fastapi_route(
    clients: dict[bool, TestClient], name: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    fast = clients[True].post(path, content=body, headers=headers)
    slow = clients[False].post(path, content=body, headers=headers)
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    assert fast.content == slow.content
    for header in ("content-type", "inference-header-content-length", "content-encoding"):
        assert fast.headers.get(header) == slow.headers.get(header), header
    assert fast.headers.get("retry-after") == slow.headers.get("retry-after")
    assert fast.status_code < 500


def test_the_fast_path_is_labelled_by_route_template_in_metrics(clients: dict[bool, TestClient]) -> None:
    client = clients[True]
    client.post(R, json={"sequence": "a1??a"})
    client.post(B, json={"items": [{"sequence": "a1a2??a"}]})
    text = client.get("/metrics").text
    assert 'fws_http_requests_total{method="POST",route="/v1/retrieve",status="200"}' in text
    assert 'fws_http_requests_total{method="POST",route="/v1/retrieve/batch",status="200"}' in text
    assert 'route="unmatched"' not in text


def test_generated_request_ids_are_distinct(clients: dict[bool, TestClient]) -> None:
    ids = {clients[True].post(R, json={"sequence": "a1??a"}).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_an_unexpected_error_in_a_hot_route_is_a_json_500_without_a_stack_trace(
    model_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.routes import native

    async def explode(*args: object) -> dict[str, object]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(native, "handle_retrieve", explode)
    app = create_app(Settings(model_repository=model_repository))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(R, json={"sequence": "a1??a"})
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal", "message": "internal server error", "field": None}}
        assert "secret" not in r.text
        assert client.post(B, json={"items": [{"sequence": "a1??a"}]}).status_code == 200  # still serving


# ------------------------------------------------------------------------------ the disconnect watcher


def _drive(handler_s: float, disconnect_after_s: float | None) -> tuple[list[dict], int]:
    """One request through a FastPath whose handler takes `handler_s`; the client leaves after
    `disconnect_after_s` (None: never). Returns what was sent and how many tasks the fast path started."""
    import asyncio
    from types import SimpleNamespace

    from service.fastpath import FastPath, RawRequest, fast_route, json_response

    async def handler(request: RawRequest, state: object) -> object:
        await asyncio.sleep(handler_s)
        return json_response({"ok": True})

    async def fallback(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not a fast route")

    state = SimpleNamespace(settings=SimpleNamespace(retry_after_s=1))
    app = FastPath(fallback, [fast_route("POST", "/x", handler)], state)
    sent: list[dict] = []

    async def main() -> int:
        messages = 0

        async def receive() -> dict:
            nonlocal messages
            messages += 1
            if messages == 1:
                return {"type": "http.request", "body": b"{}", "more_body": False}
            if disconnect_after_s is None:
                await asyncio.sleep(3600)
            await asyncio.sleep(max(0.0, disconnect_after_s - (asyncio.get_running_loop().time() - t0)))
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        t0 = asyncio.get_running_loop().time()
        before = len(asyncio.all_tasks())
        started = 0
        real_create_task = asyncio.get_running_loop().create_task

        def counting_create_task(coro, **kw):  # type: ignore[no-untyped-def]
            nonlocal started
            started += 1
            return real_create_task(coro, **kw)

        asyncio.get_running_loop().create_task = counting_create_task  # type: ignore[method-assign]
        scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
        await app(scope, receive, send)
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == before  # no watcher left behind
        return started

    started = asyncio.run(main())
    return sent, started


def test_a_quick_answer_starts_no_watcher_task() -> None:
    sent, started = _drive(handler_s=0.0, disconnect_after_s=None)
    assert sent[0]["status"] == 200 and started == 0


def test_a_slow_answer_is_watched_and_cancelled_when_its_client_leaves() -> None:
    from service.fastpath import WATCH_AFTER_S

    sent, started = _drive(handler_s=30.0, disconnect_after_s=WATCH_AFTER_S * 3)
    assert started == 1
    assert sent[0]["status"] == 499
    assert json.loads(sent[1]["body"])["error"]["code"] == "client_gone"


def test_a_slow_answer_whose_client_stays_gets_its_answer() -> None:
    from service.fastpath import WATCH_AFTER_S

    sent, started = _drive(handler_s=WATCH_AFTER_S * 2, disconnect_after_s=None)
    assert started == 1 and sent[0]["status"] == 200
