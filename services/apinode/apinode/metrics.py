"""Prometheus metrics: requests, latency, errors, and the state of each data source at scrape time."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .localmetrics import Counter, Histogram

_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _SourceCollector:
    """Reads the sources' age, staleness and failures when scraped, so the hot path pays nothing."""

    def __init__(self, service: str, runtime) -> None:
        self._service, self._runtime = service, runtime

    def collect(self):
        age = GaugeMetricFamily(
            "apinode_source_data_age_seconds",
            "Seconds since the data was loaded",
            labels=["service", "source", "kind"],
        )
        stale = GaugeMetricFamily(
            "apinode_source_stale",
            "1 when the last refresh failed and old data is served",
            labels=["service", "source", "kind"],
        )
        ready = GaugeMetricFamily(
            "apinode_source_ready", "1 when the source can answer", labels=["service", "source", "kind"]
        )
        failures = CounterMetricFamily(
            "apinode_source_failures", "Failed refreshes or queries", labels=["service", "source", "kind"]
        )
        for name, source in self._runtime.sources.items():
            labels = [self._service, name, source.kind]
            value = source.age_seconds()
            if not math.isnan(value):
                age.add_metric(labels, value)
            stale.add_metric(labels, 1.0 if source.stale else 0.0)
            ready.add_metric(labels, 1.0 if source.ready else 0.0)
            failures.add_metric(labels, source.refresh_failures)
        for name, remote in self._runtime.remotes.items():
            labels = [self._service, name, "remote"]
            failures.add_metric(labels, remote.failures)
        up = GaugeMetricFamily(
            "apinode_ready", "1 when data and models are loaded and not draining", labels=["service"]
        )
        up.add_metric([self._service], 1.0 if self._runtime.is_ready() else 0.0)
        return [age, stale, ready, failures, up]


class Metrics:
    """One registry per app; label children cached so an observation is a dict lookup and an add."""

    def __init__(self, service: str, runtime) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._service = service
        self._requests = Counter(
            "apinode_requests",
            "Requests by endpoint, generation (of the model that answered; '' before dispatch) and status",
            ["service", "endpoint", "generation", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "apinode_request_duration_seconds",
            "Request latency",
            ["service", "endpoint", "generation"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "apinode_errors",
            "Error answers by errorType",
            ["service", "endpoint", "error_type"],
            registry=self.registry,
        )
        self.registry.register(_SourceCollector(service, runtime))
        self._children: dict[tuple, tuple] = {}

    def observe(
        self, endpoint: str, status: int, seconds: float, error_type: str | None = None, generation: str = ""
    ) -> None:
        children = self._children.get((endpoint, status, generation))
        if children is None:
            children = (
                self._requests.labels(self._service, endpoint, generation, str(status)).inc,
                self._latency.labels(self._service, endpoint, generation).observe,
            )
            self._children[(endpoint, status, generation)] = children
        children[0]()
        children[1](seconds)
        if error_type is not None:
            self._errors.labels(self._service, endpoint, error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
