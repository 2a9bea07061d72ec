"""What happens to a case, in one place: analyse → preliminary → review → sign → final → correct.

- **analyse**: the networks run on a stored slide; SEG, annotations and the preliminary SR are stored,
  every cell is recorded for review, and the preliminary ORU (P) is queued.
- **review**: people reclassify, delete and add cells; the AI's own classes are never changed.
- **sign**: a pathologist signs; the final SR (VERIFIED, the signer as Verifying Observer, the counts
  after review, referencing the run's SEG and annotations) is stored and the ORU (F) queued, OBR-3 the
  same as the P's. Refused while the unidentified bin is not empty, and for a case already signed.
- **correct**: a signed case is reopened; the next sign-off stores a new SR that references the one it
  supersedes (never an overwrite) and queues an ORU (C).

The CLI (`analyze`, `sign`), the demo and the HTTP API all call this module; the API reaches it through
the object handed to `create_app`, so `api` never imports `integration`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session, select

from acquisition import CLASS_CODES
from ai.catalogue import UNIDENTIFIED
from ai.results import Differential
from dicom_store import Store
from hl7 import Method, ResultStatus
from integration.cases import Case, CaseStatus, SlideStage, audit, get_case, set_slide_stage
from integration.review import (
    CellRow,
    Report,
    by_region,
    cell_row,
    class_counts,
    classes_of,
    latest_report,
    run_cells,
    run_regions,
)
from integration.settings import Settings

log = logging.getLogger(__name__)

#: Where people may still change cells.
OPEN_FOR_REVIEW = (CaseStatus.PRELIMINARY.value, CaseStatus.IN_REVIEW.value, CaseStatus.CORRECTING.value)


class WorkflowError(Exception):
    """A request the workflow refuses; `status` is the HTTP status an API answers with."""

    status = 400


class NotFound(WorkflowError):
    status = 404


class Conflict(WorkflowError):
    status = 409


class Invalid(WorkflowError):
    status = 422


@dataclass(frozen=True)
class Signer:
    """Who signs: their login, their name in DICOM PN form (Family^Given) and their organization."""

    login: str
    name: str
    organization: str


@dataclass(frozen=True)
class Signed:
    accession_number: str
    status: str  # final | corrected
    sr_instance_uid: str
    predecessor_sr_uid: str
    outbox_id: int | None
    differential: Differential


class Workflow:
    """The case workflow over one index database, one store and the site's settings."""

    def __init__(self, engine: Engine, store: Store, settings: Settings) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings

    # ---- analyse --------------------------------------------------------------------------------------

    def analyse(
        self,
        study_instance_uid: str,
        models: object,
        *,
        actor: str,
        send: bool = True,
        progress: Callable[[int], None] | None = None,
        run_key: str | None = None,
    ):  # type: ignore[no-untyped-def]
        """Run the networks on a stored slide, store the results, record the cells, queue the ORU (P).

        With a `run_key` (a pipeline job's) the run is idempotent: its UIDs and the ORU's MSH-10 derive
        from the key, what a killed attempt stored of an unfinished run is removed first, and a run that
        was already recorded is not analysed again (only its ORU is queued, once).
        """
        from integration.analysis import RunUids, run_analysis

        uids = RunUids.derive(self.settings.uid_root, run_key) if run_key else None
        if uids is not None:
            resumed = self._recorded_run(uids.sr, study_instance_uid)
            if resumed is not None:
                log.info("run %s was stored before the last attempt stopped; not analysed again", run_key)
                self._after_run(resumed, actor=actor, send=send, run_key=run_key)
                return resumed
            self._remove_partial(uids.series)
        run = run_analysis(
            self.store,
            study_instance_uid,
            models,  # type: ignore[arg-type]
            uid_root=self.settings.uid_root,
            zone=self.settings.zone,
            progress=progress,
            uids=uids,
        )
        self.record_run(run, actor=actor)
        self._after_run(run, actor=actor, send=send, run_key=run_key)
        return run

    def _after_run(self, run, *, actor: str, send: bool, run_key: str | None) -> None:  # type: ignore[no-untyped-def]
        """The case has a preliminary result: its state, the ORU (P), the slide's stage."""
        from integration.results import differential_result, mark_preliminary, result_control_id, send_result

        mark_preliminary(self.engine, run.accession_number, actor=actor, sr_instance_uid=run.sr_instance_uid)
        if send and run.accession_number:
            result = differential_result(
                run.differential, algorithm_name=run.algorithm_name, algorithm_version=run.algorithm_version
            )
            run.outbox_id = send_result(
                self.engine,
                self.settings,
                accession_number=run.accession_number,
                study_instance_uid=run.study_instance_uid,
                result=result,
                status=ResultStatus.PRELIMINARY,
                actor=actor,
                control_id=result_control_id(f"{run_key}:P") if run_key else None,
            )
        if run.container_identifier:
            with Session(self.engine) as session, session.begin():
                set_slide_stage(
                    session,
                    SlideStage.PRELIMINARY,
                    barcode=run.container_identifier,
                    outbox_id=run.outbox_id,
                    study_instance_uid=run.study_instance_uid,
                )

    def _recorded_run(self, sr_instance_uid: str, study_instance_uid: str):  # type: ignore[no-untyped-def]
        """The AnalysisRun of an already recorded report with this SR, rebuilt from the index; else None."""
        from integration.analysis import AnalysisRun

        with Session(self.engine) as session:
            report = session.exec(select(Report).where(Report.sr_instance_uid == sr_instance_uid)).first()
            if report is None:
                return None
            case = session.get(Case, report.case_id)
            counts = class_counts(session, report.id)  # type: ignore[arg-type]
        header = self.store.get_dataset(sr_instance_uid, stop_before_pixels=True)
        algorithm = json.loads(report.algorithm or "{}")
        return AnalysisRun(
            study_instance_uid=study_instance_uid,
            accession_number=case.accession_number if case is not None else "",
            container_identifier=str(header.get("ContainerIdentifier", "") or self._barcode_of(study_instance_uid)),
            stored=[],
            sr_instance_uid=sr_instance_uid,
            differential=Differential.from_classes(classes_of(counts)),
            cells=sum(counts.values()),
            regions=len(run_regions(report)),
            algorithm_name=algorithm.get("name", ""),
            algorithm_version=algorithm.get("version", ""),
            seg_instance_uid=report.seg_instance_uid,
            ann_instance_uid=report.ann_instance_uid,
            aoi_instance_uid=report.aoi_instance_uid,
        )

    def _barcode_of(self, study_instance_uid: str) -> str:
        found = self.store.search("SERIES", [("StudyInstanceUID", study_instance_uid), ("Modality", "SM")])
        return str(found[0].get("ContainerIdentifier", "")) if found else ""

    def _remove_partial(self, series: tuple[str, ...]) -> None:
        """What an attempt that was killed stored of these series (a run is recorded only once complete)."""
        for series_uid in series:
            for instance in self.store.instances(series_instance_uid=series_uid):
                log.warning("removing %s, left by an unfinished attempt of this run", instance.sop_instance_uid)
                self.store.delete_instance(instance.sop_instance_uid)

    def record_run(self, run, *, actor: str) -> int | None:  # type: ignore[no-untyped-def]
        """Keep the run's report and every cell for review; None when the slide has no case (no order)."""
        analysis = run.analysis
        with Session(self.engine) as session, session.begin():
            case = get_case(session, run.accession_number) if run.accession_number else None
            if case is None or analysis is None:
                return None
            level_px = analysis.pixel_size_um
            report = Report(
                case_id=case.id,  # type: ignore[arg-type]
                status="preliminary",
                study_instance_uid=run.study_instance_uid,
                sr_instance_uid=run.sr_instance_uid,
                seg_instance_uid=run.seg_instance_uid,
                ann_instance_uid=run.ann_instance_uid,
                aoi_instance_uid=run.aoi_instance_uid,
                algorithm=json.dumps(asdict(run.algorithm), default=str) if run.algorithm is not None else "{}",
                pixel_size_um=level_px,
                regions=json.dumps([[int(r.region.column), int(r.region.row), int(r.region.width),
                                     int(r.region.height)] for r in analysis.regions]),
            )  # fmt: skip
            session.add(report)
            session.flush()
            report.run_id = report.id
            rows = []
            for result in analysis.regions:
                region, detections = result.region, result.detections
                scale = detections.pixel_size_um / level_px
                for cell in detections.cells:
                    polygon = (np.asarray(cell.polygon, dtype=np.float64) + 0.5) * scale - 0.5
                    rows.append(
                        cell_row(
                            report.id,  # type: ignore[arg-type]
                            int(region.column),
                            int(region.row),
                            int(region.width),
                            int(region.height),
                            polygon,
                            area_px=float(cell.area_px) * scale * scale,
                            predicted_class=None if cell.cell_class == UNIDENTIFIED else cell.cell_class,
                            probability=None if cell.probability is None else float(cell.probability),
                            probabilities=_top(cell.probabilities, run.classes),
                            border=bool(getattr(cell, "border", False)),
                        )
                    )
            session.add_all(rows)
            audit(session, actor, "review.cells_recorded", "case", case.accession_number,
                  sr=run.sr_instance_uid, cells=len(rows), regions=len(analysis.regions))  # fmt: skip
            return report.id

    # ---- review ---------------------------------------------------------------------------------------

    def differential(self, accession_number: str) -> Differential:
        """The counts as the case stands now: reviewed classes where given, deleted cells left out."""
        with Session(self.engine) as session:
            _, run = self._open_run(session, accession_number, for_change=False)
            return Differential.from_classes(classes_of(class_counts(session, run.id)))  # type: ignore[arg-type]

    def reclassify(self, cell_id: int, code: str, *, actor: str) -> CellRow:
        if code not in CLASS_CODES:
            raise Invalid(f"class {code!r} is not one of the 23 cell classes ({', '.join(CLASS_CODES)})")
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            cell, case = self._cell_for_change(session, cell_id)
            before = cell.current_class
            cell.reviewed_class = code
            cell.updated_at = datetime.now(UTC)
            session.add(cell)
            self._start_review(session, case)
            audit(session, actor, "cell.reclassified", "cell", cell_id, case=case.accession_number,
                  before=before, after=code, ai=cell.predicted_class)  # fmt: skip
            return cell

    def delete_cell(self, cell_id: int, *, actor: str) -> CellRow:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            cell, case = self._cell_for_change(session, cell_id)
            cell.deleted = True
            cell.updated_at = datetime.now(UTC)
            session.add(cell)
            self._start_review(session, case)
            audit(session, actor, "cell.deleted", "cell", cell_id, case=case.accession_number,
                  was=cell.current_class)  # fmt: skip
            return cell

    def add_cell(
        self, accession_number: str, region: tuple[int, int, int, int], polygon: list[list[float]], code: str, *,
        actor: str,
    ) -> CellRow:  # fmt: skip
        """A cell the AI missed: a polygon (≥ 3 points, region-local pixels of the 40x level) in an analysed region."""
        if code not in CLASS_CODES:
            raise Invalid(f"class {code!r} is not one of the 23 cell classes ({', '.join(CLASS_CODES)})")
        points = np.asarray(polygon, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.isfinite(points).all():
            raise Invalid("polygon must be a list of at least 3 [x, y] points")
        column, row, width, height = region
        if (points < 0).any() or (points[:, 0] > width - 1).any() or (points[:, 1] > height - 1).any():
            raise Invalid(f"polygon leaves the {width}x{height} region")
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            case, run = self._open_run(session, accession_number, for_change=True)
            analysed = set(run_regions(run))
            if (column, row, width, height) not in analysed:
                raise Invalid(f"region {list(region)} was not analysed in this case")
            area = 0.5 * abs(float(np.dot(points[:, 0], np.roll(points[:, 1], 1)) -
                                   np.dot(points[:, 1], np.roll(points[:, 0], 1))))  # fmt: skip
            cell = cell_row(run.id, column, row, width, height, points, area_px=area, reviewed_class=code,  # type: ignore[arg-type]
                            added_by=actor)  # fmt: skip
            session.add(cell)
            session.flush()
            self._start_review(session, case)
            audit(session, actor, "cell.added", "cell", cell.id, case=case.accession_number, cls=code)
            return cell

    # ---- sign and correct -----------------------------------------------------------------------------

    def sign(self, accession_number: str, signer: Signer, *, actor: str) -> Signed:
        """Store the final (or corrected) SR from the reviewed cells and queue the ORU (F or C)."""
        from ai.dicom import AlgorithmInfo, AnalysisRegion, SeriesSlot, VerifyingObserver, write_differential_report
        from ai.results import Cell, CellDetections
        from dicom_store.slides import StoredSlide
        from integration.analysis import next_series_number
        from integration.results import differential_result, send_result

        with Session(self.engine) as session:
            case, run = self._open_run(session, accession_number, for_change=True)
            cells = run_cells(session, run.id)  # type: ignore[arg-type]
            unidentified = sum(1 for c in cells if c.current_class is None)
            if unidentified:
                raise Conflict(f"{unidentified} cells are still unidentified: classify or delete them before signing")
            correcting = case.status == CaseStatus.CORRECTING.value
            previous = latest_report(session, case.id, statuses=("final", "corrected")) if correcting else None  # type: ignore[arg-type]
            regions = by_region(cells, run_regions(run))
        status = "corrected" if correcting else "final"
        predecessor_uid = previous.sr_instance_uid if previous is not None else ""
        source = StoredSlide.find(self.store, run.study_instance_uid).header()
        seg = self.store.get_dataset(run.seg_instance_uid, stop_before_pixels=True) if run.seg_instance_uid else None
        ann = self.store.get_dataset(run.ann_instance_uid) if run.ann_instance_uid else None
        predecessor = self.store.get_dataset(previous.sr_instance_uid) if previous is not None else None
        algorithm = AlgorithmInfo(**json.loads(run.algorithm))
        analysis_regions = [
            AnalysisRegion(r.column, r.row, r.width, r.height, CellDetections(
                [Cell(c.points(), (c.x0, c.y0, c.x1, c.y1), c.area_px, cell_class=c.current_class,
                      probability=c.probability) for c in r.cells],
                (r.height, r.width), run.pixel_size_um))
            for r in regions
        ]  # fmt: skip
        differential = Differential.from_classes(c.current_class for r in regions for c in r.cells)
        sr = write_differential_report(
            source=source,
            seg=seg,
            ann=ann,
            differential=differential,
            algorithm=algorithm,
            regions=analysis_regions,
            series=SeriesSlot(
                self.settings.uid_root,
                next_series_number(self.store, run.study_instance_uid),
                zone=self.settings.zone,
            ),
            status=status,
            verifying_observer=VerifyingObserver(signer.name or signer.login, self._organization(signer), signer.login),
            predecessor=predecessor,
        )
        self.store.store_dataset(sr)
        sr_uid = str(sr.SOPInstanceUID)
        with Session(self.engine) as session, session.begin():
            # Locked (PostgreSQL) so that two people signing at once store one final result, not two.
            locked = select(Case).where(Case.accession_number == accession_number).with_for_update()
            case = session.exec(locked).first()  # type: ignore[assignment]
            if case is None or case.status not in OPEN_FOR_REVIEW:
                raise Conflict(f"case {accession_number} changed while signing; the SR {sr_uid} is stored unused")
            report = Report(
                case_id=case.id,  # type: ignore[arg-type]
                status=status,
                study_instance_uid=run.study_instance_uid,
                sr_instance_uid=sr_uid,
                seg_instance_uid=run.seg_instance_uid,
                ann_instance_uid=run.ann_instance_uid,
                aoi_instance_uid=run.aoi_instance_uid,
                run_id=run.id,
                predecessor_sr_uid=predecessor_uid,
                algorithm=run.algorithm,
                pixel_size_um=run.pixel_size_um,
                regions=run.regions,
                signed_by=signer.login,
            )
            session.add(report)
            case.status = CaseStatus.CORRECTED.value if correcting else CaseStatus.FINAL.value
            case.updated_at = datetime.now(UTC)
            session.add(case)
            counts = {k: v for k, v in differential.counts.items() if v}
            audit(session, actor, f"case.signed.{status}", "case", accession_number, sr=sr_uid,
                  predecessor=predecessor_uid, counts=counts)  # fmt: skip
            session.flush()
            report_id = report.id
        result = differential_result(differential, algorithm_name=algorithm.name, algorithm_version=algorithm.version)
        result = _reviewed(result, signer)
        outbox = send_result(
            self.engine,
            self.settings,
            accession_number=accession_number,
            study_instance_uid=run.study_instance_uid,
            result=result,
            status=ResultStatus.CORRECTED if correcting else ResultStatus.FINAL,
            actor=actor,
        )
        with Session(self.engine) as session, session.begin():
            stored = session.get(Report, report_id)
            if stored is not None and outbox is not None:
                stored.outbox_id = outbox
                session.add(stored)
            if stored is not None:
                set_slide_stage(session, SlideStage.SIGNED, case_id=stored.case_id, outbox_id=outbox)
        return Signed(accession_number, status, sr_uid, predecessor_uid, outbox, differential)

    def reopen(self, accession_number: str, *, actor: str, reason: str = "") -> None:
        """Open a signed case for a correction; its next sign-off supersedes the signed report."""
        with Session(self.engine) as session, session.begin():
            case = self._case(session, accession_number)
            if case.status not in (CaseStatus.FINAL.value, CaseStatus.CORRECTED.value):
                raise Conflict(f"case {accession_number} is {case.status}, not signed: review and sign it instead")
            case.status = CaseStatus.CORRECTING.value
            case.updated_at = datetime.now(UTC)
            session.add(case)
            audit(session, actor, "case.reopened", "case", accession_number, reason=reason)

    # ---- helpers --------------------------------------------------------------------------------------

    def _organization(self, signer: Signer) -> str:
        """Who the signer signs for: their account's organization, else the site's (settings), else the LIS facility."""
        return signer.organization or self.settings.organization or self.settings.lis_facility or "marrowlink"

    @staticmethod
    def _case(session: Session, accession_number: str) -> Case:
        case = get_case(session, accession_number)
        if case is None:
            raise NotFound(f"no case with accession number {accession_number!r}")
        return case

    def _open_run(self, session: Session, accession_number: str, *, for_change: bool) -> tuple[Case, Report]:
        case = self._case(session, accession_number)
        run = latest_report(session, case.id, statuses=("preliminary",))  # type: ignore[arg-type]
        if run is None:
            raise Conflict(f"case {accession_number} has no AI result to review yet")
        if for_change and case.status not in OPEN_FOR_REVIEW:
            hint = " (reopen it for a correction first)" if case.status in ("final", "corrected") else ""
            raise Conflict(f"case {accession_number} is {case.status}: it cannot be changed{hint}")
        return case, run

    def _cell_for_change(self, session: Session, cell_id: int) -> tuple[CellRow, Case]:
        cell = session.get(CellRow, cell_id)
        if cell is None:
            raise NotFound(f"no cell {cell_id}")
        report = session.get(Report, cell.run_id)
        case = session.get(Case, report.case_id) if report is not None else None
        if case is None:
            raise NotFound(f"cell {cell_id} belongs to no case")
        _, run = self._open_run(session, case.accession_number, for_change=True)
        if run.id != cell.run_id:
            raise Conflict(f"cell {cell_id} is from an earlier analysis of case {case.accession_number}")
        if cell.deleted:
            raise Conflict(f"cell {cell_id} was deleted")
        return cell, case

    @staticmethod
    def _start_review(session: Session, case: Case) -> None:
        if case.status == CaseStatus.PRELIMINARY.value:
            case.status = CaseStatus.IN_REVIEW.value
            set_slide_stage(session, SlideStage.IN_REVIEW, case_id=case.id)
        case.updated_at = datetime.now(UTC)
        session.add(case)


def _top(probabilities: object, classes: list[str], n: int = 5) -> str:
    """The n most likely classes of a cell as JSON {code: p}, for the gallery's detail view."""
    if probabilities is None or not classes:
        return "{}"
    values = np.asarray(probabilities, dtype=np.float64).ravel()
    if len(values) != len(classes):
        return "{}"
    best = np.argsort(values)[::-1][:n]
    return json.dumps({classes[i]: round(float(values[i]), 4) for i in best})


def _reviewed(result, signer: Signer):  # type: ignore[no-untyped-def]
    """The ORU side of a signed result: counted by a person (OBX-17 manual), naming who signed."""
    from dataclasses import replace

    return replace(result, method=Method.MANUAL, reviewer=signer.name.replace("^", " ").strip())
