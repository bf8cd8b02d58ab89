"""What the service's HTTP protocol (`service.transport`, `service.edge`) needs from uvicorn's internals.

The protocol subclasses uvicorn's httptools protocol and reads and sets its per-connection state, none of
which is public API. pyproject.toml pins uvicorn to the range this was read from and tested on
(`SUPPORTED`); `missing_features()` lists what an installed uvicorn lacks, and a test
(tests/unit/test_uvicorn_support.py) fails with that list, so an upgrade that moves these parts is caught
before it serves a request.
"""

from __future__ import annotations

import asyncio
from typing import Any

# >= 0.45: Config.reset_contextvars (FastPathExchange.start reads it). < 0.56: the newest release tested.
SUPPORTED = ">=0.45,<0.56"

# Attributes of an HttpToolsProtocol instance the service's protocol reads or calls.
PROTOCOL_ATTRIBUTES = (
    "config",
    "app",
    "loop",
    "parser",
    "url",
    "headers",
    "expect_100_continue",
    "limit_concurrency",
    "root_path",
    "server_state",
    "connections",
    "tasks",
    "cycle",
    "pipeline",
    "flow",
    "transport",
    "connection_made",
    "connection_lost",
    "data_received",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "shutdown",
    "pause_writing",
    "resume_writing",
)
# Attributes of a RequestResponseCycle (uvicorn's per-request state) that the protocol reads or sets.
CYCLE_ATTRIBUTES = ("response_started", "response_complete", "keep_alive", "disconnected", "message_event")
FLOW_ATTRIBUTES = ("write_paused", "pause_reading", "resume_reading", "pause_writing", "resume_writing")
SERVER_STATE_ATTRIBUTES = ("default_headers", "connections", "tasks")


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    pass


def missing_features() -> list[str]:
    """What the installed uvicorn lacks of what the protocol uses (empty when all is there)."""
    try:
        from uvicorn.config import Config
        from uvicorn.protocols.http import httptools_impl
        from uvicorn.protocols.http.flow_control import FlowControl
        from uvicorn.server import ServerState
    except ImportError as exc:
        return [f"a module: {exc}"]
    missing = [
        f"httptools_impl.{name}"
        for name in ("HttpToolsProtocol", "RequestResponseCycle", "STATUS_LINE")
        if not hasattr(httptools_impl, name)
    ]
    if missing:
        return missing
    config = Config(_app, http="httptools", lifespan="off")
    if not hasattr(config, "reset_contextvars"):
        missing.append("Config.reset_contextvars")
    state = ServerState()
    missing += [f"ServerState.{a}" for a in SERVER_STATE_ATTRIBUTES if not hasattr(state, a)]
    loop = asyncio.new_event_loop()
    try:
        protocol = httptools_impl.HttpToolsProtocol(config, state, {}, _loop=loop)
        protocol.on_message_begin()  # (what sets the per-request state: url, headers, ...)
        missing += [f"HttpToolsProtocol.{a}" for a in PROTOCOL_ATTRIBUTES if not hasattr(protocol, a)]
        null: Any = _NullTransport()
        flow = FlowControl(null)
        missing += [f"FlowControl.{a}" for a in FLOW_ATTRIBUTES if not hasattr(flow, a)]
        cycle = httptools_impl.RequestResponseCycle(
            scope=null,
            transport=null,
            flow=flow,
            logger=protocol.logger,
            access_logger=protocol.access_logger,
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=True,
            on_response=lambda: None,
        )
        missing += [f"RequestResponseCycle.{a}" for a in CYCLE_ATTRIBUTES if not hasattr(cycle, a)]
    except TypeError as exc:  # a constructor that changed its signature
        missing.append(f"a constructor's signature: {exc}")
    finally:
        loop.close()
    return missing


class _NullTransport:
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...
