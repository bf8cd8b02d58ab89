"""The playground page's route in-process: its files, headers and API-key policy, and that it ships."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.middleware import PUBLIC_PATHS
from service.routes.playground import ASSETS

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE_DIR = REPO_ROOT / "service" / "playground"


@pytest.fixture(scope="module")
def keyed_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = Settings(model_repository=tmp_path_factory.mktemp("empty"), api_key="k3y")
    return TestClient(create_app(settings))


def test_every_file_of_the_page_is_served_and_nothing_else_is(keyed_client: TestClient) -> None:
    assert sorted(name for name, _ in ASSETS.values()) == sorted(p.name for p in PAGE_DIR.iterdir())
    for path, (name, media_type) in ASSETS.items():
        r = keyed_client.get(path)
        assert r.status_code == 200, path
        assert r.content == (PAGE_DIR / name).read_bytes()
        assert r.headers["content-type"] == media_type
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert keyed_client.get("/playground/index.html").status_code == 401  # not a file server: unknown path


def test_the_page_is_public_and_the_api_behind_it_is_not(keyed_client: TestClient) -> None:
    assert set(ASSETS) <= PUBLIC_PATHS
    assert keyed_client.get("/").status_code == 200  # no key needed for the page
    assert keyed_client.post("/v1/retrieve", json={"sequence": "a1??a"}).status_code == 401


def test_the_page_is_not_an_operation_of_the_openapi_document(keyed_client: TestClient) -> None:
    paths = keyed_client.app.openapi()["paths"]  # type: ignore[attr-defined]
    assert not set(ASSETS) & set(paths)


def test_the_page_ships_in_the_built_package(tmp_path: Path) -> None:
    """Built as the Docker image builds it (a non-editable install from a copy of the sources)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for package in ("model", "export", "service", "client"):
        shutil.copytree(REPO_ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("fastweights_serve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"service/playground/{name}" for name, _ in ASSETS.values()} <= names
