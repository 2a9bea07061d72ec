"""Results to the LIS: a case and an AI (or reviewed) differential become a queued ORU^R01.

The SR and the ORU say the same thing because both are made from the same `ai.Differential`; the
ORU's filler order number (OBR-3) is the case's, so P → F → C messages refer to one result.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from acquisition.timestamps import Instant, Precision, stored_utc
from ai.results import Differential
from hl7 import DifferentialResult, OruCase, ResultStatus
from hl7.model import Patient as HL7Patient
from hl7.model import PatientId, PersonName, Provider
from integration.cases import Case, audit, get_case, patient_identifiers
from integration.cases import Patient as PatientRow
from integration.settings import Settings

UNIDENTIFIED_KEYS = ("UNIDENTIFIED",)


def differential_result(
    differential: Differential, *, algorithm_name: str, algorithm_version: str, analysed_at: datetime | None = None
) -> DifferentialResult:
    counts = {code: n for code, n in differential.counts.items() if code not in UNIDENTIFIED_KEYS}
    unidentified = sum(differential.counts.get(code, 0) for code in UNIDENTIFIED_KEYS)
    return DifferentialResult(
        counts=counts,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        analysed_at=analysed_at or datetime.now(UTC),
        me_ratio=differential.me_ratio,
        unidentified=unidentified,
    )


def oru_case(engine: Engine, accession_number: str, *, study_instance_uid: str, settings: Settings) -> OruCase | None:
    """The ORU's case side from the order that created the case; None when there is no such order."""
    with Session(engine) as session:
        case = get_case(session, accession_number)
        if case is None:
            return None
        patient_row = session.get(PatientRow, case.patient_id)
        ids = patient_identifiers(session, case.patient_id)
    patient = HL7Patient(
        ids=tuple(PatientId(i.value, i.authority, i.type_code) for i in ids) or (PatientId("UNKNOWN"),),
        name=PersonName(patient_row.family_name, patient_row.given_name, patient_row.middle_name)
        if patient_row
        else PersonName(),
        birth_date=patient_row.birth_date if patient_row else None,
        sex=patient_row.sex if patient_row else "",
    )
    base = settings.base_url
    provider = None
    if case.ordering_provider_id or case.ordering_provider_family or case.ordering_provider_given:
        provider = Provider(case.ordering_provider_id, case.ordering_provider_family, case.ordering_provider_given)
    return OruCase(
        patient=patient,
        placer_order_number=case.placer_order_number,
        filler_order_number=case.filler_order_number or case.accession_number,
        accession_number=case.accession_number,
        ordering_provider=provider,
        collected_at=_collected(case),
        study_instance_uid=study_instance_uid,
        study_url=f"{base}/dicomweb/studies/{study_instance_uid}",
        # The case's review page: a LIS user follows it (and logs in); the DICOMweb link needs a token.
        viewer_url=f"{base}/review/cases/{case.accession_number}",
        receiving_application=settings.lis_application,
        receiving_facility=settings.lis_facility,
    )


def _collected(case: Case) -> Instant | None:
    """OBR-7 as the order sent it: the stored UTC instant with its precision (seconds when not kept)."""
    if case.collected_at is None:
        return None
    return Instant(
        stored_utc(case.collected_at), Precision(case.collected_precision or Precision.SECOND), offset_given=True
    )


def send_result(
    engine: Engine,
    settings: Settings,
    *,
    accession_number: str,
    study_instance_uid: str,
    result: DifferentialResult,
    status: ResultStatus,
    actor: str,
    control_id: str | None = None,
) -> int | None:
    """Queue the ORU in the durable outbox; returns its outbox id, None when no LIS is configured.

    With a `control_id` (a job's own, see `result_control_id`) it is queued at most once: when a message
    with that MSH-10 is already in the outbox, its id is returned and nothing new is queued.
    """
    if not settings.lis_destination:
        return None
    case = oru_case(engine, accession_number, study_instance_uid=study_instance_uid, settings=settings)
    if case is None:
        return None
    from hl7 import Outbox
    from integration.lis import queue_result

    if control_id is not None and (existing := Outbox(engine).by_control_id(control_id)) is not None:
        return existing.id
    try:
        queued = queue_result(
            engine, case, result, status, settings.lis_destination, zone=settings.zone, control_id=control_id
        )
    except IntegrityError:
        if control_id is None or (existing := Outbox(engine).by_control_id(control_id)) is None:
            raise
        return existing.id  # queued by another attempt between our look and our insert
    with Session(engine) as session, session.begin():
        audit(session, actor, f"result.queued.{status.value}", "case", accession_number, outbox=queued.id)
    return queued.id


def result_control_id(key: str) -> str:
    """MSH-10 of a result a job sends: 20 characters derived from the job and the result status, so that
    every attempt of the job names the same message."""
    import hashlib

    return "MJ" + hashlib.sha256(key.encode()).hexdigest()[:18].upper()


def mark_preliminary(engine: Engine, accession_number: str, *, actor: str, sr_instance_uid: str) -> bool:
    """The case has an AI result now (unless a person already signed it); False when there is no case."""
    from integration.cases import CaseStatus

    with Session(engine) as session, session.begin():
        case = get_case(session, accession_number)
        if case is None:
            return False
        if case.status in (CaseStatus.ORDERED.value, CaseStatus.PRELIMINARY.value):
            case.status = CaseStatus.PRELIMINARY.value
            case.updated_at = datetime.now(UTC)
            session.add(case)
        audit(session, actor, "analysis.stored", "case", accession_number, sr=sr_instance_uid)
        return True
