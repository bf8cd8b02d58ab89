"""Security: the API key guards every non-health route; body size limit (declared and streamed); model
names in URLs never reach the file system; no error body carries a stack trace or a file path."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from service.main import create_app
from service.middleware import PUBLIC_PATHS
from tests.integration.server import Server, start_server
from tests.reliability.leaks import find_leak

KEY = "s3cret-key"
OPENAPI = create_app().openapi()
ROUTES = [
    (method.upper(), path.replace("{name}", "fastweights_t5").replace("{version}", "1"), path)
    for path, ops in OPENAPI["paths"].items()
    for method in ops
]
GUARDED = [r for r in ROUTES if r[2] not in PUBLIC_PATHS]


@pytest.fixture(scope="module")
def repo(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of one model, with a loadable model OUTSIDE it, next door, for traversal attempts."""
    root = tmp_path_factory.mktemp("sec")
    shutil.copytree(model_repository / "fastweights_t5", root / "repo" / "fastweights_t5")
    shutil.copytree(model_repository / "fastweights_t11", root / "outside")
    return root / "repo"


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Server]:
    with start_server({"FWS_API_KEY": KEY, "FWS_MAX_BODY_BYTES": "65536"}, repository=repo) as srv:
        yield srv


def call(server: Server, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = b'{"sequence": "a1??a"}' if path.startswith("/v1") else b""
    return httpx.request(method, server.url + path, content=body, headers=headers, timeout=30)


def test_every_operation_is_either_public_health_or_guarded() -> None:
    public = {p for _, _, p in ROUTES} & PUBLIC_PATHS
    assert public == {"/v2/health/live", "/v2/health/ready"}
    assert len(GUARDED) >= 18


@pytest.mark.parametrize(("method", "path", "template"), GUARDED, ids=[f"{m} {t}" for m, _, t in GUARDED])
def test_the_api_key_is_enforced_on_every_non_health_route(
    method: str, path: str, template: str, server: Server
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": KEY},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"bearer  {KEY}"},
    ):
        r = call(server, method, path, headers)
        assert r.status_code == 401, (headers, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "error" in r.json() and find_leak(r.text) is None
    r = call(server, method, path, {"Authorization": f"Bearer {KEY}"})
    assert r.status_code != 401, r.text
    assert r.status_code < 500, r.text
    if path.endswith("/unload"):  # put it back for the other tests
        assert call(
            server, "POST", path.replace("/unload", "/load"), {"Authorization": f"Bearer {KEY}"}
        ).is_success


def test_health_and_docs_need_no_key(server: Server) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"):
        assert httpx.get(server.url + path, timeout=10).status_code == 200, path
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 401


def test_a_body_over_the_limit_is_refused_declared_or_streamed(server: Server) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = b'{"sequence": "' + b"a" * 100_000 + b'"}'
    r = httpx.post(server.url + "/v1/retrieve", content=big, headers=auth, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        yield b'{"sequence": "'
        for _ in range(20):
            yield b"a" * 8192
        yield b'"}'

    r = httpx.post(server.url + "/v1/retrieve", content=chunks(), headers=auth, timeout=30)
    assert r.status_code == 413, r.text
    r = httpx.post(server.url + "/v2/models/fastweights_t5/infer", content=chunks(), headers=auth, timeout=30)
    assert r.status_code == 413 and isinstance(r.json()["error"], str)
    assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200


# (Raw "." and ".." are resolved by the HTTP client before sending: they never reach a {name}.)
TRAVERSALS = [
    "../outside",
    "..%2Foutside",
    "%2E%2E%2Foutside",
    "%252E%252E%252Foutside",
    "..%5Coutside",
    "%2Ftmp%2Foutside",
    "%2Fetc%2Fpasswd",
    "fastweights_t5%2F..%2F..%2Foutside",
    "fastweights_t5%00",
    "~root",
    ".hidden",
]


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "/v2/repository/models/{}/load"),
        ("POST", "/v2/repository/models/{}/unload"),
        ("GET", "/v2/models/{}"),
        ("GET", "/v2/models/{}/ready"),
        ("GET", "/v2/models/{}/config"),
        ("GET", "/v2/models/{}/versions/1"),
        ("POST", "/v2/models/{}/infer"),
    ],
)
def test_model_names_in_urls_never_reach_the_file_system(
    name: str, method: str, route: str, server: Server, repo: Path
) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.request(method, server.url + route.format(name), headers=auth, timeout=30)
    assert r.status_code in (400, 404), (r.status_code, r.text)
    assert isinstance(r.json()["error"], str)
    # A "no route" 404 echoes the caller's own (decoded) path: that is not a server path.
    echoed = r.text.replace(unquote(unquote(route.format(name))), "")
    assert find_leak(echoed) is None and str(repo.parent) not in r.text
    index = httpx.post(server.url + "/v2/repository/index", headers=auth, timeout=30).json()
    assert {row["name"] for row in index} == {"fastweights_t5"}
    assert all(row["state"] == "READY" for row in index)
