"""The workflow as the HTTP API sees it (api.review.ReviewService): JSON-ready answers, refusals as ReviewError.

`api` defines what it needs; this adapter is what `serve` hands to `create_app`, so the API calls the
same workflow as the CLI and the demo without importing `integration`.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from acquisition import CELL_CLASSES, CRITICAL_CODES, NOT_CLASSED_CODES
from acquisition.timestamps import stored_iso
from ai.catalogue import UNIDENTIFIED
from api.review import Person, ReviewError
from dicom_store import Store
from integration.cases import AuditLog, Case, CaseStatus, Patient, audit, case_slides, get_case
from integration.pipeline_service import PipelineOperations
from integration.review import (
    CellRow,
    Report,
    case_reports,
    class_counts,
    classes_of,
    counted,
    latest_report,
    review_changes,
    run_regions,
)
from integration.settings import Settings
from integration.users import Users
from integration.workflow import Signer, Workflow, WorkflowError

#: Slides whose headers the crop route keeps parsed (people review a few slides at a time).
SLIDES_KEPT = 8
#: Worklist order: cases with critical cells first, then the oldest; closed cases last.
_CLOSED = (CaseStatus.FINAL.value, CaseStatus.CORRECTED.value, CaseStatus.CANCELLED.value)
_NAMES = {c.code: c.name for c in CELL_CLASSES}


class ReviewAdapter(PipelineOperations):
    """Implements api.review.ReviewService over the workflow, the accounts, the store and the pipeline."""

    def __init__(self, engine: Engine, store: Store, settings: Settings) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings
        self.workflow = Workflow(engine, store, settings)
        self.users = Users(engine)
        # The last few slides' headers and tile maps (a 40x header holds thousands of per-frame items).
        self._slides: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    # ---- people ------------------------------------------------------------------------------------

    def login(self, login: str, password: str, *, source: str) -> tuple[Person, str, str] | None:
        found = self.users.login(login, password, source=source)
        if found is None:
            return None
        account, token, csrf = found
        return Person(account.login, account.role, account.name, account.organization), token, csrf

    def session(self, token: str) -> tuple[Person, str] | None:
        found = self.users.session(token)
        if found is None:
            return None
        account, csrf = found
        return Person(account.login, account.role, account.name, account.organization), csrf

    def logout(self, token: str) -> None:
        self.users.logout(token)

    # ---- reading ------------------------------------------------------------------------------------

    def worklist(self, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            # Every open case (they are ordered by their critical cells), and only the latest closed ones.
            open_query = select(Case).where(col(Case.status).not_in(_CLOSED))
            closed_query = select(Case).where(col(Case.status).in_(_CLOSED))
            if status:
                open_query, closed_query = (
                    open_query.where(Case.status == status),
                    closed_query.where(Case.status == status),
                )
            closed_query = closed_query.order_by(col(Case.updated_at).desc()).limit(limit)
            cases = [*session.exec(open_query).all(), *session.exec(closed_query).all()]
            rows = []
            for case in cases:
                run = latest_report(session, case.id, statuses=("preliminary",))  # type: ignore[arg-type]
                critical = self._critical(session, run) if run is not None else {}
                rows.append((case, critical, self._patient(session, case), self._held_by(session, case)))
        rows.sort(key=lambda r: (r[0].status in _CLOSED, -sum(r[1].values()), stored_iso(r[0].created_at) or ""))
        return [
            {
                "accession": case.accession_number,
                "status": case.status,
                "priority": case.priority,
                "patient": patient,
                "critical": {code: n for code, n in critical.items() if n},
                "critical_total": sum(critical.values()),
                "ordered_at": stored_iso(case.created_at),
                "updated_at": stored_iso(case.updated_at),
                "held_by": held_by,
                "url": f"/review/cases/{case.accession_number}",
            }
            for case, critical, patient, held_by in rows[:limit]
        ]

    def case(self, accession: str, *, actor: str) -> dict[str, Any]:
        with Session(self.engine) as session, session.begin():
            case = get_case(session, accession)
            if case is None:
                raise ReviewError(404, f"no case with accession number {accession!r}")
            run = latest_report(session, case.id, statuses=("preliminary",))  # type: ignore[arg-type]
            reports = case_reports(session, case.id)  # type: ignore[arg-type]
            slides = [s.barcode for s in case_slides(session, case.id)]  # type: ignore[arg-type]
            patient = self._patient(session, case)
            audit(session, actor, "case.viewed", "case", accession)
            answer: dict[str, Any] = {
                "accession": accession,
                "status": case.status,
                "priority": case.priority,
                "patient": patient,
                "slides": slides,
                "collected_at": stored_iso(case.collected_at),
                "ordered_at": stored_iso(case.created_at),
                "research_use_only": True,
                "reports": [_report_json(r) for r in reports],
                "history": [
                    {"at": stored_iso(e.at), "actor": e.actor, "action": e.action}
                    for e in session.exec(
                        select(AuditLog)
                        .where(AuditLog.entity == "case", AuditLog.entity_id == accession)
                        .order_by(col(AuditLog.id))
                    ).all()
                    if e.action != "case.viewed"
                ],
            }
            if run is not None:
                answer["study_instance_uid"] = run.study_instance_uid
                answer["regions"] = [list(r) for r in run_regions(run)]
                answer["differential"], answer["changes"] = self._standing(session, run)
                answer["viewer"] = {
                    "dicomweb": "/dicomweb",
                    "study": run.study_instance_uid,
                    "annotations": run.ann_instance_uid,
                    "annotations_series": self._series_of(run.ann_instance_uid),
                    "segmentation": run.seg_instance_uid,
                    "aoi": run.aoi_instance_uid,
                    "aoi_series": self._series_of(run.aoi_instance_uid),
                }
        return answer

    def cells(self, accession: str, *, cls: str | None, limit: int, after: int) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            run = self._run(session, accession)
            query = select(CellRow).where(CellRow.run_id == run.id, counted(), CellRow.id > after)
            if cls == UNIDENTIFIED:
                query = query.where(
                    (CellRow.reviewed_class == None) & (CellRow.predicted_class == None)  # noqa: E711
                )
            elif cls:
                reviewed = (CellRow.reviewed_class == cls) | (
                    (CellRow.reviewed_class == None) & (CellRow.predicted_class == cls)  # noqa: E711
                )
                query = query.where(reviewed)
            cells = session.exec(query.order_by(col(CellRow.id)).limit(limit)).all()
            return [_cell_json(c) for c in cells]

    def cell_at(self, accession: str, *, x_mm: float, y_mm: float) -> dict[str, Any]:
        from acquisition.wsi import LevelGeometry

        with Session(self.engine) as session:
            run = self._run(session, accession)
        slide = self._slide(run.study_instance_uid)
        column, row = LevelGeometry.of(slide.header()).slide_to_image(np.array([[x_mm, y_mm, 0.0]]))[0]
        column, row = column - 0.5, row - 0.5  # image coordinates put pixel centres at +0.5
        with Session(self.engine) as session:
            query = select(CellRow).where(
                CellRow.run_id == run.id,
                counted(),
                CellRow.region_column + CellRow.x0 <= column,
                CellRow.region_column + CellRow.x1 > column,
                CellRow.region_row + CellRow.y0 <= row,
                CellRow.region_row + CellRow.y1 > row,
            )
            found = session.exec(query).all()
        if not found:
            raise ReviewError(404, f"no cell of case {accession} at ({x_mm:.4f}, {y_mm:.4f}) mm")

        def distance(c: CellRow) -> float:
            return (c.region_column + (c.x0 + c.x1) / 2 - column) ** 2 + (c.region_row + (c.y0 + c.y1) / 2 - row) ** 2

        return _cell_json(min(found, key=distance))

    def _slide(self, study: str):  # type: ignore[no-untyped-def]
        from dicom_store.slides import StoredSlide

        with self._lock:
            slide = self._slides.pop(study, None) or StoredSlide.find(self.store, study)
            self._slides[study] = slide
            while len(self._slides) > SLIDES_KEPT:
                self._slides.popitem(last=False)
        return slide

    def cell_image(self, cell_id: int, *, size: int) -> bytes:
        import cv2

        with Session(self.engine) as session:
            cell = session.get(CellRow, cell_id)
            report = session.get(Report, cell.run_id) if cell is not None else None
            if cell is None or report is None:
                raise ReviewError(404, f"no cell {cell_id}")
        slide = self._slide(report.study_instance_uid)
        column, row, side = _crop_window(cell)
        window = slide.read_window(cell.region_column + column, cell.region_row + row, side, side)
        window = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ReviewError(500, "the crop could not be encoded")
        return io.BytesIO(png.tobytes()).getvalue()

    def audit(self, accession: str) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            case = get_case(session, accession)
            if case is None:
                raise ReviewError(404, f"no case with accession number {accession!r}")
            run_ids = [r.id for r in case_reports(session, case.id)]  # type: ignore[arg-type]
            cell_ids = [str(c) for c in session.exec(select(CellRow.id).where(col(CellRow.run_id).in_(run_ids))).all()]
            query = select(AuditLog).where(
                ((AuditLog.entity == "case") & (AuditLog.entity_id == accession))
                | ((AuditLog.entity == "cell") & col(AuditLog.entity_id).in_(cell_ids))
            )
            entries = session.exec(query.order_by(col(AuditLog.id))).all()
            return [
                {"at": stored_iso(e.at), "actor": e.actor, "action": e.action, "entity": e.entity,
                 "entity_id": e.entity_id, "details": json.loads(e.details)}
                for e in entries
            ]  # fmt: skip

    def outbox(self, *, limit: int) -> list[dict[str, Any]]:
        from hl7.tables import OutboxMessage

        with Session(self.engine) as session:
            rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id).desc()).limit(limit)).all()
            return [
                {"id": r.id, "destination": r.destination, "control_id": r.control_id, "state": r.state,
                 "reference": r.reference, "attempts": r.attempts, "last_error": r.last_error,
                 "created_at": stored_iso(r.created_at), "sent_at": stored_iso(r.sent_at)}
                for r in rows
            ]  # fmt: skip

    # ---- changing -----------------------------------------------------------------------------------

    def reclassify(self, cell_id: int, cls: str, *, actor: str) -> dict[str, Any]:
        return self._with_counts(self._refusing(self.workflow.reclassify, cell_id, cls, actor=actor))

    def delete_cell(self, cell_id: int, *, actor: str) -> dict[str, Any]:
        return self._with_counts(self._refusing(self.workflow.delete_cell, cell_id, actor=actor))

    def _with_counts(self, cell: CellRow) -> dict[str, Any]:
        """The changed cell and the case's differential after the change (the page updates its table)."""
        with Session(self.engine) as session:
            run = session.get(Report, cell.run_id)
            counts, changes = self._standing(session, run) if run is not None else (None, None)
        return {**_cell_json(cell), "differential": counts, "changes": changes}

    def add_cell(self, accession: str, body: dict[str, Any], *, actor: str) -> dict[str, Any]:
        region = tuple(int(v) for v in body.get("region") or ())
        if len(region) != 4:
            raise ReviewError(422, "region must be [column, row, width, height] of an analysed region")
        polygon = body.get("polygon")
        if polygon is None:
            x, y = (float(v) for v in body["point"])
            if not (0 <= x < region[2] and 0 <= y < region[3]):
                raise ReviewError(422, f"the point ({x:.0f}, {y:.0f}) is outside the analysed region {list(region)}")
            radius = 6.0 / (self._pixel_size(accession) or 0.1)  # a 12 µm cell drawn around the point
            angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            polygon = np.stack([x + radius * np.cos(angles), y + radius * np.sin(angles)], axis=1)
            polygon = np.clip(polygon, 0, [region[2] - 1, region[3] - 1]).tolist()
        cell = self._refusing(self.workflow.add_cell, accession, region, polygon, body["class"], actor=actor)
        return self._with_counts(cell)

    def sign(self, accession: str, signer: Person, *, actor: str) -> dict[str, Any]:
        signed = self._refusing(
            self.workflow.sign, accession, Signer(signer.login, signer.name, signer.organization), actor=actor
        )
        return {
            "accession": accession,
            "status": signed.status,
            "sr": signed.sr_instance_uid,
            "predecessor": signed.predecessor_sr_uid,
            "outbox_id": signed.outbox_id,
            "differential": _differential_json(signed.differential),
        }

    def reopen(self, accession: str, *, reason: str, actor: str) -> dict[str, Any]:
        self._refusing(self.workflow.reopen, accession, actor=actor, reason=reason)
        return {"accession": accession, "status": CaseStatus.CORRECTING.value}

    # ---- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _refusing(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except WorkflowError as exc:
            raise ReviewError(exc.status, str(exc)) from exc

    def _run(self, session: Session, accession: str) -> Report:
        case = get_case(session, accession)
        if case is None:
            raise ReviewError(404, f"no case with accession number {accession!r}")
        run = latest_report(session, case.id, statuses=("preliminary",))  # type: ignore[arg-type]
        if run is None:
            raise ReviewError(409, f"case {accession} has no AI result yet")
        return run

    def _series_of(self, sop_instance_uid: str) -> str:
        if not sop_instance_uid:
            return ""
        try:
            return self.store.instance(sop_instance_uid).series_instance_uid
        except Exception:  # a result object removed from the archive: the page shows the slide without it
            return ""

    def _pixel_size(self, accession: str) -> float:
        with Session(self.engine) as session:
            return self._run(session, accession).pixel_size_um

    @staticmethod
    def _held_by(session: Session, case: Case) -> str | None:
        """Who is reviewing an open case: the last person who changed one of its cells."""
        if case.status not in (CaseStatus.IN_REVIEW.value, CaseStatus.CORRECTING.value):
            return None
        marker = json.dumps({"case": case.accession_number})[1:-1]  # '"case": "ACC"', as audit() writes it
        query = (
            select(AuditLog.actor)
            .where(col(AuditLog.action).startswith("cell."), col(AuditLog.details).contains(marker))
            .order_by(col(AuditLog.id).desc())
        )
        return session.exec(query).first()

    @staticmethod
    def _critical(session: Session, run: Report) -> dict[str, int]:
        counts = class_counts(session, run.id)  # type: ignore[arg-type]
        return {code: counts.get(code, 0) for code in CRITICAL_CODES}

    @staticmethod
    def _standing(session: Session, run: Report) -> tuple[dict[str, Any], dict[str, object]]:
        """The differential as the case stands and the changes since the AI, from one count of the cells."""
        from ai.results import Differential

        counts = class_counts(session, run.id)  # type: ignore[arg-type]
        differential = _differential_json(Differential.from_classes(classes_of(counts)))
        return differential, review_changes(session, run.id, counts)  # type: ignore[arg-type]

    @staticmethod
    def _patient(session: Session, case: Case) -> dict[str, Any]:
        patient = session.get(Patient, case.patient_id)
        if patient is None:
            return {}
        return {
            "name": " ".join(p for p in (patient.given_name, patient.family_name) if p),
            "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
            "sex": patient.sex,
        }


