"""The typed errors of memory sessions: `ApiError`s, so every path answers them in its own shape
(native `{"error": {"code", "message", "field"}}`, V2 `{"error": "message"}`) through `service.errors`."""

from __future__ import annotations

from service.errors import ApiError


class SessionError(ApiError):
    """Base of the session errors (status, code, message, field)."""


class SessionNotFoundError(SessionError):
    def __init__(self, session_id: str, reason: str | None = None):
        why = {
            "expired": "it expired (idle longer than the server's session TTL)",
            "evicted": "it was evicted (the server held its maximum of sessions; least recently used first)",
            "deleted": "it was deleted",
        }.get(reason or "", "no such session on this server")
        super().__init__(404, "session_not_found", f"session {session_id!r} not found: {why}", "session_id")
        self.reason = reason


class SequenceMismatchError(SessionError):
    """An append whose sequence number is not the one the session expects (a gap, or out of order)."""

    def __init__(self, session_id: str, got: int, expected: int, detail: str = ""):
        message = f"session {session_id!r} expects seq {expected}, got {got}" + (
            f": {detail}" if detail else ""
        )
        super().__init__(409, "sequence_mismatch", message, "seq")
        self.expected = expected


class SessionFullError(SessionError):
    """Past the pairs a session may hold (the stream model's capacity, or FWS_SESSION_MAX_PAIRS)."""

    def __init__(self, held: int, adding: int, limit: int, field: str = "pairs"):
        message = (
            f"the session holds {held} pairs and this adds {adding}: at most {limit} pairs per session "
            "(the served model's capacity)"
        )
        super().__init__(422, "too_many_pairs", message, field)


class SessionTooLargeError(SessionError):
    def __init__(self, size: int, limit: int):
        super().__init__(
            422, "session_too_large", f"the session would take {size} bytes; the limit is {limit} per session"
        )


class TooManySessionsError(SessionError):
    def __init__(self, limit: int, retry_after_s: int):
        message = f"{limit} sessions are held and none is idle to evict; retry later"
        super().__init__(503, "too_many_sessions", message, None, {"Retry-After": str(retry_after_s)})


class SessionBusyError(SessionError):
    """A shared-store update lost its compare-and-set too many times in a row (replicas racing)."""

    def __init__(self, session_id: str, retry_after_s: int):
        message = f"session {session_id!r} is being changed by another request; retry"
        super().__init__(503, "session_busy", message, "session_id", {"Retry-After": str(retry_after_s)})


class SessionsUnavailableError(SessionError):
    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(503, "sessions_unavailable", message, None, {"Retry-After": str(retry_after_s)})


class SessionsNotServedError(SessionError):
    """No stream model for this family here: the server serves no sessions for it."""

    def __init__(self, family: str):
        message = f"no memory sessions for model {family!r} on this server (it has no {family}_stream model)"
        super().__init__(404, "sessions_not_served", message, "model")
