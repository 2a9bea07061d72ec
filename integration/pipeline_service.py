"""The pipeline's side of api.review.ReviewService: jobs, slide stages, metrics and readiness.

Mixed into `ReviewAdapter`, so the API gets one object; every answer is read from the index database
(and the broker), so each HTTP process says the same.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine

from api.review import PipelineStatus, ReviewError
from integration.cases import audit
from integration.jobs import Jobs, JobState, job_dict
from integration.pipeline import slide_rows
from integration.settings import Settings


class PipelineOperations:
    engine: Engine
    settings: Settings
    _celery: Any = None
    _celery_lock = threading.Lock()

    def jobs(self, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        if state is not None and state not in set(JobState):
            raise ReviewError(422, f"state {state!r} is not one of {', '.join(JobState)}")
        return [job_dict(job) for job in Jobs(self.engine).list(states=[state] if state else (), limit=limit)]

    def slides(self, *, limit: int) -> list[dict[str, Any]]:
        return slide_rows(self.engine, limit=limit)

    def retry_job(self, job_id: int, *, actor: str) -> dict[str, Any]:
        return self._change(job_id, "retry", actor)

    def cancel_job(self, job_id: int, *, actor: str) -> dict[str, Any]:
        return self._change(job_id, "cancel", actor)

    def _change(self, job_id: int, action: str, actor: str) -> dict[str, Any]:
        """Retry or cancel; the running scheduler (or a worker) picks a retried job up at its next tick."""
        from sqlmodel import Session

        jobs = Jobs(self.engine)
        try:
            job = getattr(jobs, action)(job_id)
        except LookupError as exc:
            raise ReviewError(404, str(exc)) from exc
        except ValueError as exc:
            raise ReviewError(409, str(exc)) from exc
        with Session(self.engine) as session, session.begin():
            audit(session, actor, f"job.{action}", "job", job_id, step=job.step, slide=job.barcode)
        return job_dict(job)

    def pipeline_status(self) -> PipelineStatus:
        jobs = Jobs(self.engine)
        messages = None
        if self.settings.broker_url:
            from integration.broker import broker_status

            _, messages = broker_status(self._broker())
        return PipelineStatus(jobs=jobs.counts(), durations=jobs.durations(), broker_messages=messages)

    def readiness(self) -> dict[str, str]:
        if not self.settings.broker_url:
            return {}
        from integration.broker import broker_status

        state, _ = broker_status(self._broker())
        return {"broker": state}

    def _broker(self) -> Any:
        with self._celery_lock:
            if self._celery is None:
                from integration.broker import celery_app

                self._celery = celery_app(self.settings)
            return self._celery
