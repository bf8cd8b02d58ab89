"""What must never appear in a response body: stack traces, source or file-system paths, exception names."""

from __future__ import annotations

import re

_LEAK = re.compile(
    r"Traceback \(most recent call last\)"
    r"|File \"[^\"]+\", line \d+"
    r"|/(?:work|home|usr|opt|tmp|root|site-packages)/"
    r"|\.py\b"
    r"|\b[A-Za-z]+(?:Error|Exception): "
    r"|onnxruntime\.capi"
)


def find_leak(body: str) -> str | None:
    m = _LEAK.search(body)
    return None if m is None else body[max(0, m.start() - 60) : m.end() + 60]


def assert_no_leak(body: str) -> None:
    leak = find_leak(body)
    assert leak is None, f"error body leaks internals: ...{leak}..."
