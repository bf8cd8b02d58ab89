"""Print the serving requirements of the image, read from pyproject.toml (the one place they are declared).

The `serve` extra names `onnxruntime-gpu` or `onnxruntime` by platform; the CPU image takes the CPU-only
`onnxruntime` wheel (same module, same version bound, a fraction of the size) and the GPU image
`onnxruntime-gpu` with its `cuda`/`cudnn` extras, so NVIDIA's CUDA and cuDNN libraries come from the package
index instead of a CUDA base image. The versions come from constraints.txt (`pip install -c`).

    python3 deploy/serve_requirements.py --onnxruntime cpu pyproject.toml > requirements.txt

Standard library only: it runs in the bare base image before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

GPU_PACKAGE = "onnxruntime-gpu"
CPU_PACKAGE = "onnxruntime"
GPU_EXTRAS = "cuda,cudnn"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def split_requirement(requirement: str) -> tuple[str, str, str]:
    """`'uvicorn[standard]>=0.30'` -> `('uvicorn', '[standard]', '>=0.30')` (any marker stays in the rest)."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    name, extras, rest = match.groups()
    return name, extras or "", rest


def serve_requirements(pyproject: dict, onnxruntime: str) -> list[str]:
    """The core dependencies plus the `serve` extra, with the onnxruntime flavour chosen by `onnxruntime`.

    The extra names onnxruntime twice, `onnxruntime-gpu` and `onnxruntime` under complementary environment
    markers (the GPU build only where one exists); the image asks for one flavour explicitly, so both become
    one requirement, without marker, at the first one's place. They must carry the same version bounds.
    """
    if onnxruntime not in ("cpu", "gpu"):
        raise ValueError(f"onnxruntime must be 'cpu' or 'gpu', not {onnxruntime!r}")
    project = pyproject["project"]
    requirements = list(project.get("dependencies", [])) + list(project["optional-dependencies"]["serve"])
    out: list[str] = []
    bounds: set[str] = set()
    for requirement in requirements:
        name, _extras, rest = split_requirement(requirement)
        if name.lower().replace("_", "-") not in (GPU_PACKAGE, CPU_PACKAGE):
            out.append(requirement)
            continue
        bound = rest.split(";", 1)[0].strip()  # the marker chose a platform; the image has chosen already
        if not bounds:
            package = CPU_PACKAGE if onnxruntime == "cpu" else f"{GPU_PACKAGE}[{GPU_EXTRAS}]"
            out.append(f"{package}{bound}")
        bounds.add(bound)
    if not bounds:
        raise ValueError("the serve extra names no onnxruntime package")
    if len(bounds) > 1:
        raise ValueError(f"the serve extra's onnxruntime requirements differ in bounds: {sorted(bounds)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    parser.add_argument("--onnxruntime", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as f:
        pyproject = tomllib.load(f)
    sys.stdout.write("".join(f"{r}\n" for r in serve_requirements(pyproject, args.onnxruntime)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
