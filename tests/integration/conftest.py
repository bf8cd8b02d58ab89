"""Shared fixtures: one real server per test session for the read-only tests, plus its httpx client.

Tests that need special settings (auth, limits, tiny queues, drain) start their own server with
`tests.integration.server.start_server(env)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import Server, start_server


@pytest.fixture(scope="session")
def server(model_repository: Path) -> Iterator[Server]:
    """The server with default settings, shared by every test that only reads from it."""
    with start_server(repository=model_repository) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c
