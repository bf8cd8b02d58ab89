"""Fixtures for the reliability suite: its own real servers (fuzzing mutates state: load/unload).

Bounded for CI by default; `FWS_RELIABILITY_LONG=1` (or `make reliability-long`) runs the longer versions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server import Server, start_server

LONG = os.environ.get("FWS_RELIABILITY_LONG", "") not in ("", "0")


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    """A server with default settings, one per test module (fuzzing may unload models)."""
    with start_server(repository=model_repository) as srv:
        yield srv
