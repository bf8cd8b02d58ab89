"""The one Settings object of the service (environment variables with the ``FWS_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The bundled default model, next to the package in a checkout (and in the Docker image).
DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"


class Settings(BaseSettings):
    """Everything an operator can tune. Read once at start-up and injected (``app.state.settings``)."""

    model_config = SettingsConfigDict(env_prefix="FWS_", protected_namespaces=(), extra="ignore")

    # Where and what to serve.
    model_repository: Path = Field(
        default=DEFAULT_REPOSITORY, description="Triton-style model repository to load."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(
        default=1,
        ge=1,
        description="Worker processes of `python -m service`, one port; keep workers x ort_intra_op_threads"
        " <= cores.",
    )
    default_family: str = Field(
        default="fastweights", description="Model family the native API uses by default."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA only when a GPU is really present, else CPU."
    )

    # The Open Inference Protocol over gRPC (service/grpc/): same process, event loop, models and limits.
    grpc_enabled: bool = Field(default=True, description="Serve gRPC beside HTTP (false: HTTP only).")
    grpc_port: int = Field(default=8001, ge=0, le=65535, description="gRPC port (Triton's default).")
    grpc_max_message_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message received or sent; beyond: refused.",
    )
    grpc_max_concurrent_streams: int = Field(
        default=128, ge=1, description="Concurrent gRPC calls (HTTP/2 streams) per client connection."
    )
    grpc_max_concurrent_rpcs: int = Field(
        default=1024,
        ge=1,
        description="Concurrent gRPC calls in the whole server; beyond: RESOURCE_EXHAUSTED.",
    )

    # Dynamic batching (per model version, i.e. per length bucket). Server-wide DEFAULTS: a model's
    # config.pbtxt (max_batch_size, dynamic_batching) wins where it sets a value (service/serving_config.py).
    max_batch_size: int = Field(default=256, ge=1, description="Most ROWS in one onnxruntime run.")
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        description="Extra wait for a fuller batch after the first queued row; 0 adds no latency.",
    )
    max_queue_rows: int = Field(default=4096, ge=1, description="Rows that may wait per model; beyond: 503.")
    request_timeout_s: float = Field(default=10.0, gt=0, description="Per-request deadline; past it: 504.")
    inference_threads: int = Field(
        default=1, ge=1, description="Executor threads that run onnxruntime sessions."
    )
    inline_max_rows: int = Field(
        default=256,
        ge=0,
        description="Runs of at most this many rows run on the event loop (no thread hand-off); 0: never."
        " The default (the default max_batch_size) runs every run there: the hand-off costs more CPU per"
        " request than the overlap it buys (measured, docs/benchmarks.md).",
    )
    ort_intra_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime intra-op threads (0 = its default)."
    )
    simulated_run_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        description="Testing/benchmark knob: extra sleep per onnxruntime run (simulates a slow model).",
    )

    # Request limits.
    fast_path: bool = Field(
        default=True,
        description="Serve the inference routes straight from ASGI (same answers, much less CPU per request);"
        " false: through FastAPI.",
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1, description="Larger request bodies get 413.")
    max_response_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="Largest V2 infer answer (estimated before it is built); larger: 400.",
    )
    max_batch_items: int = Field(default=1024, ge=1, description="Items per /v1/retrieve/batch request.")
    max_sequence_length: int = Field(
        default=256,
        ge=1,
        description="Characters (or pairs) accepted before parsing; longer inputs: too_long.",
    )

    # Limits at the HTTP edge, per connection (service/edge.py, docs/reliability.md).
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Request line and headers, in bytes; larger: 431 and close."
    )
    max_headers: int = Field(default=100, ge=1, description="Headers per request; more: 431 and close.")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Time from a request's first byte to its last header; past it: 408."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Time from a request's headers to the end of its body; past it: 408."
    )
    idle_timeout_s: float = Field(
        default=10.0, gt=0, description="A new connection that sends no request is closed after this long."
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        description="Open connections; one more evicts the longest-idle one, or gets 503 if none is idle.",
    )
    send_timeout_s: float = Field(
        default=30.0, gt=0, description="A client that does not read its answers for this long is cut off."
    )
    write_buffer_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Unsent answer bytes per connection before its requests stop being read.",
    )
    max_pipelined: int = Field(
        default=32,
        ge=1,
        description="Requests queued behind the one being answered; beyond: not read, connection closed.",
    )
    body_budget_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Request-body bytes all connections together may hold while they arrive; beyond: 503.",
    )

    # Memory sessions (/v1/sessions and V2 sequences of the stateful model; service/sessions/).
    sessions: bool = Field(default=True, description="Serve memory sessions when a stream model is loaded.")
    session_store: str = Field(
        default="memory",
        description="Where sessions live: 'memory' (this process) or 'redis://host:port/db' (shared).",
    )
    session_max: int = Field(default=10_000, ge=1, description="Sessions held at once; beyond: LRU eviction.")
    session_idle_ttl_s: float = Field(default=600.0, gt=0, description="A session idle this long expires.")
    session_max_pairs: int = Field(
        default=0, ge=0, description="Pairs per session (0: the stream model's capacity; never above it)."
    )
    session_max_bytes: int = Field(
        default=64 * 1024, ge=1, description="Stored bytes per session (state and pairs); beyond: refused."
    )

    # Security and operations.
    api_key: SecretStr | None = Field(
        default=None, description="When set, 'Authorization: Bearer <key>' is required."
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without the API key (for a Prometheus scraper on a trusted network).",
    )
    log_level: str = "info"
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="How long SIGTERM waits for in-flight requests."
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After sent with 503 responses.")
