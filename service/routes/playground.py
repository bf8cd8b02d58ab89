"""The playground page at `/`: type pairs, ask a key, see the answer and the fast memory's attention.

The page is package data (`service/playground/`: one HTML file, one stylesheet, one script module), served as
is: no build step, nothing from another origin. It is public, like /docs (`service.middleware.PUBLIC_PATHS`);
the API calls it makes carry the key the user types. Its Content-Security-Policy lets it load scripts and
styles and send requests to this origin only, and runs no inline script.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from starlette.responses import Response

# path -> (file in service/playground/, media type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground/playground.css": ("playground.css", "text/css; charset=utf-8"),
    "/playground/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # revalidate: a new release's page and script arrive together
}

router = APIRouter(include_in_schema=False)


@cache
def asset(name: str) -> bytes:
    """The bytes of one file of the page (read once)."""
    return (files("service") / "playground" / name).read_bytes()


def _serve(name: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(asset(name), media_type=media_type, headers=HEADERS)

    serve.__name__ = f"playground_{name.replace('.', '_')}"
    return serve


for _path, (_name, _media_type) in ASSETS.items():
    router.add_api_route(_path, _serve(_name, _media_type), methods=["GET"])
