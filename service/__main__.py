"""`python -m service` / `fastweights-serve`: serve the model repository with uvicorn.

Settings come from `FWS_*` environment variables; the flags below override the most common ones.
`--workers N` (`FWS_WORKERS`) runs N worker processes on one port (size: workers x FWS_ORT_INTRA_OP_THREADS
<= cores, docs/deployment.md). SIGTERM (or Ctrl-C) drains: the listener closes, readiness turns 503,
in-flight requests finish, exit 0. `FWS_DEVICE=cuda` where CUDA cannot be used stops the start (exit 2).
Each process also serves the Open Inference Protocol over gRPC (service/grpc/, `FWS_GRPC_PORT`, default 8001;
off with `FWS_GRPC_ENABLED=false`); a gRPC port it cannot bind fails the start (exit 3).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from service.config import Settings
from service.logs import configure_logging
from service.preflight import check_device
from service.providers import DeviceUnavailableError, quiet_onnxruntime_log
from service.workers import serve_one, serve_workers

log = logging.getLogger("service")

DEVICE_UNAVAILABLE = 2  # the exit status when FWS_DEVICE=cuda cannot be met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastweights-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, help="model repository (FWS_MODEL_REPOSITORY)")
    parser.add_argument("--host", help="bind address (FWS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (FWS_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (FWS_WORKERS, default 1)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (FWS_GRPC_PORT, default 8001)")
    parser.add_argument("--log-level", help="debug, info, warning, error (FWS_LOG_LEVEL)")
    args = parser.parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "model_repository": args.repository,
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "grpc_port": args.grpc_port,
            "log_level": args.log_level,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    quiet_onnxruntime_log(settings.log_level)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        check_device(settings)
    except DeviceUnavailableError as exc:
        log.error(str(exc), extra={"device": settings.device})
        return DEVICE_UNAVAILABLE
    if settings.workers == 1:
        return serve_one(settings)
    # Each worker process reads its settings from the environment: the flags go there too.
    for name, value in overrides.items():
        os.environ[f"FWS_{name.upper()}"] = str(value)
    return serve_workers(settings)


if __name__ == "__main__":
    raise SystemExit(main())
