"""Container health check: exit 0 when the service's V2 readiness endpoint answers 200, else 1.

Used by the image's HEALTHCHECK (and so by docker-compose); Kubernetes probes the same endpoint over HTTP.
Reads the service's own settings (FWS_HOST, FWS_PORT) so it follows any override. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

READY_PATH = "/v2/health/ready"
TIMEOUT_S = 2.0  # below the HEALTHCHECK --timeout, so a hung server reads as unhealthy, not as a killed probe
_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "localhost"}


def ready_url(environ: dict[str, str]) -> str:
    host = environ.get("FWS_HOST", "0.0.0.0")
    port = environ.get("FWS_PORT", "8000")
    if host in _WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    return f"http://{host}:{port}{READY_PATH}"


def main() -> int:
    url = ready_url(dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (503 while loading) is a URLError
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
