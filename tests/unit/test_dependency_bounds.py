"""Dependencies: bounded in pyproject.toml, pinned in constraints.txt, and what is installed is inside both.

A failure here names the package and the range: install from the lock (`make install` does), or widen the
bound in pyproject.toml once the code is tested with the new release, then `make lock`.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from deploy.serve_requirements import serve_requirements

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SERVING = [Requirement(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["serve"]]
CLIENT = [Requirement(r) for r in PROJECT["optional-dependencies"]["client"]]


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


@pytest.mark.parametrize("requirement", SERVING + CLIENT, ids=str)
def test_every_serving_and_client_dependency_has_a_lower_and_an_upper_bound(requirement: Requirement) -> None:
    operators = {spec.operator for spec in requirement.specifier}
    assert operators & {">=", ">", "~=", "=="}, f"{requirement}: no lower bound"
    assert operators & {"<", "<=", "~=", "=="}, f"{requirement}: no upper bound"


@pytest.mark.parametrize("requirement", [r for r in SERVING + CLIENT if _applies(r)], ids=str)
def test_what_is_installed_is_inside_the_bounds(requirement: Requirement) -> None:
    installed = metadata.version(requirement.name)
    assert requirement.specifier.contains(Version(installed), prereleases=True), (
        f"{requirement.name} {installed} is installed, outside {requirement.specifier}: install from the lock"
        " (make install) or test the new release and widen the bound in pyproject.toml"
    )


def test_the_lock_pins_every_dependency_of_every_extra_inside_its_bounds() -> None:
    pins = locked()
    for group in ("dependencies", "serve", "client", "dev", "train"):
        declared = PROJECT[group] if group == "dependencies" else PROJECT["optional-dependencies"][group]
        for requirement in map(Requirement, declared):
            name = _norm(requirement.name)
            assert name in pins, f"{name} ({group}) is not in constraints.txt: run make lock"
            bounds = requirement.specifier
            assert bounds.contains(Version(pins[name]), prereleases=True), (
                f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {bounds}: make lock"
            )
    assert pins["torch"] == "2.13.0"  # never a local label (+cpu): the pin must hold on any index


def test_the_lock_pins_both_onnxruntime_flavours_the_images_install() -> None:
    pins = locked()
    for flavour in ("cpu", "gpu"):
        (ort,) = [
            Requirement(r) for r in serve_requirements(PYPROJECT, flavour) if r.startswith("onnxruntime")
        ]
        assert _norm(ort.name) in pins, f"{ort.name} missing from constraints.txt"
        for extra_package in ("nvidia-cublas", "nvidia-cudnn-cu13") if flavour == "gpu" else ():
            assert extra_package in pins, f"{extra_package} (onnxruntime-gpu[cuda,cudnn]) missing: make lock"


def test_what_is_installed_is_what_the_lock_says() -> None:
    pins = locked()
    for requirement in (r for r in SERVING + CLIENT if _applies(r)):
        name = _norm(requirement.name)
        assert Version(metadata.version(requirement.name)) == Version(pins[name]), (
            f"{name}: installed {metadata.version(requirement.name)}, locked {pins[name]} (make install)"
        )


@pytest.mark.parametrize(
    ("platform", "machine", "flavour"),
    [
        ("linux", "x86_64", "onnxruntime-gpu"),
        ("win32", "AMD64", "onnxruntime-gpu"),
        ("linux", "aarch64", "onnxruntime"),
        ("darwin", "arm64", "onnxruntime"),
        ("darwin", "x86_64", "onnxruntime"),
    ],
)
def test_exactly_one_onnxruntime_is_installed_per_platform_gpu_only_where_nvidia_builds_it(
    platform: str, machine: str, flavour: str
) -> None:
    env = {"sys_platform": platform, "platform_machine": machine, "extra": ""}
    chosen = [
        r.name for r in SERVING if r.name.startswith("onnxruntime") and r.marker and r.marker.evaluate(env)
    ]
    assert chosen == [flavour]
    specifiers = {str(r.specifier) for r in SERVING if r.name.startswith("onnxruntime")}
    assert len(specifiers) == 1, f"both flavours must have the same bounds: {specifiers}"


def test_the_lock_was_made_for_this_interpreter_line() -> None:
    header = (REPO / "constraints.txt").read_text().splitlines()[:6]
    (resolved,) = [line for line in header if line.startswith("# Resolved by pip")]
    assert f"CPython {sys.version_info.major}.{sys.version_info.minor}." in resolved


def test_every_install_of_the_makefile_and_the_dockerfile_goes_through_the_lock() -> None:
    import re

    makefile = (REPO / "Makefile").read_text()
    main_installs = [
        line for line in makefile.splitlines() if re.search(r"\$\(BIN\)/pip install", line) and "-e " in line
    ]
    assert main_installs and all("-c $(CONSTRAINTS)" in line for line in main_installs), main_installs
    assert "CONSTRAINTS := constraints.txt" in makefile
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install -c /build/constraints.txt -r /build/requirements.txt" in dockerfile
    assert "!constraints.txt" in (REPO / ".dockerignore").read_text().splitlines()


def test_the_image_requirements_refuse_onnxruntime_flavours_with_different_bounds() -> None:
    broken = {
        "project": {
            "dependencies": [],
            "optional-dependencies": {
                "serve": ["onnxruntime-gpu>=1.31,<1.33; sys_platform == 'linux'", "onnxruntime>=1.30"]
            },
        }
    }
    with pytest.raises(ValueError, match="differ in bounds"):
        serve_requirements(broken, "cpu")
