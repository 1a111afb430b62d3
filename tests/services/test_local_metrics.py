"""The lock-free counters and histograms (apinode/localmetrics.py) expose exactly what
prometheus_client's own would: same series, labels, bucket edges (a value on a bound counts in
that bucket, Prometheus' ``le``), counts and sums. Dashboards and alert rules read these names.
"""

from __future__ import annotations

import re

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from apinode import localmetrics

BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
OBSERVED = [0.0, 0.0001, 0.0002, 0.00020001, 0.0005, 0.003, 0.7, 1.0, 5.0, 9.0, 1e9]


def _exposition(module) -> str:
    registry = CollectorRegistry(auto_describe=True)
    requests = module.Counter("apinode_requests", "Requests", ["service", "endpoint", "status"], registry=registry)
    latency = module.Histogram("apinode_request_duration_seconds", "Latency", ["service", "endpoint"],
                               buckets=BUCKETS, registry=registry)
    for n, seconds in enumerate(OBSERVED):
        requests.labels("s", "a/lookup", "200" if n % 3 else "404").inc()
        latency.labels("s", "a/lookup" if n % 2 else "b/predict").observe(seconds)
    requests.labels("s", "a/lookup", "200").inc(2.5)
    # Creation times differ between the two; everything else must not.
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_exposition_is_the_same_as_prometheus_clients():
    ours, theirs = _exposition(localmetrics), _exposition(prometheus_client)
    assert ours == theirs
    assert 'apinode_request_duration_seconds_bucket{endpoint="b/predict",le="0.0002",service="s"} 2.0' in ours


def test_wrong_label_count_and_negative_increments_are_refused():
    registry = CollectorRegistry()
    requests = localmetrics.Counter("x", "x", ["a", "b"], registry=registry)
    with pytest.raises(ValueError):
        requests.labels("only-one")
    with pytest.raises(ValueError):
        requests.labels("1", "2").inc(-1)
