"""Fixtures shared by the integration and reliability suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.server import default_repository


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The bundled model repository (or FWS_TEST_REPOSITORY), failing loudly when it has no model."""
    repo = default_repository()
    if not any(repo.glob("*/*/model.onnx")):
        pytest.fail(f"no model repository at {repo} (run `make model`, or set FWS_TEST_REPOSITORY)")
    return repo
