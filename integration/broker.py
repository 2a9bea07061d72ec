"""Scale-out on Celery: import and analysis jobs go through a broker to `marrowlink worker` processes.

The database stays the truth about every job (integration.jobs); the broker only carries job ids. So:

- a message is acknowledged after its job ran (late acknowledgement), and a worker killed mid-job
  gives the message back (RabbitMQ at once; Redis after its visibility timeout);
- whoever receives a job id first *claims* the row (one conditional UPDATE): a job delivered twice,
  or re-sent by `serve`'s scheduler, runs once; a job whose worker died is claimed again once its lease
  runs out, or at once by a worker on the same host that sees the dead process is gone;
- `serve` re-sends every due job the broker does not hold (never sent, retried after its back-off,
  abandoned), so a message lost with a broker restart does not lose the job.

Each worker is one process running one job at a time (Celery's solo pool) with the models loaded once
at start; run as many as the hosts have cores for (docs/deployment.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from integration.jobs import Jobs
from integration.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from integration.pipeline import Pipeline

log = logging.getLogger("marrowlink.broker")

TASK = "marrowlink.run_job"

#: The pipeline of this worker process (built once, models loaded), used by the task.
_worker_pipeline: Pipeline | None = None


def celery_app(settings: Settings) -> Celery:
    """The Celery application for the configured broker (amqp:// or redis://)."""
    from celery import Celery

    if not settings.broker_url:
        raise ValueError("no broker configured (MARROWLINK_BROKER)")
    app = Celery("marrowlink", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.broker_queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        # Redis redelivers an unacknowledged message after this; it must outlast the longest job (the
        # database lease, not this, is what hands the job of a dead worker to another)
        broker_transport_options={"visibility_timeout": 3600},
    )

    @app.task(name=TASK, ignore_result=True)
    def run_job(job_id: int, key: str | None = None) -> str | None:
        if _worker_pipeline is None:  # pragma: no cover - a task outside `marrowlink worker`
            raise RuntimeError("marrowlink jobs run in `marrowlink worker` processes")
        return _worker_pipeline.run(int(job_id), key=key)

    return app


class Publisher:
    """Sends job ids to the broker and notes when (a job not sent stays due for the scheduler)."""

    def __init__(self, app: Celery, jobs: Jobs) -> None:
        self.app = app
        self.jobs = jobs

    def __call__(self, job_ids: Iterable[int]) -> None:
        sent = []
        keys = self.jobs.keys(job_ids)
        for job_id, key in keys.items():
            try:
                # the key travels too: a worker refuses an id whose row in its database is another job
                self.app.send_task(TASK, args=[job_id, key], queue=self.app.conf.task_default_queue, retry=False)
            except Exception as exc:  # the broker is away: the scheduler sends it again later
                log.warning("job %s not handed to the broker: %s", job_id, exc)
                break
            sent.append(job_id)
        self.jobs.dispatched(sent)


def broker_status(app: Celery) -> tuple[str, int | None]:
    """("ok", messages waiting in the job queue) or ("error: …", None); answers within a few seconds."""
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
            channel = connection.default_channel
            _, messages, _ = channel.queue_declare(app.conf.task_default_queue, passive=True)
            return "ok", int(messages)
    except Exception as exc:
        if "NOT_FOUND" in str(exc) or "404" in str(exc):
            return "ok", 0  # no worker declared the queue yet
        return f"error: {type(exc).__name__}: {exc}"[:300], None


def run_worker(app: Celery, pipeline: Pipeline, *, name: str | None = None, loglevel: str = "INFO") -> None:
    """`marrowlink worker`: with the pipeline built (and its models loaded), take jobs until stopped."""
    global _worker_pipeline
    pipeline.dispatch = Publisher(app, pipeline.jobs)
    _worker_pipeline = pipeline
    log.info("worker %s ready on %s (research use only, not for clinical diagnosis)", pipeline.owner,
             _redacted(str(app.conf.broker_url or "")))  # fmt: skip
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",  # with the prefetch of 1: a worker holds only the message of the job it runs
            f"--loglevel={loglevel}",
            "-Q",
            str(app.conf.task_default_queue),
            "-n",
            name or f"marrowlink-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _redacted(url: str) -> str:
    """The broker URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
