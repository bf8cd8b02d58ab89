"""The one-way flow, as the imports say it: the service and the contract never reach model/, export/ or torch.

The graph is read with `ast` from the source (every import statement, also those inside functions), so a lazy
import cannot hide; a subprocess then imports the whole app with those packages blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("contract", "inference_grpc", "service", "model", "export", "client", "bench")
FORBIDDEN_FOR_SERVICE = ("model", "export", "torch", "onnx", "onnxscript")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") in ("import_module", "find_spec")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def source_files(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO_ROOT / package).rglob("*.py"))}


ALL_MODULES = {name: path for pkg in PROJECT for name, path in source_files(pkg).items()}


def reachable_from(roots: list[str]) -> tuple[set[str], dict[str, str]]:
    """Project modules reachable from `roots`, and every import seen -> the module that imports it."""
    seen: set[str] = set()
    importer: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in ALL_MODULES:
            continue
        seen.add(name)
        for imported in imports_of(ALL_MODULES[name]):
            importer.setdefault(imported, name)
            parts = imported.split(".")
            # `from contract import x` reaches contract/__init__.py; `import a.b.c` reaches a, a.b and a.b.c
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return seen, importer


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_graph_walker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The walker itself can fail: an import inside a function is found."""
    probe = REPO_ROOT / "service" / "routes" / "native.py"
    assert "contract.vocab" in imports_of(probe)
    assert "service.routes.v2" in imports_of(REPO_ROOT / "service" / "main.py")  # importlib.import_module


def test_no_service_module_imports_model_or_export() -> None:
    offenders = sorted(
        f"{name} imports {imported}"
        for name, path in source_files("service").items()
        for imported in imports_of(path)
        if top(imported) in ("model", "export")
    )
    assert offenders == []


def test_nothing_reachable_from_the_service_imports_torch_model_or_export() -> None:
    modules, importer = reachable_from(list(source_files("service")))
    assert any(m.startswith("contract") for m in modules)  # the walk does follow into the contract
    bad = sorted(f"{importer[i]} imports {i}" for i in importer if top(i) in FORBIDDEN_FOR_SERVICE)
    assert bad == []
    assert not any(top(m) in ("model", "export") for m in modules)


def test_the_contract_is_pure_python_and_imports_only_itself() -> None:
    stdlib = sys.stdlib_module_names
    bad = sorted(
        f"{name} imports {imported}"
        for name, path in source_files("contract").items()
        for imported in imports_of(path)
        if top(imported) not in stdlib and top(imported) != "contract" and imported != "__future__"
    )
    assert bad == []


@pytest.mark.parametrize(
    "literal",
    ['"onnxruntime_onnx"', '"fastweights.seq_len"', '"fastweights.vocab"', '"config.pbtxt"'],
)
def test_contract_constants_are_spelled_in_the_contract_only(literal: str) -> None:
    """No second copy: the platform, metadata keys and file names are written once, in contract/."""
    copies = sorted(
        name
        for name, path in ALL_MODULES.items()
        if top(name) != "contract" and literal in path.read_text(encoding="utf-8")
    )
    assert copies == []


def test_the_app_imports_with_model_export_and_torch_blocked() -> None:
    blocked = ("torch", "model", "export", "onnx")
    code = (
        "import sys\n"
        f"for n in {blocked!r}: sys.modules[n] = None\n"
        "import service.main, service.__main__\n"
        "service.main.create_app()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {blocked!r} and sys.modules[m]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
