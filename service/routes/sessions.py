"""Memory sessions over the native API (`/v1/sessions`): thin, the work is in `service.sessions.manager`.

GET    /v1/sessions                      -> {"enabled": true, "limits": {...}}
POST   /v1/sessions         {"pairs"?}   -> 201 info        (or {"sequence": "c9k8"})
POST   /v1/sessions/{id}/pairs {"pairs", "seq"} -> 200 info (exactly once: seq = the client's next number)
POST   /v1/sessions/{id}/query {"query", "top_k"?, "explain"?} -> the /v1/retrieve answer shape
GET    /v1/sessions/{id}                 -> info
DELETE /v1/sessions/{id}                 -> 204
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator
from starlette.responses import Response

from service.errors import ApiError, JSONResponse
from service.fastpath import RawRequest, RawResponse, fast_route, json_response
from service.routes.native import _answer_dict, json_body, validated
from service.schemas import ErrorResponse, RetrieveResponse, TopK
from service.sessions.manager import SessionManager, checked_pairs, pairs_of_sequence

bearer = HTTPBearer(auto_error=False, description="Only when the server runs with FWS_API_KEY.")
router = APIRouter(prefix="/v1/sessions", tags=["memory sessions"], dependencies=[Security(bearer)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {
        "model": ErrorResponse,
        "description": "session_not_found (says expired or evicted where known); sessions_not_served",
    },
    409: {"model": ErrorResponse, "description": "sequence_mismatch: the seq the session expects"},
    422: {"model": ErrorResponse, "description": "Invalid pairs, duplicate_key, too_many_pairs"},
    503: {"model": ErrorResponse, "description": "too_many_sessions, session_busy, sessions_unavailable"},
}
MAX_ID_LENGTH = 64
SessionId = Annotated[str, Path(description="The id `POST /v1/sessions` returned.", max_length=MAX_ID_LENGTH)]
Pairs = list[list[StrictStr]]


async def get_sessions(request: Request) -> SessionManager:
    return request.app.state.sessions


SessionsDep = Annotated[SessionManager, Depends(get_sessions)]


class _PairsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: Pairs | None = Field(default=None, description="[key, value] lists.", examples=[[["c", "9"]]])
    sequence: StrictStr | None = Field(
        default=None, description="The pairs as one string.", examples=["c9k8"]
    )

    @model_validator(mode="after")
    def _one_form(self) -> _PairsBody:
        if self.pairs is not None and self.sequence is not None:
            raise ValueError("give 'pairs' or 'sequence', not both")
        return self

    def checked(self) -> list[tuple[str, str]]:
        if self.sequence is not None:
            return pairs_of_sequence(self.sequence)
        return checked_pairs(self.pairs or [])


class CreateRequest(_PairsBody):
    """A new session, optionally with its first pairs."""

    model: StrictStr | None = Field(default=None, description="Model family (default: the server's).")


class AppendRequest(_PairsBody):
    """Pairs to append, with the client's sequence number for this append (0, 1, 2, ...)."""

    seq: StrictInt = Field(ge=0, description="The session's next_seq: a retry repeats it, a gap is refused.")

    @model_validator(mode="after")
    def _some_pairs(self) -> AppendRequest:
        if self.pairs is None and self.sequence is None:
            raise ValueError("give the pairs to append ('pairs' or 'sequence')")
        return self


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(description="The key to look up.", examples=["c"])
    top_k: TopK = 1
    explain: StrictBool = False


class SessionInfo(BaseModel):
    session_id: str
    model: str
    version: str
    num_pairs: int
    pairs: list[list[str]]
    next_seq: int
    max_pairs: int
    bytes: int
    created_at: str
    expires_at: str


@router.get(
    "", responses=_ERRORS, summary="Whether memory sessions are served here (404: not), and their limits"
)
async def sessions_status(sessions: SessionsDep) -> Any:
    return JSONResponse({"enabled": True, "limits": sessions.limits()})


@router.post("", status_code=201, response_model=SessionInfo, responses=_ERRORS, summary="Create a session")
async def create(sessions: SessionsDep, body: Annotated[CreateRequest | None, Body()] = None) -> Any:
    body = body or CreateRequest()
    return JSONResponse(await sessions.create(body.checked(), body.model), status_code=201)


@router.post("/{session_id}/pairs", response_model=SessionInfo, responses=_ERRORS, summary="Append pairs")
async def append(session_id: SessionId, body: AppendRequest, sessions: SessionsDep) -> Any:
    return JSONResponse(await handle_append(session_id, body, sessions))


async def handle_append(session_id: str, body: AppendRequest, sessions: SessionManager) -> dict[str, Any]:
    return await sessions.append(session_id, body.checked(), body.seq)


@router.post(
    "/{session_id}/query",
    response_model=RetrieveResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="Query a key (the session is not changed)",
)
async def query(session_id: SessionId, body: QueryRequest, sessions: SessionsDep) -> Any:
    return JSONResponse(await handle_query(session_id, body, sessions))


async def handle_query(session_id: str, body: QueryRequest, sessions: SessionManager) -> dict[str, Any]:
    answer = await sessions.query(session_id, body.query, body.top_k, body.explain)
    model = sessions.stream_model_named(answer.bucket)  # the session's own stream model (its family)
    out = _answer_dict(answer, body.top_k, body.explain)
    out.update(model=model.info.family, version=answer.version, bucket=answer.bucket, session_id=session_id)
    return out


@router.get("/{session_id}", response_model=SessionInfo, responses=_ERRORS, summary="Read a session")
async def read(session_id: SessionId, sessions: SessionsDep) -> Any:
    return JSONResponse(await sessions.read(session_id))


@router.delete("/{session_id}", status_code=204, responses=_ERRORS, summary="Delete a session")
async def delete(session_id: SessionId, sessions: SessionsDep) -> Response:
    await sessions.delete(session_id)
    return Response(status_code=204)


# ------------------------------------------------------------------------------------------ fast path
# Append and query are a session's steps: served from ASGI (service/fastpath.py) like /v1/retrieve, with the
# same answers as the routes above (tests/integration/test_sessions.py runs both ways).


def _session_id(request: RawRequest) -> str:
    session_id = request.params["session_id"]
    if len(session_id) > MAX_ID_LENGTH:  # what the FastAPI route's path validation refuses
        message = f"session_id: String should have at most {MAX_ID_LENGTH} characters"
        raise ApiError(422, "invalid_request", message, "session_id")
    return session_id


async def append_fast(request: RawRequest, state: Any) -> RawResponse:
    session_id = _session_id(request)
    body = validated(AppendRequest, json_body(request))
    return json_response(await handle_append(session_id, body, state.sessions))


async def query_fast(request: RawRequest, state: Any) -> RawResponse:
    session_id = _session_id(request)
    body = validated(QueryRequest, json_body(request))
    return json_response(await handle_query(session_id, body, state.sessions))


FAST_ROUTES = [
    fast_route("POST", "/v1/sessions/{session_id}/pairs", append_fast),
    fast_route("POST", "/v1/sessions/{session_id}/query", query_fast),
]
