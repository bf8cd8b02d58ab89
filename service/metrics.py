"""Prometheus metrics, one registry per app (tests may build several apps in one process).

HTTP metrics are labelled by route TEMPLATE (``/v2/models/{model_name}/infer``), never by raw path, so a
client cannot explode their cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "fws_http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "fws_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "fws_batch_size_rows",
            "Rows per onnxruntime run (after dynamic batching).",
            ["model"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "fws_batch_size_requests",
            "Queued requests coalesced into one onnxruntime run.",
            ["model"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.queue_rows = Gauge(
            "fws_queue_depth_rows", "Rows waiting for an onnxruntime run.", ["model"], registry=r
        )
        self.queue_wait = Histogram(
            "fws_queue_wait_seconds",
            "Time from enqueue to the start of the run.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_time = Histogram(
            "fws_inference_duration_seconds",
            "Wall time of one onnxruntime run.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "fws_requests_rejected_total",
            "Requests not computed: queue_full, deadline, client_gone, shutting_down.",
            ["model", "reason"],
            registry=r,
        )
        self.model_ready = Gauge(
            "fws_model_ready", "1 when the model serves requests, else 0.", ["model"], registry=r
        )
        self.model_info = Gauge(
            "fws_model_info",
            "Loaded model version and the execution provider it really uses.",
            ["model", "version", "provider"],
            registry=r,
        )
        self.model_loads = Counter(
            "fws_model_loads_total", "Model load attempts by outcome.", ["model", "outcome"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
