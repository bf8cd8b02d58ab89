"""Fixtures of the browser tests: one real server, one headless Chromium, both shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.browser.browser import BrowserMissingError, chromium
from tests.browser.page import KEY
from tests.integration.server import Server, start_server


@pytest.fixture(scope="session")
def server(model_repository: Path) -> Iterator[Server]:
    with start_server(repository=model_repository, ready_timeout=120) as srv:  # shares the CPU with a browser
        yield srv


@pytest.fixture(scope="session")
def keyed_server(model_repository: Path) -> Iterator[Server]:
    """A server with an API key and without memory sessions."""
    env = {"FWS_API_KEY": KEY, "FWS_SESSIONS": "false"}
    with start_server(env, repository=model_repository, ready_timeout=120) as srv:
        yield srv


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    try:
        driver = chromium()
    except BrowserMissingError as exc:  # fail, never skip: `make test` installs the browser first
        pytest.fail(str(exc))
    try:
        yield driver
    finally:
        driver.quit()
