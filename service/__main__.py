"""`python -m service` / `fastweights-serve`: serve the model repository with uvicorn.

Settings come from `FWS_*` environment variables; the flags below override the most common ones.
SIGTERM (or Ctrl-C) drains: the listener closes, readiness turns 503, in-flight requests finish, exit 0.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

import uvicorn

from service.config import Settings
from service.logs import configure_logging, uvicorn_log_config
from service.main import create_app
from service.transport import ServiceHttpProtocol


class _DrainingServer(uvicorn.Server):
    """Marks the app as draining the moment a shutdown signal arrives (readiness answers 503 from then on)."""

    app_state: Any = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.app_state is not None:
            self.app_state.draining = True
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after shutdown (exit status -15); a completed drain on
            # SIGTERM is the normal way to stop, so the process exits 0.
            self._captured_signals[:] = [s for s in self._captured_signals if s != signal.SIGTERM]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastweights-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, help="model repository (FWS_MODEL_REPOSITORY)")
    parser.add_argument("--host", help="bind address (FWS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (FWS_PORT, default 8000)")
    parser.add_argument("--log-level", help="debug, info, warning, error (FWS_LOG_LEVEL)")
    args = parser.parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "model_repository": args.repository,
            "host": args.host,
            "port": args.port,
            "log_level": args.log_level,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        server_header=False,
        lifespan="on",
        http=ServiceHttpProtocol,  # hot routes without ASGI, one write per response (service/transport.py)
        # Nothing here reads the client address (the logs do not record it), so uvicorn's X-Forwarded-For
        # rewriting would be work on every request for no effect.
        proxy_headers=False,
    )
    server = _DrainingServer(config)
    server.app_state = app.state
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    server.run()
    return 0 if server.started else 3  # 3: uvicorn's "startup failed"


if __name__ == "__main__":
    raise SystemExit(main())
