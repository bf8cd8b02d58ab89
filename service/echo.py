"""How much of a client's own input an error message may echo back.

An error that quotes what it refuses helps the client, but the input is the client's to size: a 1 MB tensor
name must not come back in a 1 MB error. Every echo goes through `quoted` (a value) or `clip` (text); the
error renderer (`service.errors.error_body`) clips whole messages as a last line of defence.
"""

from __future__ import annotations

from typing import Any

ECHO_CHARS = 100  # of one echoed value
MESSAGE_CHARS = 500  # of a whole error message


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def quoted(value: Any, limit: int = ECHO_CHARS) -> str:
    """repr() of a client's value for an error message, clipped."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # repr of a huge string would be built whole first
        return f"{value!r}... ({limit}+ characters)"
    return clip(repr(value), limit)
