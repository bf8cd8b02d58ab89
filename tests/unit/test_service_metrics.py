"""The event-loop metrics write what prometheus_client's own types write for the same observations."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from service.metrics import LATENCY_BUCKETS, ROW_BUCKETS, LoopCounter, LoopHistogram, Metrics, _LoopCollector


def _samples(text: bytes) -> dict[str, float]:
    """Sample line -> value, without comments and prometheus_client's `_created` timestamps."""
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("#") or "_created" in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


@pytest.mark.parametrize("buckets", [LATENCY_BUCKETS, ROW_BUCKETS])
def test_a_loop_histogram_exposes_the_same_samples_as_prometheus_clients(buckets: tuple[float, ...]) -> None:
    rng = random.Random(5)
    values = [rng.choice([*buckets, 0.0, 1e9]) for _ in range(50)]  # every bound itself, below and above
    values += [rng.uniform(0, buckets[-1] * 1.2) for _ in range(500)]
    reference, ours = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram("h", "doc", ["model", "status"], buckets=buckets, registry=reference)
    mine = LoopHistogram("h", "doc", ["model", "status"], buckets)
    ours.register(_LoopCollector([mine]))
    for i, v in enumerate(values):
        labels = ("a" if i % 3 else "b", str(200 + i % 2))
        theirs.labels(*labels).observe(v)
        mine.labels(*labels).observe(v)
    expected, got = _samples(generate_latest(reference)), _samples(generate_latest(ours))
    assert got.keys() == expected.keys() and len(got) == 4 * (len(buckets) + 3)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_a_loop_counter_exposes_the_same_samples_as_prometheus_clients() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    theirs = Counter("c", "doc", ["route", "status"], registry=reference)
    mine = LoopCounter("c", "doc", ["route", "status"])
    ours.register(_LoopCollector([mine]))
    for i in range(30):
        theirs.labels("/x", str(i % 4)).inc()
        mine.labels("/x", str(i % 4)).inc()
    theirs.labels("/y", "1").inc(2.5)
    mine.labels("/y", "1").inc(2.5)
    assert _samples(generate_latest(ours)) == _samples(generate_latest(reference))


def test_labels_must_match_the_declared_names() -> None:
    counter = LoopCounter("c", "doc", ["route", "status"])
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("/x")


def test_the_service_metrics_render_every_family_once_with_its_help_line() -> None:
    metrics = Metrics()
    metrics.http_latency.labels("POST", "/v1/retrieve", "200").observe(0.002)
    metrics.http_requests.labels("POST", "/v1/retrieve", "200").inc()
    metrics.queue_rows.labels("m").set_function(lambda: 3)
    text = metrics.render().decode()
    for name in ("fws_http_requests_total", "fws_http_request_duration_seconds", "fws_queue_depth_rows"):
        assert text.count(f"# HELP {name} ") == 1, name
    samples = _samples(metrics.render())
    assert samples['fws_http_requests_total{method="POST",route="/v1/retrieve",status="200"}'] == 1
    assert samples['fws_queue_depth_rows{model="m"}'] == 3


def test_the_standard_process_and_python_collectors_sit_next_to_the_services_own() -> None:
    import os

    import psutil

    samples = _samples(Metrics().render())
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        'python_gc_collections_total{generation="0"}',
    ):
        assert name in samples, name
    assert any(k.startswith("python_info{") for k in samples)
    assert samples["process_start_time_seconds"] == pytest.approx(
        psutil.Process(os.getpid()).create_time(), abs=2
    )
    # Two apps in one process (tests do that) each have their own registry: no duplicate-name error.
    assert "process_open_fds" in _samples(Metrics().render())


def test_metrics_need_the_api_key_unless_made_public(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    guarded = create_app(Settings(model_repository=tmp_path, api_key="k"))
    public = create_app(Settings(model_repository=tmp_path, api_key="k", metrics_public=True))
    with TestClient(guarded) as g, TestClient(public) as p:
        assert g.get("/metrics").status_code == 401
        assert g.get("/metrics", headers={"authorization": "Bearer k"}).status_code == 200
        answer = p.get("/metrics")
        assert answer.status_code == 200 and "process_cpu_seconds_total" in answer.text
        assert p.get("/v1/models").status_code == 401  # only /metrics became public
