"""Prometheus view of the sessions: read from the store's and the manager's counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.metrics import Metrics
from service.sessions.manager import SessionManager


class SessionCollector:
    def __init__(self, manager: SessionManager):
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        counts = self.manager.store.counts()
        yield GaugeMetricFamily("fws_sessions_active", "Memory sessions held (this store).", counts["active"])
        yield GaugeMetricFamily(
            "fws_session_state_bytes", "Bytes of session state held (this store).", counts["state_bytes"]
        )
        for name, doc in (
            ("created", "Sessions created."),
            ("expired", "Sessions expired after their idle TTL."),
            ("evicted", "Idle sessions evicted, least recently used first, at the session limit."),
            ("deleted", "Sessions deleted by their clients."),
        ):
            yield CounterMetricFamily(f"fws_sessions_{name}", doc, counts[name])
        appends = CounterMetricFamily("fws_session_appends", "Appends by outcome.", labels=["outcome"])
        appends.add_metric(["applied"], self.manager.appends_applied)
        appends.add_metric(["retried"], self.manager.appends_retried)
        yield appends
        yield CounterMetricFamily(
            "fws_session_replays",
            "Session states replayed through a newly loaded stream model version (once per session).",
            self.manager.states_replayed,
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())


def register(metrics: Metrics, manager: SessionManager) -> None:
    metrics.registry.register(SessionCollector(manager))
