"""Health probes (KServe/Triton paths). They read flags only: never wait behind inference."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.errors import JSONResponse

router = APIRouter(tags=["health"])


def is_ready(request: Request) -> bool:
    return serving(request.app.state)


def serving(state: Any) -> bool:
    """Ready for inference: loaded and warmed up, at least one model, not draining (HTTP and gRPC alike)."""
    return (
        bool(getattr(state, "ready", False))
        and not getattr(state, "draining", False)
        and state.registry.ready
    )


# HEAD too (load balancers and uptime checks probe with it); left out of the OpenAPI document, which
# describes each operation's body.
@router.get("/v2/health/live", summary="200 while the process is up")
@router.head("/v2/health/live", include_in_schema=False)
async def live() -> Response:
    return JSONResponse({"live": True})


@router.head("/v2/health/ready", include_in_schema=False)
@router.get(
    "/v2/health/ready",
    summary="200 once models are loaded and warmed up; 503 before, while draining, or with no model",
    responses={503: {"description": "Not ready"}},
)
async def ready(request: Request) -> Response:
    if is_ready(request):
        return JSONResponse({"ready": True})
    reason = (
        "shutting down" if getattr(request.app.state, "draining", False) else "no model loaded and warmed up"
    )
    return JSONResponse({"ready": False, "error": reason}, status_code=503)
