"""Prometheus metrics of the HTTP app, right whether one process serves the port or several.

With several HTTP processes (``marrowlink serve``, ``http_workers`` > 1) the service sets
``PROMETHEUS_MULTIPROC_DIR`` before any process imports prometheus_client, so prometheus_client runs in
its multiprocess mode (https://prometheus.github.io/client_python/multiprocess/): every Counter,
Histogram and Gauge writes its values to memory-mapped files in that folder, and ``/metrics`` answers
from a registry holding only a ``MultiProcessCollector``, which sums the files of all processes. Any
process answers a scrape with the totals.

What multiprocess mode cannot share is handled here:

- collectors that are not prometheus_client metrics (DICOMweb's lock-free ``LoopCounter`` for frames
  served): their counters are copied into multiprocess Counters by :class:`_Publisher`, at every scrape
  in the process that answers it and once a second in every process;
- a Gauge with ``set_function`` (not supported in multiprocess mode): the index size is read from the
  shared index at scrape time by :class:`_IndexInstances`, which gives the same answer from any process.

Without the variable (one process, tests) the same metrics live in one in-process registry.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from api.review import PipelineStatus

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often every process copies its own collectors' counters to the shared files.
PUBLISH_INTERVAL_S = 1.0


def multiprocess_dir() -> str | None:
    """The shared metrics folder when prometheus_client runs in multiprocess mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class _LocalRegistry(CollectorRegistry):
    """The registry metrics are created in; remembers its collectors for :class:`_Publisher`."""

    def __init__(self) -> None:
        super().__init__()
        self.collectors: list[object] = []

    def register(self, collector) -> None:  # type: ignore[no-untyped-def]
        super().register(collector)
        self.collectors.append(collector)


class _Publisher:
    """Copies the counters of this process's own collectors into multiprocess Counters (by increments,
    so the files hold this process's totals and the MultiProcessCollector sums them over processes).
    prometheus_client metrics are skipped: multiprocess mode writes those to the files itself."""

    def __init__(self, local: _LocalRegistry) -> None:
        self._local = local
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._published: dict[tuple[str, tuple[str, ...]], float] = {}
        self._skipped: set[str] = set()

    def publish(self) -> None:
        directory = multiprocess_dir()
        if directory is None or not os.path.isdir(directory):  # the service already cleaned it up
            return
        with self._lock:
            for collector in list(self._local.collectors):
                if isinstance(collector, MetricWrapperBase):
                    continue
                for family in collector.collect():  # type: ignore[attr-defined]
                    if family.type == "counter":
                        self._publish_counter(family)
                    elif family.name not in self._skipped:
                        self._skipped.add(family.name)
                        log.warning("metric %s (%s) is per process, not shared", family.name, family.type)

    def _publish_counter(self, family: Metric) -> None:
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            names = tuple(sorted(sample.labels))
            values = tuple(sample.labels[name] for name in names)
            key = (family.name, values)
            delta = sample.value - self._published.get(key, 0.0)
            if delta <= 0:
                continue
            counter = self._counters.get(family.name)
            if counter is None:
                counter = self._counters[family.name] = Counter(family.name, family.documentation, names, registry=None)
            (counter.labels(*values) if names else counter).inc(delta)
            self._published[key] = sample.value

    def collect(self) -> Iterator[Metric]:
        """Registered first in the served registry: a scrape publishes this process's counters before
        the MultiProcessCollector reads the files."""
        self.publish()
        return iter(())

    def describe(self) -> list[Metric]:
        return []

    def run_forever(self) -> None:
        while True:
            time.sleep(PUBLISH_INTERVAL_S)
            try:
                self.publish()
            except Exception:  # pragma: no cover - never let metrics stop the process
                log.exception("publishing metrics failed")


class _IndexInstances:
    """``marrowlink_index_instances``, read at scrape time (the index is shared by all processes)."""

    def __init__(self, count: Callable[[], float]) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("marrowlink_index_instances", "Instances in the index", value=self._count())

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("marrowlink_index_instances", "Instances in the index")]


class _Pipeline:
    """The pipeline's jobs by step and state, the broker's queue and step durations, read from the shared
    database (and broker) at scrape time, so any process answers with the same numbers."""

    def __init__(self, status: Callable[[], PipelineStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        try:
            status = self._status()
        except Exception:  # an unreachable database shows in /readyz; the scrape still answers
            log.warning("pipeline metrics unavailable", exc_info=True)
            return
        jobs = GaugeMetricFamily("marrowlink_jobs", "Pipeline jobs by step and state", labels=["step", "state"])
        for (step, state), count in sorted(status.jobs.items()):
            jobs.add_metric([step, state], count)
        yield jobs
        queued = sum(n for (_, state), n in status.jobs.items() if state == "queued")
        yield GaugeMetricFamily("marrowlink_jobs_queue_depth", "Jobs queued and not yet running", value=queued)
        if status.broker_messages is not None:
            yield GaugeMetricFamily(
                "marrowlink_broker_queue_messages", "Job messages waiting in the broker", value=status.broker_messages
            )
        durations = SummaryMetricFamily(
            "marrowlink_job_seconds", "Seconds each finished job's step took", labels=["step"]
        )
        for step, (count, total) in sorted(status.durations.items()):
            durations.add_metric([step], count_value=count, sum_value=total)
        yield durations

    def describe(self) -> list[Metric]:
        return []


class Registries:
    """``local``: where this process creates its metrics (the api's and DICOMweb's); ``served``: what
    ``/metrics`` exposes (the same registry in one process; every process's files in multiprocess mode)."""

    def __init__(
        self, index_instances: Callable[[], float], *, pipeline: Callable[[], PipelineStatus] | None = None
    ) -> None:
        self.local = _LocalRegistry()
        directory = multiprocess_dir()
        if directory is None:
            self.served: CollectorRegistry = self.local
        else:
            publisher = _Publisher(self.local)
            self.served = CollectorRegistry()
            self.served.register(publisher)
            MultiProcessCollector(self.served, path=directory)
            threading.Thread(target=publisher.run_forever, name="metrics-publish", daemon=True).start()
            atexit.register(publisher.publish)  # what a stopping worker counted since the last copy
        self.served.register(_IndexInstances(index_instances))
        if pipeline is not None:
            self.served.register(_Pipeline(pipeline))
        # one per live process: summed over the live ones ("livesum"); a dead worker's file is removed
        # by the service (multiprocess.mark_process_dead)
        processes = Gauge(
            "marrowlink_http_processes",
            "HTTP server processes serving the port",
            registry=self.local,
            multiprocess_mode="livesum",
        )
        processes.set(1)
