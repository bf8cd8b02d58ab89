"""The installed uvicorn has every internal the service's HTTP protocol uses, in the declared range."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

from service.uvicorn_support import SUPPORTED, missing_features

ROOT = Path(__file__).resolve().parents[2]


def declared_uvicorn() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [Requirement(s) for s in project["optional-dependencies"]["serve"]]
    return next(r for r in specs if r.name == "uvicorn")


def test_pyproject_declares_the_uvicorn_range_the_protocol_was_written_for():
    declared = declared_uvicorn()
    assert str(declared.specifier) == str(Requirement(f"uvicorn{SUPPORTED}").specifier), (
        f"pyproject.toml says {declared}, service/uvicorn_support.py says uvicorn{SUPPORTED}: keep them equal"
    )
    assert any(s.operator == "<" for s in declared.specifier), "uvicorn needs an upper bound (internals used)"


def test_the_installed_uvicorn_is_in_the_declared_range():
    installed = version("uvicorn")
    assert installed in declared_uvicorn().specifier, (
        f"uvicorn {installed} is installed but the service's HTTP protocol (service/transport.py, "
        f"service/edge.py) is written against uvicorn{SUPPORTED}: install a version in that range"
    )


def test_the_installed_uvicorn_has_every_internal_the_protocol_uses():
    missing = missing_features()
    assert not missing, (
        f"uvicorn {version('uvicorn')} lacks what service/transport.py and service/edge.py use: "
        f"{', '.join(missing)}. Pin uvicorn{SUPPORTED} or port the protocol."
    )


def test_the_check_notices_a_missing_internal(monkeypatch):
    from uvicorn.protocols.http import httptools_impl

    monkeypatch.delattr(httptools_impl.RequestResponseCycle, "send")  # sanity: the check is not vacuous
    monkeypatch.setattr("service.uvicorn_support.CYCLE_ATTRIBUTES", ("send",))
    assert missing_features() == ["RequestResponseCycle.send"]
