"""`FWS_DEVICE=cuda` on this CPU-only machine: the start stops with one clear JSON error line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from service.providers import gpu_present
from tests.integration.server import REPO_ROOT, default_repository, free_port


@pytest.mark.skipif(gpu_present(), reason="a GPU is present: FWS_DEVICE=cuda may really work here")
def test_device_cuda_without_a_usable_gpu_exits_non_zero_with_one_clear_error_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FWS_")}
    env.update(
        {
            "FWS_DEVICE": "cuda",
            "FWS_PORT": str(free_port()),
            "FWS_MODEL_REPOSITORY": str(default_repository()),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert "\x1b[" not in output  # none of onnxruntime's coloured log lines
    lines = output.strip().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    errors = [r for r in records if r["level"] == "error"]
    assert len(errors) == 1 and len(lines) == 1, output
    assert errors[0]["msg"].startswith("FWS_DEVICE=cuda, but ")
    assert "CUDA execution provider" in errors[0]["msg"] and errors[0]["device"] == "cuda"
    assert "Uvicorn running" not in output  # it never started serving
