"""Counters and histograms kept in plain Python numbers, turned into metric families when scraped.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock per update (two for a
histogram, through several Python calls): ≈3-4 % of a lookup's CPU in the profiles of
bench/results.md. Every update here happens on the event loop's thread (``Metrics.observe`` in
the app), and so does every scrape (``/metrics`` is served by the same loop), so no lock is
needed: an update is an addition, a histogram's a bisect and two additions.

Same construction and ``labels(...).inc()`` / ``labels(...).observe()`` calls as
prometheus_client's, same exposition (``_total``, ``_bucket``/``_count``/``_sum`` and
``_created`` series). Not for updates from other threads: they could lose increments.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class _Family:
    """Label values -> child, registered in a registry as a custom collector."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry):
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        registry.register(self)

    def labels(self, *values: str):
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name}: expected {len(self._labelnames)} label values, got {len(values)}")
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child()
        return child

    def _child(self):
        raise NotImplementedError

    def describe(self):
        return self.collect()


class _CounterChild:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class Counter(_Family):
    def _child(self) -> _CounterChild:
        return _CounterChild()

    def collect(self):
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, float(child.value), created=child.created)
        return [family]


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: le semantics
        self.sum += amount


class Histogram(_Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry,
                 buckets: Sequence[float]) -> None:
        bounds = tuple(float(bound) for bound in buckets if bound != float("inf"))
        if list(bounds) != sorted(bounds) or not bounds:
            raise ValueError(f"{name}: buckets must be sorted and not empty")
        self._bounds = bounds
        self._les = [floatToGoString(bound) for bound in bounds] + ["+Inf"]
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> _HistogramChild:
        return _HistogramChild(self._bounds)

    def collect(self):
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._les, child.counts):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(values, buckets, child.sum)
            labels = dict(zip(self._labelnames, values))
            family.samples.append(Sample(self._name + "_created", labels, child.created, None))
        return [family]
