"""The unattended pipeline: scans and orders meet, and each slide moves through its steps as jobs.

    export folder ─► import job ─► analyse job ─► ORU (P) acknowledged
    (watch folder)   (DICOM WSI)   (SEG, ANN, SR, cells, ORU queued)

Order and scan may come in either order. A scan is matched to its order by the slide barcode (the
order's SAC-3 / SPM container, the DICOM Container Identifier) or, when the order named no slide, by
an accession number equal to the barcode. A scan that matches nothing waits (its import job is
``waiting``) and is queued as soon as the order arrives.

Each step is idempotent, so a job may run again after a crash at any point: the import derives its
series UID from the job and removes what a killed attempt stored of it before storing again; the
analysis does the same through `Workflow.analyse(run_key=...)`, and the ORU's MSH-10 is derived from
the job, so it is queued once. The next step's job is created in the same transaction that marks a
step done. `Pipeline.run` is what both runners call: the pool in `serve` (integration.runner) and the
Celery task of `marrowlink worker` (integration.broker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from acquisition.timestamps import stored_iso, stored_utc
from dicom_store import Store
from integration.cases import Case, CaseStatus, Slide, SlideStage, audit, set_slide_stage, utcnow
from integration.failpoints import pause
from integration.jobs import Job, Jobs, JobState, PermanentError, Step, this_process
from integration.settings import Settings

log = logging.getLogger("marrowlink.pipeline")

#: A job handed to the broker this recently is not handed again, even when the queue looks empty (the
#: message may be on its way to a worker).
REDISPATCH_GRACE_S = 10.0

#: Slide stages whose result message is waiting for the LIS's ACK, and the stage the ACK moves them to.
AWAITING_ACK = (SlideStage.PRELIMINARY.value, SlideStage.SIGNED.value)


@dataclass(frozen=True)
class Registered:
    """What became of a scan handed to the pipeline: its job, and a refusal (why the folder is not used)."""

    job: Job | None
    refused: str = ""


class Pipeline:
    """Runs pipeline jobs for one process; `dispatch` hands new jobs to whoever runs them."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        settings: Settings,
        *,
        models: object | None = None,
        dispatch: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings
        self.jobs = Jobs(engine, lease_s=settings.job_lease_s)
        self.owner = this_process()
        self.dispatch = dispatch or (lambda ids: None)
        self._models = models
        self._models_lock = threading.Lock()

    # ---- models, loaded once per process -----------------------------------------------------------------

    def models(self) -> object:
        with self._models_lock:
            if self._models is None:
                from ai.models import ModelError
                from integration.analysis import AnalysisModels

                settings = self.settings
                try:
                    self._models = AnalysisModels.load(
                        settings.model_dir("seg"), settings.model_dir("cls"), settings.model_dir("aoi")
                    )
                except ModelError as exc:  # a setting to fix, not a moment to wait out: no retries
                    raise PermanentError(f"the models cannot be loaded ({exc}); fix MARROWLINK_MODELS_DIR, "
                                         "then retry the job") from exc  # fmt: skip
                log.info("models loaded (%s)", self._models.algorithm_version)  # type: ignore[attr-defined]
            return self._models

    # ---- scans and orders --------------------------------------------------------------------------------

    def register_scan(self, folder: Path, barcode: str) -> Registered:
        """A complete export folder arrived: its import job, queued (order known) or waiting (not yet)."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            job, created = Jobs.ensure(session, Step.IMPORT, barcode, folder=str(folder), state=JobState.WAITING.value)
            if not created:
                if job.state in (JobState.DONE.value, JobState.RUNNING.value, JobState.QUEUED.value):
                    return Registered(job, f"slide {barcode} was already scanned (job {job.id} is {job.state})")
                # a new scan of a slide whose earlier one failed, was cancelled or still waits: this one counts
                job.folder, job.attempts, job.reason, job.not_before = str(folder), 0, "", utcnow()
                job.state, job.owner, job.lease_until, job.dispatched_at = JobState.WAITING.value, "", None, None
            self._match(session, job)
            session.add(job)
            audit(session, "pipeline", "scan.received", "slide", barcode, folder=str(folder), job=job.id,
                  state=job.state)  # fmt: skip
        if job.state == JobState.QUEUED.value:
            self.dispatch([job.id])  # type: ignore[list-item]
        else:
            log.warning("slide %s: no order names it yet; its scan waits (job %s)", barcode, job.id)
        return Registered(job)

    def _match(self, session: Session, job: Job) -> bool:
        """Queue a waiting import job whose order is known now; False while it still has none."""
        slide = session.exec(select(Slide).where(Slide.barcode == job.barcode)).first()
        if slide is None:
            case = session.exec(select(Case).where(Case.accession_number == job.barcode)).first()
            if case is None:
                job.reason = f"no order names slide {job.barcode} yet (barcode or accession number)"
                return False
            slide = Slide(case_id=case.id, barcode=job.barcode)  # type: ignore[arg-type]
            session.add(slide)
            session.flush()
            audit(session, "pipeline", "slide.created", "slide", job.barcode, case=case.accession_number,
                  matched="accession")  # fmt: skip
        job.state, job.reason, job.updated_at = JobState.QUEUED.value, "", utcnow()
        session.add(job)
        set_slide_stage(session, SlideStage.SCANNED, barcode=job.barcode)
        return True

    def match_waiting(self) -> list[int]:
        """Queue the waiting scans whose orders have arrived; their job ids."""
        queued = []
        with Session(self.engine) as session, session.begin():
            waiting = session.exec(select(Job).where(Job.state == JobState.WAITING.value)).all()
            for job in waiting:
                if self._match(session, job):
                    log.info("slide %s: its order arrived; import queued (job %s)", job.barcode, job.id)
                    queued.append(job.id)
        if queued:
            self.dispatch(queued)  # type: ignore[arg-type]
        return queued  # type: ignore[return-value]

    # ---- running a job ------------------------------------------------------------------------------------

    def run(self, job_id: int, *, key: str | None = None) -> str | None:
        """Claim and run one job; its state afterwards, or None when it was not ours to run.

        `key`, when the id came from a broker: the job it names; an id whose row is another job (a message
        meant for another marrowlink on the same broker queue) is refused.
        """
        if key is not None and self.jobs.keys([job_id]).get(job_id) != key:
            log.error("job id %s from the broker names %s, which is not a job of this database: ignored (does "
                      "another marrowlink use broker queue %r?)", job_id, key, self.settings.broker_queue)  # fmt: skip
            return None
        job = self.jobs.claim(job_id, self.owner)
        if job is None:
            held = self.jobs.get(job_id)
            log.info("job %s not run here: %s", job_id,
                     f"{held.state}{' by ' + held.owner if held.owner else ''}" if held else "no such job")  # fmt: skip
            return None
        log.info("job %s (%s %s) started, attempt %d of %d", job.id, job.step, job.barcode, job.attempts,
                 job.max_attempts)  # fmt: skip
        with self._lease(job):
            try:
                if job.step == Step.IMPORT.value:
                    self._import(job)
                elif job.step == Step.ANALYSE.value:
                    self._analyse(job)
                else:
                    raise PermanentError(f"unknown step {job.step!r}")
            except PermanentError as exc:
                return self._failed(job, str(exc), permanent=True)
            except Exception as exc:
                log.exception("job %s (%s %s) failed", job.id, job.step, job.barcode)
                return self._failed(job, f"{type(exc).__name__}: {exc}")
        done = self.jobs.get(job_id)
        if done is not None and done.state == JobState.DONE.value:
            log.info("job %s (%s %s) done in %.1f s", job.id, job.step, job.barcode, done.seconds or 0.0)
        return done.state if done is not None else None

    @contextmanager
    def _lease(self, job: Job):  # type: ignore[no-untyped-def]
        """Renew the job's lease while it runs (a third of the lease apart)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.jobs.lease_s / 3):
                try:
                    if not self.jobs.renew(job.id, self.owner):  # type: ignore[arg-type]
                        log.warning("job %s is no longer ours (cancelled or taken over)", job.id)
                        return
                except Exception:  # the database is away for a moment: try again at the next beat
                    log.warning("job %s: lease not renewed", job.id, exc_info=True)

        beat = threading.Thread(target=renew, name=f"lease-{job.id}", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()

    def _failed(self, job: Job, reason: str, *, permanent: bool = False) -> str | None:
        after = self.jobs.fail(job.id, self.owner, f"{job.step}: {reason}", permanent=permanent)  # type: ignore[arg-type]
        if after is None:
            return None
        if after.state == JobState.FAILED.value:
            log.error("job %s (%s %s) failed for good: %s", job.id, job.step, job.barcode, reason)
            with Session(self.engine) as session, session.begin():
                set_slide_stage(session, SlideStage.FAILED, barcode=job.barcode, reason=after.reason)
                audit(session, "pipeline", "job.failed", "slide", job.barcode, job=job.id, reason=after.reason)
        else:
            log.warning("job %s (%s %s) will be retried after %s: %s", job.id, job.step, job.barcode,
                        after.not_before, reason)  # fmt: skip
        return after.state

    def _import(self, job: Job) -> None:
        from pydicom.uid import generate_uid

        from acquisition.metafer import MetaferExportError
        from integration.scans import ScanImportError, import_scan

        with Session(self.engine) as session:
            slide = session.exec(select(Slide).where(Slide.barcode == job.barcode)).first()
            case = session.get(Case, slide.case_id) if slide is not None else None
            if case is None:
                raise PermanentError(f"slide {job.barcode} has no order")
            if case.status == CaseStatus.CANCELLED.value:
                raise PermanentError(f"the order {case.accession_number} was cancelled")
            accession = case.accession_number
        series = generate_uid(self.settings.uid_root, entropy_srcs=["marrowlink-import", job.key])
        for instance in self.store.instances(series_instance_uid=series):
            log.warning("removing %s, left by an unfinished import of slide %s", instance.sop_instance_uid, job.barcode)
            self.store.delete_instance(instance.sop_instance_uid)
        try:
            imported = import_scan(
                Path(job.folder), self.store, uid_root=self.settings.uid_root, accession_number=accession,
                engine=self.engine, actor=f"job:{job.id}", zone=self.settings.zone, series_instance_uid=series,
            )  # fmt: skip
        except (MetaferExportError, ScanImportError) as exc:
            raise PermanentError(str(exc)) from exc
        pause("import.stored")
        with Session(self.engine) as session, session.begin():
            mine = Jobs.still_ours(session, job.id, self.owner)  # type: ignore[arg-type]
            if mine is None:
                log.warning("job %s was cancelled while it ran: slide %s is stored, not analysed", job.id, job.barcode)
                return
            mine.study_instance_uid = imported.study_instance_uid
            Jobs.finish(session, mine)
            set_slide_stage(session, SlideStage.IMPORTED, barcode=job.barcode,
                            study_instance_uid=imported.study_instance_uid)  # fmt: skip
            follow, _ = Jobs.ensure(session, Step.ANALYSE, job.barcode, study_instance_uid=imported.study_instance_uid)
            follow_id = follow.id
        self.dispatch([follow_id])  # type: ignore[list-item]

    def _analyse(self, job: Job) -> None:
        from integration.workflow import Workflow

        with Session(self.engine) as session, session.begin():
            set_slide_stage(session, SlideStage.ANALYSING, barcode=job.barcode)
        run = Workflow(self.engine, self.store, self.settings).analyse(
            job.study_instance_uid, self.models(), actor=f"job:{job.id}", run_key=job.key
        )
        pause("analyse.stored")
        with Session(self.engine) as session, session.begin():
            mine = Jobs.still_ours(session, job.id, self.owner)  # type: ignore[arg-type]
            if mine is None:
                log.warning("job %s was cancelled while it ran; its results are stored", job.id)
                return
            Jobs.finish(session, mine)
        log.info("slide %s: %d cells, preliminary result%s", job.barcode, run.cells,
                 f" queued (outbox #{run.outbox_id})" if run.outbox_id else "")  # fmt: skip

    # ---- what the scheduler does between jobs -----------------------------------------------------------------

    def track_results(self) -> int:
        """Slides whose result message the LIS acknowledged move on (preliminary → preliminary_sent, …)."""
        from hl7 import Outbox
        from hl7.outbox import SENT

        outbox = Outbox(self.engine)
        moved = 0
        with Session(self.engine) as session, session.begin():
            query = select(Slide).where(col(Slide.stage).in_(AWAITING_ACK), col(Slide.outbox_id).is_not(None))
            for slide in session.exec(query).all():
                entry = outbox.get(slide.outbox_id)  # type: ignore[arg-type]
                if entry is None or entry.state != SENT:
                    continue
                if slide.stage == SlideStage.PRELIMINARY.value:
                    stage = SlideStage.PRELIMINARY_SENT
                else:
                    case = session.get(Case, slide.case_id)
                    corrected = case is not None and case.status == CaseStatus.CORRECTED.value
                    stage = SlideStage.CORRECTED if corrected else SlideStage.FINAL_SENT
                set_slide_stage(session, stage, barcode=slide.barcode)
                moved += 1
        return moved

    def redispatch(self, *, broker_empty: Callable[[], bool] | None = None, stale_after_s: float = 600.0) -> list[int]:
        """Scale-out: hand the broker the due jobs it does not hold (never sent, retried after a back-off,
        or abandoned by a worker that died); a job sent twice is claimed once.

        A queued job sent earlier is sent again when the broker's queue is empty (`broker_empty()`, asked
        only then: its message was lost, e.g. with a broker restart; a worker holds only the message of the
        job it runs), else after `stale_after_s`.
        """
        now = utcnow()
        ids = []
        empty: bool | None = None
        for job in self.jobs.due(now, limit=100):
            sent = stored_utc(job.dispatched_at) if job.dispatched_at is not None else None
            if job.state == JobState.RUNNING.value:
                wait = self.jobs.lease_s
            else:
                if empty is None and sent is not None and now - sent > timedelta(seconds=REDISPATCH_GRACE_S):
                    empty = bool(broker_empty and broker_empty())
                wait = REDISPATCH_GRACE_S if empty else stale_after_s
            if sent is None or now - sent > timedelta(seconds=wait):
                ids.append(job.id)
        if ids:
            self.dispatch(ids)  # type: ignore[arg-type]
        return ids  # type: ignore[return-value]


def slide_rows(engine: Engine, *, limit: int = 100) -> list[dict[str, object]]:
    """Slides with their stage, newest first (`marrowlink jobs list --slides`, `/api/slides`)."""
    with Session(engine) as session:
        query = select(Slide, Case).join(Case, col(Case.id) == col(Slide.case_id)).order_by(col(Slide.id).desc())
        rows = session.exec(query.limit(limit)).all()
        return [
            {
                "slide": slide.barcode,
                "accession": case.accession_number,
                "stage": slide.stage,
                "since": stored_iso(slide.stage_at or slide.created_at),
                "reason": slide.stage_reason,
                "case_status": case.status,
            }
            for slide, case in rows
        ]
