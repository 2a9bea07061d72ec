"""Who runs the pipeline inside a long-lived process (`serve`, `watch`).

- `Scheduler`: one thread that, every tick, looks at the watch folder, queues scans whose order has
  arrived, moves slides on when the LIS acknowledged their results and, with a broker, hands the
  broker the jobs it does not hold.
- `JobPool`: without a broker, threads that claim and run due jobs (the embedded default: nothing else
  to install). With a broker, `serve` runs no jobs: `marrowlink worker` processes do (integration.broker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from dicom_store import Store
from integration.pipeline import Pipeline
from integration.settings import Settings

log = logging.getLogger("marrowlink.pipeline")


class _Loop:
    """A daemon thread calling `step` until stopped; `wake` cuts the wait short."""

    def __init__(self, name: str, interval: float) -> None:
        self.name = name
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, count: int = 1) -> None:
        for number in range(count):
            thread = threading.Thread(target=self._run, name=f"{self.name}-{number + 1}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.step()
            except Exception:  # a database that is away for a moment must not end the loop
                log.exception("%s: step failed", self.name)
            if not busy:
                self._wake.wait(self.interval)
                self._wake.clear()

    def step(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class JobPool(_Loop):
    """Threads that run due jobs in this process (no broker)."""

    def __init__(self, pipeline: Pipeline, *, threads: int = 1, interval: float = 1.0) -> None:
        super().__init__("jobs", interval)
        self.pipeline = pipeline
        self.threads = threads

    def start(self, count: int | None = None) -> None:  # type: ignore[override]
        super().start(count or self.threads)

    def step(self) -> bool:
        ran = False
        for job in self.pipeline.jobs.due(limit=self.threads * 2):
            if self._stop.is_set():
                break
            if self.pipeline.run(job.id) is not None:  # type: ignore[arg-type]
                ran = True
        return ran


class Scheduler(_Loop):
    """The pipeline's housekeeping, one tick every `interval` seconds (see the module docstring)."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        watch: object | None = None,
        redispatch: Callable[[], bool] | None = None,
        interval: float = 2.0,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        super().__init__("scheduler", interval)
        self.pipeline = pipeline
        self.watch = watch
        self.redispatch = redispatch
        self.on_tick = on_tick

    def start(self, count: int = 1) -> None:
        if self.watch is not None:
            self.watch.recover()  # type: ignore[attr-defined]
        super().start(1)

    def step(self) -> bool:
        if self.watch is not None:
            self.watch.tick()  # type: ignore[attr-defined]
        self.pipeline.match_waiting()
        self.pipeline.track_results()
        if self.redispatch is not None:
            self.pipeline.redispatch(broker_empty=self.redispatch)
        if self.on_tick is not None:
            self.on_tick()
        return False


@dataclass
class PipelineRuntime:
    """What `start_pipeline` started; `stop` ends it without waiting for a long analysis (a job cut
    short is claimed again after a restart: its runner is gone)."""

    pipeline: Pipeline
    scheduler: Scheduler
    pool: JobPool | None

    def stop(self, timeout: float = 5.0) -> None:
        self.scheduler.stop(timeout)
        if self.pool is not None:
            self.pool.stop(timeout)


def start_pipeline(
    engine: Engine, store: Store, settings: Settings, *, watch: Path | None = None, run_jobs: bool = True
) -> PipelineRuntime:
    """The scheduler (and the watch folder), and with no broker the job pool (`run_jobs`)."""
    pipeline = Pipeline(engine, store, settings)
    pool = None
    broker_empty = None
    if settings.broker_url:
        from integration.broker import Publisher, broker_status, celery_app

        app = celery_app(settings)
        pipeline.dispatch = Publisher(app, pipeline.jobs)

        def broker_empty() -> bool:
            return broker_status(app)[1] == 0
    elif run_jobs:
        pool = JobPool(pipeline, threads=settings.job_threads)
        pipeline.dispatch = lambda ids: pool.wake()  # type: ignore[union-attr]
    watcher = None
    if watch is not None:
        from integration.watch import WatchFolder

        watcher = WatchFolder(watch, pipeline, settle_s=settings.watch_settle_s)
    scheduler = Scheduler(pipeline, watch=watcher, redispatch=broker_empty, interval=settings.watch_interval_s)
    scheduler.start()
    if pool is not None:
        pool.start()
    mode = f"Celery workers via {settings.broker_url.split('://')[0]}" if settings.broker_url else (
        f"{settings.job_threads} job thread(s) in this process" if pool is not None else "no job runner"
    )  # fmt: skip
    log.info("pipeline: %s%s", mode, f"; watching {watcher.root}" if watcher is not None else "")
    return PipelineRuntime(pipeline, scheduler, pool)
