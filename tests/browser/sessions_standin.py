"""A stand-in for the memory-session API, in front of a real server, for the playground's session panel.

The page talks to `/v1/sessions...` in the shape agreed for the service (GET /v1/sessions, POST /v1/sessions,
POST .../pairs with `seq`, POST .../query, GET and DELETE .../{id}; errors `{"error": {code, message,
field}}`). Until a server serves those routes, the panel is tested against this stand-in: an ASGI app on its
own 127.0.0.1 port that answers `/v1/sessions...` from an in-memory store, computes every session answer with
the REAL server (`POST /v1/retrieve` over the session's pairs, so values and attention are the model's), and
passes every other request (the page, its script, /v1/retrieve) through to the real server unchanged.
`sessions=False` answers `/v1/sessions` with 404, as a server without sessions does.

It checks only what the page's behaviour depends on (sequence numbers, one-letter keys, one-digit values,
duplicate keys, unknown sessions); it is not a model of the real implementation's limits or memory decay.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tests.integration.server import free_port

_SESSION = re.compile(r"^/v1/sessions/(?P<id>[^/]+)(?P<rest>/pairs|/query)?$")
_FORWARDED = ("authorization", "content-type", "x-request-id")
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection", "keep-alive")


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status)


class SessionsStandIn:
    def __init__(self, upstream: str, sessions: bool = True):
        self.upstream = upstream
        self.sessions = sessions
        self.store: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.calls: list[tuple[str, str]] = []  # (method, path) of every session call, for the tests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request = Request(scope, receive)
        path = request.url.path
        if path == "/v1/sessions" or path.startswith("/v1/sessions/"):
            self.calls.append((request.method, path))
            response = (
                await self._sessions(request, path)
                if self.sessions
                else _error(404, "not_found", "Not Found")
            )
        else:
            response = await self._forward(request, path, await request.body())
        await response(scope, receive, send)

    async def _forward(self, request: Request, path: str, body: bytes) -> Response:
        headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
            r = await client.request(request.method, path, content=body, headers=headers)
        out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP_BY_HOP}
        return Response(r.content, status_code=r.status_code, headers=out)

    async def _sessions(self, request: Request, path: str) -> Response:
        if path == "/v1/sessions":
            if request.method == "GET":
                return JSONResponse({"enabled": True, "limits": {"max_pairs": 12, "idle_ttl_s": 600.0}})
            if request.method == "POST":
                sid = f"s{next(self._ids)}"
                self.store[sid] = {"pairs": [], "next_seq": 0}
                return JSONResponse(self._info(sid), status_code=201)
            return _error(405, "method_not_allowed", "method not allowed")
        m = _SESSION.match(path)
        if m is None or m["id"] not in self.store:
            return _error(404, "session_not_found", "no such session (expired or deleted)")
        sid, rest = m["id"], m["rest"]
        if rest is None and request.method == "GET":
            return JSONResponse(self._info(sid))
        if rest is None and request.method == "DELETE":
            del self.store[sid]
            return Response(status_code=204)
        if rest == "/pairs" and request.method == "POST":
            return self._append(sid, await request.json())
        if rest == "/query" and request.method == "POST":
            body = await request.json()
            query = {"pairs": self.store[sid]["pairs"], "query": body.get("query")}
            query |= {k: body[k] for k in ("top_k", "explain") if k in body}
            return await self._forward(request, "/v1/retrieve", JSONResponse(query).body)
        return _error(405, "method_not_allowed", "method not allowed")

    def _append(self, sid: str, body: dict[str, Any]) -> Response:
        session = self.store[sid]
        if body.get("seq") != session["next_seq"]:
            return _error(
                409,
                "sequence_mismatch",
                f"seq {body.get('seq')!r} but the session expects {session['next_seq']}",
                "seq",
            )
        stored = {k for k, _ in session["pairs"]}
        for i, (key, value) in enumerate(body.get("pairs", [])):
            if not (len(key) == 1 and "a" <= key <= "z"):
                return _error(
                    422, "malformed", f"pair {i}: key must be one letter a-z, got {key!r}", f"pairs[{i}]"
                )
            if not (len(value) == 1 and value.isdigit()):
                return _error(
                    422, "malformed", f"pair {i}: value must be one digit 0-9, got {value!r}", f"pairs[{i}]"
                )
            if key in stored:
                return _error(422, "duplicate_key", f"key {key!r} is already in the session", f"pairs[{i}]")
            session["pairs"].append([key, value])
            stored.add(key)
        session["next_seq"] += 1
        return JSONResponse(self._info(sid))

    def _info(self, sid: str) -> dict[str, Any]:
        session = self.store[sid]
        return {
            "session_id": sid,
            "num_pairs": len(session["pairs"]),
            "next_seq": session["next_seq"],
            "expires_at": "2099-01-01T00:00:00Z",
        }


@contextmanager
def serve_standin(upstream: str, sessions: bool = True) -> Iterator[tuple[str, SessionsStandIn]]:
    """Run the stand-in on a free 127.0.0.1 port in a thread; yields (its URL, the app)."""
    app = SessionsStandIn(upstream, sessions)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the session stand-in did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)
