"""Durable jobs: every pipeline step is a row in the index database, so a crash loses none.

A job is keyed by its step and its slide (``import:VM00000007``): one slide is never imported or
analysed by two jobs, and a re-sent export finds the job that already exists. Whoever runs a job
(the pool inside `serve`, or a Celery `marrowlink worker`) first *claims* it with one conditional
UPDATE, which only one process can win; it then holds a lease it renews while it works. A job whose
runner died (kill -9, a lost host) is claimed again once its lease runs out, or at once when the
runner was a process on this host that no longer exists. Failures are retried with back-off a
bounded number of times, then the job is ``failed`` with the reason, until a person retries it.

States: ``waiting`` (a scan with no order yet), ``queued``, ``running``, ``done``, ``failed``,
``cancelled``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Column, Engine, Text, UniqueConstraint, and_, case, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from acquisition.timestamps import stored_iso, stored_utc
from integration.cases import utcnow
from integration.processes import pid_alive


class JobState(StrEnum):
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Step(StrEnum):
    IMPORT = "import"  # a Metafer export folder → DICOM WSI
    ANALYSE = "analyse"  # a stored slide → SEG, ANN, SR, the cells for review and the ORU (P)


#: States a person may retry from, and cancel from.
RETRYABLE = (JobState.FAILED.value, JobState.CANCELLED.value)
CANCELLABLE = (JobState.WAITING.value, JobState.QUEUED.value, JobState.RUNNING.value, JobState.FAILED.value)


class Job(SQLModel, table=True):
    """One step for one slide; see the module docstring."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("key", name="uq_jobs_key"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=300)
    step: str = Field(max_length=20, index=True)
    barcode: str = Field(max_length=200, index=True)
    #: The export folder (import jobs): where it is now (processing/, then done/ or failed/).
    folder: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    study_instance_uid: str = Field(default="", max_length=64)
    state: str = Field(default=JobState.QUEUED.value, max_length=12, index=True)
    attempts: int = 0
    max_attempts: int = 4
    not_before: datetime = Field(default_factory=utcnow)
    #: "host:pid" of the process that runs it, and until when its claim holds unless renewed.
    owner: str = Field(default="", max_length=300)
    lease_until: datetime | None = None
    #: When it was last handed to the broker (scale-out); None: not yet.
    dispatched_at: datetime | None = None
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: How long the last successful run took.
    seconds: float | None = None


def this_process() -> str:
    """The owner name of jobs this process runs: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_gone(owner: str) -> bool:
    """True when `owner` was a process on this host that has exited (its jobs need not wait for their lease)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False  # ours: a thread of this process runs it
    return not pid_alive(int(pid))


@dataclass(frozen=True)
class Backoff:
    """Retry delays: first, doubling, capped."""

    first_s: float = 15.0
    cap_s: float = 600.0

    def delay(self, attempts: int) -> float:
        return min(self.cap_s, self.first_s * 2.0 ** max(0, attempts - 1))


class PermanentError(Exception):
    """A failure that a retry cannot fix (a broken export, a slide without an order): no back-off."""


