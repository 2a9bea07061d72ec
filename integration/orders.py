"""Applying inbound HL7 events to the domain: orders create/update cases, ADT updates/merges patients.

`CaseOrderHandler` is the `hl7.InboundHandler` that integration registers with the MLLP server; it
works inside the session hl7 commits together with the ACK, so an acknowledged order is a stored case
and a re-sent one changes nothing. ADT events for patients we have never seen are accepted and
ignored: an ADT feed announces every patient of the hospital, and refusing them would hold the
sender's queue for nothing.
"""

from __future__ import annotations

from sqlmodel import Session, select

from hl7 import ErrorCode, MessageError, Order, PatientMerge, PatientUpdate
from hl7.model import InboundEvent
from hl7.model import Patient as PatientValue
from integration.cases import (
    Case,
    CaseStatus,
    Patient,
    PatientIdentifier,
    Slide,
    audit,
    find_patient,
    get_case,
    utcnow,
)

CANCEL_CONTROLS = ("CA", "OC", "DC")


class CaseOrderHandler:
    """hl7's InboundHandler for the case domain."""

    def handle(self, session: Session, event: InboundEvent) -> None:
        actor = f"hl7:{event.header.sender}"
        if isinstance(event, Order):
            apply_order(session, event, actor)
        elif isinstance(event, PatientUpdate):
            update_patient(session, event.patient, actor, control_id=event.header.control_id)
        elif isinstance(event, PatientMerge):
            merge_patients(session, event, actor)
        else:  # pragma: no cover - the parser produces only the three types
            raise TypeError(f"unexpected event {type(event).__name__}")


def _keys(patient: PatientValue) -> list[tuple[str, str]]:
    return [(pid.id, pid.authority) for pid in patient.ids]


def _demographics(patient: PatientValue) -> dict[str, object]:
    return {
        "family_name": patient.name.family,
        "given_name": patient.name.given,
        "middle_name": patient.name.middle,
        "birth_date": patient.birth_date,
        "sex": patient.sex,
    }


def _add_identifiers(session: Session, row: Patient, patient: PatientValue) -> None:
    for pid in patient.ids:
        query = select(PatientIdentifier).where(
            PatientIdentifier.value == pid.id, PatientIdentifier.authority == pid.authority
        )
        existing = session.exec(query).first()
        if existing is None:
            session.add(
                PatientIdentifier(patient_id=row.id, value=pid.id, authority=pid.authority, type_code=pid.type_code)
            )
        elif existing.patient_id != row.id:
            existing.patient_id = row.id  # the identifier moved to the surviving record
            session.add(existing)


def upsert_patient(session: Session, patient: PatientValue, actor: str, *, control_id: str = "") -> Patient:
    """The patient holding any of the identifiers, updated; or a new one."""
    row = find_patient(session, _keys(patient))
    values = _demographics(patient)
    if row is None:
        row = Patient(**values)  # type: ignore[arg-type]
        session.add(row)
        session.flush()
        audit(session, actor, "patient.created", "patient", row.id, control_id=control_id, **values)
    else:
        changed = {k: v for k, v in values.items() if v not in ("", None) and getattr(row, k) != v}
        if changed:
            for key, value in changed.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            session.add(row)
            audit(session, actor, "patient.updated", "patient", row.id, control_id=control_id, **changed)
    _add_identifiers(session, row, patient)
    return row


def update_patient(session: Session, patient: PatientValue, actor: str, *, control_id: str = "") -> Patient | None:
    """ADT^A08: update a known patient; an unknown one is ignored (see module docstring)."""
    if find_patient(session, _keys(patient)) is None:
        return None
    return upsert_patient(session, patient, actor, control_id=control_id)


