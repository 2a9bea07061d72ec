"""Lock-free counters and histograms for the hot path, exported to Prometheus at scrape time.

prometheus_client takes a lock per ``inc``/``observe`` (about 3 µs each, measured here), which is a
tenth of a whole frames request. These are updated only from the event-loop thread, so plain
integers suffice; a Collector turns them into the usual metric families when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class LoopCounter(Collector):
    """A labelled counter; ``inc(*labels, amount=1)``."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        yield family


class LoopHistogram(Collector):
    """A labelled histogram with fixed buckets; ``observe(value, *labels)``."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.buckets = list(buckets)
        self.values: dict[tuple[str, ...], list[float]] = {}  # per bucket counts, then +Inf, then sum

    def observe(self, value: float, *labels: str) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, row in list(self.values.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip([*self.buckets, float("inf")], row[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            family.add_metric(list(labels), buckets, row[-1])
        yield family


def register(registry: CollectorRegistry | None, collector: Collector) -> None:
    if registry is not None:
        registry.register(collector)
