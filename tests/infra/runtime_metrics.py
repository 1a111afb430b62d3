"""The metric names the runtime really exposes, for checking rules and dashboards against them."""

from __future__ import annotations

import re


class _Source:
    kind, stale, ready, refresh_failures = "bundled", False, True, 0

    def age_seconds(self) -> float:
        return 1.0


class _Runtime:
    sources, remotes = {"behavior": _Source()}, {}

    def is_ready(self) -> bool:
        return True


def exposed_metric_names() -> set[str]:
    """Every apinode_* series name of /metrics after one answered and one failed request."""
    from apinode.audit import QueryLog, QueryLogCollector
    from apinode.metrics import Metrics

    metrics = Metrics("customer-scoring", _Runtime())
    metrics.registry.register(QueryLogCollector("customer-scoring", QueryLog("off", "customer-scoring")))
    metrics.observe("high-spender/predict", 200, 0.01, None, "1")
    metrics.observe("high-spender/predict", 503, 0.01, "SourceUnavailable", "2")
    return set(re.findall(r"^(apinode_[a-z_]+)", metrics.render().decode(), re.MULTILINE))


def used_metric_names(expr: str) -> set[str]:
    return set(re.findall(r"apinode_[a-z_]+", expr))
