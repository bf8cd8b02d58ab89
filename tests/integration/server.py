"""Start a REAL server (`python -m service`, uvicorn) on a free 127.0.0.1 port; stop with SIGTERM.

Reusable by every integration test (native, V2, client, docker)::

    from tests.integration.server import start_server

    with start_server({"FWS_MAX_BATCH_SIZE": "64"}) as server:   # waits until /v2/health/ready is 200
        httpx.post(f"{server.url}/v1/retrieve", json={"sequence": "a1??a"})
        tritonclient.grpc.InferenceServerClient(server.grpc_target)  # gRPC on its own free port
    # leaving the block sends SIGTERM and waits for exit (server.returncode)

`env` holds FWS_* settings (strings); it is layered over the current environment with FWS_* variables of
the calling process removed, so a developer's shell cannot change what a test sees. The model repository
defaults to `default_repository()` (the bundled `model_repository/`, or `$FWS_TEST_REPOSITORY`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from contract import CONFIG_FILENAME, read_config_pbtxt
from contract.model_config import write_config_pbtxt

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_repository() -> Path:
    """The model repository tests serve: `$FWS_TEST_REPOSITORY` if set, else the bundled one."""
    override = os.environ.get("FWS_TEST_REPOSITORY")
    return Path(override) if override else REPO_ROOT / "model_repository"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerError(RuntimeError):
    """The server exited or never became ready; the message carries the tail of its log."""


class Server:
    """A running `python -m service` subprocess. Use as a context manager, or call `stop()`."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path, env: dict[str, str]):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # gRPC (service/grpc/) listens on its own port unless the test turned it off.
        self.grpc_port = int(env.get("FWS_GRPC_PORT", "0"))
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        self.env = env
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0, path: str = "/v2/health/ready") -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerError(
                        f"server exited with {self.proc.returncode} before ready:\n{self.logs()[-4000:]}"
                    )
                try:
                    if client.get(self.url + path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise ServerError(f"server not ready at {self.url}{path} after {timeout}s:\n{self.logs()[-4000:]}")

    def terminate(self) -> None:
        """Send SIGTERM without waiting (for drain tests)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after `timeout`), return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        return self.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def start_server(
    env: dict[str, str] | None = None,
    *,
    repository: Path | str | None = None,
    wait: bool = True,
    ready_timeout: float = 60.0,
    ready_path: str = "/v2/health/ready",
    args: Sequence[str] = (),
) -> Server:
    """Launch `python -m service [args]` on a free port with FWS_* `env`; by default wait for `ready_path`
    200."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FWS_")}
    child_env.update(
        {
            "FWS_HOST": "127.0.0.1",
            "FWS_PORT": str(port),
            "FWS_GRPC_PORT": str(free_port()),  # never Triton's 8001: tests and servers run side by side
            "FWS_MODEL_REPOSITORY": str(repository or default_repository()),
            "FWS_INFERENCE_THREADS": "1",
            "FWS_ORT_INTRA_OP_THREADS": "1",  # the CI machine has 2 cores shared with the test process
            "PYTHONUNBUFFERED": "1",
        }
    )
    child_env.update(env or {})
    fd, name = tempfile.mkstemp(prefix="fws-server-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            cwd=REPO_ROOT,
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log_path, child_env)
    if wait:
        try:
            server.wait_ready(ready_timeout, ready_path)
        except BaseException:
            server.stop(5)
            raise
    return server


def repository_with(
    root: Path, source: Path | None = None, names: Sequence[str] | None = None, **config: Any
) -> Path:
    """A copy of `source` (default: the bundled repository) under `root`, each bucket's config.pbtxt with
    `config` fields changed (BucketConfig names: max_batch_size=1, max_queue_delay_us=..., ...).

    The model's config.pbtxt, not an FWS_ setting, decides its batching (server.py's `env` only sets the
    defaults for what a config leaves out).
    """
    source = source or default_repository()
    for model_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        if names is not None and model_dir.name not in names:
            continue
        shutil.copytree(model_dir, root / model_dir.name)
        if config:
            edit_config(root / model_dir.name, **config)
    return root


def edit_config(model_dir: Path, **changes: Any) -> None:
    """Rewrite `model_dir`/config.pbtxt with `changes` (BucketConfig fields); the stream model is skipped."""
    path = model_dir / CONFIG_FILENAME
    current = read_config_pbtxt(path)
    if current.stateful:
        return
    path.write_text(write_config_pbtxt(dataclasses.replace(current, **changes)))