def _crop_window(cell: CellRow) -> tuple[int, int, int]:
    """The crop's square around the cell: (column, row) of its top-left, region-local, and its side (px).

    The page maps a click on a crop back to the region with it (a missed cell beside a found one).
    """
    side = max(cell.x1 - cell.x0, cell.y1 - cell.y0, 96) + 24
    column = max(-cell.region_column, (cell.x0 + cell.x1) // 2 - side // 2)
    row = max(-cell.region_row, (cell.y0 + cell.y1) // 2 - side // 2)
    return column, row, side


def _report_json(report: Report) -> dict[str, Any]:
    return {
        "status": report.status,
        "sr": report.sr_instance_uid,
        "signed_by": report.signed_by,
        "predecessor": report.predecessor_sr_uid,
        "outbox_id": report.outbox_id,
        "at": stored_iso(report.created_at),
    }


def _cell_json(cell: CellRow) -> dict[str, Any]:
    return {
        "id": cell.id,
        "class": cell.current_class or UNIDENTIFIED,
        "ai_class": cell.predicted_class or UNIDENTIFIED,
        "reviewed_class": cell.reviewed_class,
        "probability": cell.probability,
        "probabilities": json.loads(cell.probabilities or "{}"),
        "deleted": cell.deleted,
        "added_by": cell.added_by or None,
        "region": [cell.region_column, cell.region_row, cell.region_width, cell.region_height],
        "bbox": [cell.x0, cell.y0, cell.x1, cell.y1],
        "crop": list(_crop_window(cell)),
        "image": f"/api/cells/{cell.id}/image",
    }


def _differential_json(differential: Any) -> dict[str, Any]:
    counts = {code: n for code, n in differential.counts.items() if n}
    outside = {*NOT_CLASSED_CODES, UNIDENTIFIED}  # shown, but not in the percentage denominator
    return {
        "counts": counts,
        "percent": {
            code: round(p, 1) for code, p in differential.percent.items() if counts.get(code) and code not in outside
        },
        "names": {code: _NAMES.get(code, code) for code in counts},
        "total": differential.total,
        "total_classed": differential.total_classed,
        "me_ratio": None if differential.me_ratio is None else round(differential.me_ratio, 2),
        "critical": {code: n for code, n in differential.critical.items() if n},
        "unidentified": differential.counts.get(UNIDENTIFIED, 0),
    }
