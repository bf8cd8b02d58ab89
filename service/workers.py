"""Running the service under uvicorn: one process, or N worker processes sharing one listening socket.

One worker is one Python process with one event loop: it serves one core's worth of requests at most (the
GIL). `--workers N` (`FWS_WORKERS`) starts N of them behind uvicorn's supervisor; each loads every model
and warms it up, and the kernel spreads new connections over them. Size it so that
`workers x FWS_ORT_INTRA_OP_THREADS <= cores` (docs/deployment.md).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from service.config import Settings
from service.logs import uvicorn_log_config
from service.transport import ServiceHttpProtocol

log = logging.getLogger("service")

APP_FACTORY = "service.main:create_served_app"  # with gRPC, in every worker


class DrainingServer(uvicorn.Server):
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


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """The service's uvicorn configuration: `app` is an app, or the factory's import string (workers)."""
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=settings.workers if isinstance(app, str) else None,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        server_header=False,
        lifespan="on",
        http=ServiceHttpProtocol,  # fast routes without ASGI, one write per response (service/transport.py)
        # Nothing here reads the client address (the logs do not record it), so uvicorn's X-Forwarded-For
        # rewriting would be work on every request for no effect.
        proxy_headers=False,
    )


def serve_one(settings: Settings) -> int:
    """Serve in this process until a shutdown signal has drained it; the exit status."""
    from service.main import create_app

    app = create_app(settings, serve_grpc=True)
    server = DrainingServer(uvicorn_config(settings, app))
    server.app_state = app.state
    server.run()
    return 0 if server.started else STARTUP_FAILURE


def serve_workers(settings: Settings) -> int:
    """Serve with `settings.workers` processes; the exit status (0 after SIGTERM/SIGINT drained them all).

    Each worker builds its app with `service.main:create_app()` from the environment, so every setting must
    be an `FWS_*` variable by now (`python -m service` exports its flags). SIGTERM to this supervisor is
    passed to every worker, which drains like a single server (`drain_on_signals`).
    """
    config = uvicorn_config(settings, APP_FACTORY)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        log.error("a worker failed to start: stopped", extra={"workers": failed})
        return STARTUP_FAILURE
    return 0


def drain_on_signals(state: Any) -> None:
    """In a worker process, set `state.draining` when SIGTERM or SIGINT arrives, then let uvicorn handle it.

    uvicorn's supervisor makes each worker a plain `uvicorn.Server`, whose signal handlers are in place before
    the app's lifespan starts: those are wrapped here (and restored by uvicorn when it stops). Nothing else
    is touched: a `DrainingServer` already drains, and other handlers (a test runner's) are not uvicorn's.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        server = getattr(previous, "__self__", None)
        if isinstance(server, uvicorn.Server) and not isinstance(server, DrainingServer):
            signal.signal(sig, _draining_handler(state, previous))


def _draining_handler(state: Any, previous: Any) -> Any:
    def handler(sig: int, frame: Any) -> None:
        state.draining = True
        previous(sig, frame)

    return handler