class Jobs:
    """The job table's operations; each method is one short transaction."""

    def __init__(self, engine: Engine, *, lease_s: float = 120.0, backoff: Backoff | None = None) -> None:
        self.engine = engine
        self.lease_s = lease_s
        self.backoff = backoff or Backoff()

    # ---- creating ---------------------------------------------------------------------------------------

    @staticmethod
    def ensure(session: Session, step: Step, barcode: str, **values: object) -> tuple[Job, bool]:
        """The job of (step, slide), created in the caller's transaction when there is none; (job, created)."""
        key = f"{step.value}:{barcode}"
        existing = session.exec(select(Job).where(Job.key == key)).first()
        if existing is not None:
            return existing, False
        job = Job(key=key, step=step.value, barcode=barcode, **values)  # type: ignore[arg-type]
        try:
            with session.begin_nested():
                session.add(job)
                session.flush()
        except IntegrityError:  # another process created it just now
            return session.exec(select(Job).where(Job.key == key)).one(), False
        return job, True

    # ---- reading ----------------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Job, job_id)

    def list(self, *, states: Iterable[str] = (), step: str | None = None, limit: int = 100) -> list[Job]:
        query = select(Job).order_by(col(Job.id).desc()).limit(limit)
        states = list(states)
        if states:
            query = query.where(col(Job.state).in_(states))
        if step:
            query = query.where(Job.step == step)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def keys(self, job_ids: Iterable[int]) -> dict[int, str]:
        """id → key of the given jobs, in the order given (unknown ids left out)."""
        ids = [int(i) for i in job_ids]
        if not ids:
            return {}
        with Session(self.engine) as session:
            found = dict(session.exec(select(Job.id, Job.key).where(col(Job.id).in_(ids))).all())
        return {i: found[i] for i in ids if i in found}

    def due(self, now: datetime | None = None, *, limit: int = 20) -> list[Job]:
        """Jobs a runner may claim now: queued and due, or running with a lapsed lease or a runner that is gone."""
        now = now or utcnow()
        query = (
            select(Job)
            .where(
                or_(
                    and_(Job.state == JobState.QUEUED.value, Job.not_before <= now),
                    Job.state == JobState.RUNNING.value,
                )
            )
            # a slide's analysis before the next slide's import: each result arrives as early as it can
            .order_by(case((Job.step == Step.ANALYSE.value, 0), else_=1), col(Job.not_before), col(Job.id))
            .limit(limit * 4)
        )
        with Session(self.engine, expire_on_commit=False) as session:
            rows = list(session.exec(query).all())
        return [j for j in rows if j.state == JobState.QUEUED.value or self._abandoned(j, now)][:limit]

    @staticmethod
    def _abandoned(job: Job, now: datetime) -> bool:
        return job.lease_until is None or stored_utc(job.lease_until) < now or owner_is_gone(job.owner)

    def counts(self) -> dict[tuple[str, str], int]:
        """(step, state) → number of jobs."""
        query = select(Job.step, Job.state, func.count()).group_by(Job.step, Job.state)
        with Session(self.engine) as session:
            return {(step, state): n for step, state, n in session.exec(query).all()}

    def durations(self) -> dict[str, tuple[int, float]]:
        """step → (finished jobs, seconds they took in all)."""
        query = (
            select(Job.step, func.count(), func.coalesce(func.sum(Job.seconds), 0.0))
            .where(Job.state == JobState.DONE.value, col(Job.seconds).is_not(None))
            .group_by(Job.step)
        )
        with Session(self.engine) as session:
            return {step: (n, float(total)) for step, n, total in session.exec(query).all()}

    # ---- running ----------------------------------------------------------------------------------------

    def claim(self, job_id: int, owner: str, now: datetime | None = None) -> Job | None:
        """Take the job for `owner` if it is free to take; the claimed row, or None (someone else has it)."""
        now = now or utcnow()
        job = self.get(job_id)
        if job is None:
            return None
        free = and_(Job.state == JobState.QUEUED.value, Job.not_before <= now)
        if job.state == JobState.RUNNING.value:
            if not self._abandoned(job, now):
                return None
            # the same owner and lease we read: two claimers of an abandoned job cannot both win
            free = and_(Job.state == JobState.RUNNING.value, Job.owner == job.owner, Job.attempts == job.attempts)
        statement = (
            update(Job)
            .where(col(Job.id) == job_id, free)
            .values(
                state=JobState.RUNNING.value,
                owner=owner,
                lease_until=now + timedelta(seconds=self.lease_s),
                attempts=Job.attempts + 1,
                started_at=now,
                updated_at=now,
            )
        )
        with self.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                return None
        return self.get(job_id)

    def renew(self, job_id: int, owner: str) -> bool:
        """Extend the lease; False when the job is no longer ours (cancelled, or taken over)."""
        now = utcnow()
        statement = (
            update(Job)
            .where(col(Job.id) == job_id, Job.owner == owner, Job.state == JobState.RUNNING.value)
            .values(lease_until=now + timedelta(seconds=self.lease_s))
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    @staticmethod
    def still_ours(session: Session, job_id: int, owner: str) -> Job | None:
        """The job row locked for the finishing transaction, if we still hold it."""
        job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
        if job is None or job.owner != owner or job.state != JobState.RUNNING.value:
            return None
        return job

    @staticmethod
    def finish(session: Session, job: Job, *, now: datetime | None = None) -> None:
        """Mark done in the caller's transaction (with the step's own writes and the next step's job)."""
        now = now or utcnow()
        started = stored_utc(job.started_at) if job.started_at is not None else None
        job.state, job.finished_at, job.updated_at, job.reason = JobState.DONE.value, now, now, ""
        job.lease_until = None
        job.seconds = (now - started).total_seconds() if started else None
        session.add(job)

    def fail(self, job_id: int, owner: str, reason: str, *, permanent: bool = False) -> Job | None:
        """Record a failure: queued again after a back-off while attempts remain, else failed."""
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            job = self.still_ours(session, job_id, owner)
            if job is None:
                return None
            job.reason, job.updated_at, job.lease_until = reason[:4000], now, None
            if permanent or job.attempts >= job.max_attempts:
                job.state, job.finished_at = JobState.FAILED.value, now
            else:
                job.state = JobState.QUEUED.value
                job.not_before = now + timedelta(seconds=self.backoff.delay(job.attempts))
                job.dispatched_at = None
            session.add(job)
            return job

    def dispatched(self, job_ids: Iterable[int]) -> None:
        ids = list(job_ids)
        if not ids:
            return
        with self.engine.begin() as connection:
            connection.execute(update(Job).where(col(Job.id).in_(ids)).values(dispatched_at=utcnow()))

    # ---- people's actions ---------------------------------------------------------------------------------

    def retry(self, job_id: int) -> Job:
        """A failed or cancelled job runs again from its first attempt."""
        return self._change(job_id, RETRYABLE, JobState.QUEUED, attempts=0, reason="", not_before=utcnow())

    def cancel(self, job_id: int) -> Job:
        """The job will not run (a running one's result is discarded when it ends)."""
        return self._change(job_id, CANCELLABLE, JobState.CANCELLED, reason="cancelled by a person")

    def _change(self, job_id: int, allowed: Iterable[str], state: JobState, **values: object) -> Job:
        allowed = tuple(allowed)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
            if job is None:
                raise LookupError(f"no job {job_id}")
            if job.state not in allowed:
                raise ValueError(f"job {job_id} is {job.state}; only {', '.join(allowed)} jobs can be {state.value}")
            job.state, job.updated_at, job.owner, job.lease_until, job.dispatched_at = (
                state.value, utcnow(), "", None, None,
            )  # fmt: skip
            for key, value in values.items():
                setattr(job, key, value)
            session.add(job)
            return job


def job_dict(job: Job) -> dict[str, object]:
    """A job as the CLI and the REST API show it."""
    return {
        "id": job.id,
        "step": job.step,
        "slide": job.barcode,
        "state": job.state,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "reason": job.reason,
        "folder": job.folder,
        "study": job.study_instance_uid,
        "owner": job.owner,
        "not_before": stored_iso(job.not_before),
        "created_at": stored_iso(job.created_at),
        "started_at": stored_iso(job.started_at),
        "finished_at": stored_iso(job.finished_at),
        "seconds": job.seconds,
    }