def apply_order(session: Session, order: Order, actor: str) -> Case:
    """Create or update the case of an order; a cancel (ORC-1 CA/OC/DC) cancels it."""
    control_id = order.header.control_id
    case = get_case(session, order.accession_number)
    if order.order_control in CANCEL_CONTROLS:
        if case is None:
            raise MessageError(
                ErrorCode.UNKNOWN_KEY,
                f"cannot cancel: no case with accession {order.accession_number!r}",
                segment="ORC",
            )
        case.status, case.updated_at = CaseStatus.CANCELLED.value, utcnow()
        session.add(case)
        audit(session, actor, "case.cancelled", "case", case.accession_number, control_id=control_id)
        return case
    patient = upsert_patient(session, order.patient, actor, control_id=control_id)
    provider = order.ordering_provider
    values = {
        "placer_order_number": order.placer_order_number,
        "patient_id": patient.id,
        "ordering_provider_id": provider.id if provider else "",
        "ordering_provider_name": " ".join(p for p in (provider.given, provider.family) if p) if provider else "",
        "ordering_provider_family": provider.family if provider else "",
        "ordering_provider_given": provider.given if provider else "",
        "priority": order.priority[:2],
        "service_code": order.service_code,
        "service_text": order.service_text,
        "collected_at": order.collected_at.utc if order.collected_at else None,
        "collected_precision": int(order.collected_at.precision) if order.collected_at else None,
    }
    if case is None:
        filler = order.filler_order_number or order.accession_number
        case = Case(accession_number=order.accession_number, filler_order_number=filler, **values)  # type: ignore[arg-type]
        session.add(case)
        session.flush()
        audit(session, actor, "case.created", "case", case.accession_number, control_id=control_id, **values)
    else:
        changed = {k: v for k, v in values.items() if v not in ("", None) and getattr(case, k) != v}
        if order.filler_order_number and not case.filler_order_number:
            changed["filler_order_number"] = order.filler_order_number
        if changed:
            for key, value in changed.items():
                setattr(case, key, value)
            case.updated_at = utcnow()
            session.add(case)
            audit(session, actor, "case.updated", "case", case.accession_number, control_id=control_id, **changed)
    _add_slides(session, case, order.slide_barcodes, actor, control_id)
    return case


def _add_slides(session: Session, case: Case, barcodes: tuple[str, ...], actor: str, control_id: str) -> None:
    for barcode in barcodes:
        slide = session.exec(select(Slide).where(Slide.barcode == barcode)).first()
        if slide is None:
            session.add(Slide(case_id=case.id, barcode=barcode))  # type: ignore[arg-type]
            audit(session, actor, "slide.created", "slide", barcode, case=case.accession_number, control_id=control_id)
        elif slide.case_id != case.id:
            raise MessageError(
                ErrorCode.DUPLICATE_KEY, f"slide {barcode!r} already belongs to another case", segment="SPM", field=2
            )


def merge_patients(session: Session, merge: PatientMerge, actor: str) -> Patient | None:
    """ADT^A40: the prior patient's cases and identifiers move to the survivor (PID-3)."""
    control_id = merge.header.control_id
    prior = find_patient(session, [(pid.id, pid.authority) for pid in merge.prior_ids])
    if prior is None:
        return None  # never seen: nothing to merge here (see module docstring)
    survivor = find_patient(session, _keys(merge.patient))
    if survivor is None or survivor.id == prior.id:
        return upsert_patient(session, merge.patient, actor, control_id=control_id)  # re-identify
    for case in session.exec(select(Case).where(Case.patient_id == prior.id)).all():
        case.patient_id, case.updated_at = survivor.id, utcnow()  # type: ignore[assignment]
        session.add(case)
        audit(
            session,
            actor,
            "case.patient_changed",
            "case",
            case.accession_number,
            patient=survivor.id,
            control_id=control_id,
        )
    for identifier in session.exec(select(PatientIdentifier).where(PatientIdentifier.patient_id == prior.id)).all():
        identifier.patient_id = survivor.id  # type: ignore[assignment]
        session.add(identifier)
    prior.merged_into_id, prior.updated_at = survivor.id, utcnow()
    session.add(prior)
    audit(session, actor, "patient.merged", "patient", prior.id, into=survivor.id, control_id=control_id)
    return upsert_patient(session, merge.patient, actor, control_id=control_id)
