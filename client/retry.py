"""Which failures are worth retrying and how long to wait: exponential backoff, jitter, Retry-After first.

Scoring is a pure function of the input, so resending a chunk is always safe.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field

# Transient: the server (or a proxy in front of it) is restarting, overloaded or timed out.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The request can never succeed as configured: stop the run instead of writing every row as an error.
FATAL_STATUSES = frozenset({401, 403, 404, 405})


class RunFailed(Exception):
    """The run cannot go on (servers unreachable after every retry, a refused API key, an unknown model...).
    Everything written so far is whole and in order: `--resume` continues from it."""


def classify(status: int) -> str:
    """'ok', 'retry', 'fatal', or 'split' (the request as a whole was refused: 400/413/422/500 and the
    like; split the chunk to find the rows at fault, a single row's refusal becomes that row's error)."""
    if status == 200:
        return "ok"
    if status in RETRY_STATUSES:
        return "retry"
    if status in FATAL_STATUSES:
        return "fatal"
    return "split"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass
class RetryPolicy:
    """Attempt n (0-based) waits `base * 2**n`, capped at `cap`, with "equal jitter": half of it fixed, half
    uniform random, so replicas retrying together spread out yet every wait keeps a floor. A server's
    Retry-After replaces the computed wait (capped at `max_retry_after`) plus a little jitter."""

    max_attempts: int = 12  # attempts in all, the first included
    base: float = 0.1
    cap: float = 10.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * (2.0**attempt))
        return ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after) + self.rng.uniform(
                0.0, min(self.base, retry_after / 4 + 1e-3)
            )
        return self.backoff(attempt)

    def should_retry(self, attempt: int) -> bool:
        """After the failed attempt number `attempt` (0-based), is there another one?"""
        return attempt + 1 < self.max_attempts
