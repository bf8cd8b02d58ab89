"""Prometheus metrics, one registry per app (tests may build several apps in one process).

HTTP metrics are labelled by route TEMPLATE (``/v2/models/{model_name}/infer``), never by raw path, so a
client cannot explode their cardinality.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


# The metrics updated on every request are plain objects read by a collector at scrape time:
# prometheus_client's own Counter and Histogram take a lock per value and scan the buckets on every call,
# a few microseconds that added up on a lone request (measured, docs/benchmarks.md). They are updated only
# from the event loop's thread (the batcher records runs there, after the executor returns), so they need
# no lock. The exposition is the text prometheus_client writes for its own types, less `_created`.


class CountChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket with value <= le
        self.sum += value


Child = TypeVar("Child", CountChild, HistogramChild)


class _LoopMetric(Generic[Child]):
    """A labelled metric family: label values -> child, made on first use by `make_child`."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], make_child: Callable[[], Child]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._make_child: Callable[[], Child] = make_child
        self._children: dict[tuple[str, ...], Child] = {}

    def labels(self, *values: str) -> Child:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
            child = self._children[key] = self._make_child()
        return child


class LoopCounter(_LoopMetric[CountChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames, CountChild)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        return family


class LoopHistogram(_LoopMetric[HistogramChild]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        super().__init__(name, documentation, labelnames, lambda: HistogramChild(bounds))
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]

    def family(self) -> Metric:
        family = Metric(self.name, self.documentation, "histogram")
        for values, child in list(self._children.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            cumulative = 0
            for le, count in zip(self._le, list(child.counts), strict=True):
                cumulative += count
                family.add_sample(f"{self.name}_bucket", {**labels, "le": le}, cumulative)
            family.add_sample(f"{self.name}_count", labels, cumulative)
            family.add_sample(f"{self.name}_sum", labels, child.sum)
        return family


class _LoopCollector:
    def __init__(self, metrics: Sequence[LoopCounter | LoopHistogram]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for m in self._metrics:
            yield m.family()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The standard collectors a Prometheus user expects next to ours: process_* (CPU, memory, open files,
        # start time) and python_* (version, GC). Each reads the process that serves the scrape: with
        # several workers, one worker per scrape (docs/deployment.md).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.http_requests = LoopCounter(
            "fws_http_requests", "HTTP requests by route template and status.", ["method", "route", "status"]
        )
        self.http_latency = LoopHistogram(
            "fws_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ["method", "route", "status"],
            LATENCY_BUCKETS,
        )
        self.grpc_requests = LoopCounter(
            "fws_grpc_requests", "gRPC calls by method and status code.", ["method", "code"]
        )
        self.grpc_latency = LoopHistogram(
            "fws_grpc_request_duration_seconds",
            "gRPC call latency by method and status code (a stream: each message it answers).",
            ["method", "code"],
            LATENCY_BUCKETS,
        )
        self.batch_rows = LoopHistogram(
            "fws_batch_size_rows",
            "Rows per onnxruntime run (after dynamic batching).",
            ["model"],
            ROW_BUCKETS,
        )
        self.batch_requests = LoopHistogram(
            "fws_batch_size_requests",
            "Queued requests coalesced into one onnxruntime run.",
            ["model"],
            ROW_BUCKETS,
        )
        # Read at scrape time from each batcher (`set_function`): nothing to update per request.
        self.queue_rows = Gauge(
            "fws_queue_depth_rows", "Rows waiting for an onnxruntime run.", ["model"], registry=r
        )
        self.queue_wait = LoopHistogram(
            "fws_queue_wait_seconds", "Time from enqueue to the start of the run.", ["model"], LATENCY_BUCKETS
        )
        self.inference_time = LoopHistogram(
            "fws_inference_duration_seconds", "Wall time of one onnxruntime run.", ["model"], LATENCY_BUCKETS
        )
        r.register(
            _LoopCollector(
                [
                    self.http_requests,
                    self.http_latency,
                    self.grpc_requests,
                    self.grpc_latency,
                    self.batch_rows,
                    self.batch_requests,
                    self.queue_wait,
                    self.inference_time,
                ]
            )
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
