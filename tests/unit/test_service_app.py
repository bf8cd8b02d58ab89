"""The app in-process (no network): settings, torch-freedom, last-resort error handling, readiness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_app_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import service.__main__, service.main\n"
        "app = service.main.create_app()\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_settings_come_from_fws_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FWS_MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("FWS_API_KEY", "zq-secret-9")
    monkeypatch.setenv("FWS_MODEL_REPOSITORY", "/somewhere")
    s = Settings()
    assert s.max_batch_size == 32 and s.api_key is not None and s.api_key.get_secret_value() == "zq-secret-9"
    assert s.model_repository == Path("/somewhere")
    assert "zq-secret-9" not in repr(s)  # the key never shows up in logs


def test_the_defaults_serve_the_bundled_repository_on_localhost_8000_without_added_latency() -> None:
    s = Settings()
    assert (s.host, s.port, s.max_queue_delay_ms) == ("127.0.0.1", 8000, 0.0)
    assert s.model_repository == REPO_ROOT / "model_repository"


def test_an_unexpected_error_is_a_json_500_without_a_stack_trace(tmp_path: Path) -> None:
    app = create_app(Settings(model_repository=tmp_path))

    @app.get("/v1/explode")
    async def explode() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/explode")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal", "message": "internal server error", "field": None}}
    assert "secret" not in r.text and "Traceback" not in r.text


def test_without_any_model_the_server_is_live_but_not_ready(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(model_repository=tmp_path))) as client:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        r = client.post("/v1/retrieve", json={"sequence": "a1??a"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_a_form_encoded_body_gets_a_hint_to_send_json(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(model_repository=tmp_path))) as client:
        r = client.post(
            "/v1/retrieve", content=b'{"sequence": "a1??a"}', headers={"content-type": "text/plain"}
        )
    assert r.status_code == 422
    assert "Content-Type: application/json" in r.json()["error"]["message"]


def test_app_state_finds_what_requests_read_on_its_class_and_behaves_as_starlettes_state(
    tmp_path: Path,
) -> None:
    import inspect

    from starlette.datastructures import State

    app = create_app(Settings(model_repository=tmp_path, sessions=False))
    state = app.state
    assert isinstance(state, State)
    for name in ("settings", "registry", "metrics", "ready", "draining"):
        # a property of the class: no failed normal lookup (an AttributeError built and dropped) per read
        assert isinstance(inspect.getattr_static(type(state), name), property), name
    assert state.settings is app.state.settings and state.ready is False and state.draining is False
    assert getattr(state, "sessions", None) is None  # not set: AttributeError, as State gives it
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = state.nothing
    state.draining = True
    state.extra = 7
    assert state.draining is True and state["extra"] == 7 and state["draining"] is True
    del state.extra
    assert "extra" not in list(state) and getattr(state, "extra", None) is None
