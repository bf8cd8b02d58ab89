"""tests/deploy: static checks of the deployment files (always run) and the Docker end-to-end tests.

The end-to-end tests (marker `docker`) need a docker daemon, locally built base images and the app image:
`make docker-test` (scripts/docker-test.sh) prepares all that, then runs them with FWS_DOCKER_IMAGE set.
A plain `make test` deselects them (pytest reports the count) rather than skip or fail for want of a daemon.
"""

from __future__ import annotations

import os

import pytest

DOCKER_ENV = "FWS_DOCKER_IMAGE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(DOCKER_ENV):
        return
    deselected = [item for item in items if item.get_closest_marker("docker") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("docker") is None]
