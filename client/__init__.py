"""Batch scoring (`fastweights-score`, `python -m client`): REST API, or the V2 protocol over HTTP or gRPC.

Depends on the servers' APIs only (httpx, tqdm; grpcio and the generated stubs of `inference_grpc` for
`--protocol grpc`): never on the service, the model code or torch. The input grammar is the server's business;
the client moves rows, retries, keeps order and makes the output resumable.
"""

__version__ = "0.1.0"


def _import_httpx_without_its_cli() -> None:
    """httpx's `__init__` imports its command-line tool (click, rich, pygments: ~50 ms, 0.5 µs per row of a
    100k-row run) when those happen to be installed, and falls back to a stub when they are not. The client
    never uses it: import httpx with `httpx._main` marked missing, then unmark it (explicit imports work)."""
    import sys

    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # `import` raises ImportError for None
    try:
        import httpx  # noqa: F401
    finally:
        if sys.modules.get("httpx._main", 0) is None:
            del sys.modules["httpx._main"]


_import_httpx_without_its_cli()
