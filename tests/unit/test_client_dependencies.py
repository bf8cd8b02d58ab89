"""The client runs with only the `client` extra: no service, model, torch, numpy, onnxruntime, or orjson."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

BLOCKED = ("service", "model", "export", "torch", "numpy", "onnxruntime", "orjson", "pydantic", "fastapi")

SCRIPT = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of these now raises ImportError
import client.__main__, client.v2, client.scorer, client.grpc_v2
from client.outputs import dumps, loads, encode_jsonl
assert loads(dumps({{"a": [1, "x"]}})) == {{"a": [1, "x"]}}
assert encode_jsonl([{{"line": 1, "id": "é"}}]) == '{{"line":1,"id":"é"}}\\n'.encode()
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r} and sys.modules[m] is not None))
"""


def test_the_client_imports_and_encodes_without_the_serving_or_training_stack():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok []"


def test_the_cli_help_runs_without_them():
    code = f"import sys, runpy\nfor n in {BLOCKED!r}: sys.modules[n] = None\nsys.argv = ['x', '--help']\n"
    code += "runpy.run_module('client', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--resume" in done.stdout and "Exit codes" in done.stdout
