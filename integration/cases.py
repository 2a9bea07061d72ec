"""The domain: patients, cases (one order = one accession), slides, and the append-only audit log.

Orders create cases (integration/orders.py); the API reads them; every change is written to
`AuditLog` in the same transaction as the change itself, so the log cannot miss one. Times are
timezone-aware UTC (SQLModel's UTCDateTime on SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, col, select


def utcnow() -> datetime:
    return datetime.now(UTC)


class CaseStatus(StrEnum):
    """Where a case stands; result states follow docs/architecture.md §4 (preliminary / final / corrected)."""

    ORDERED = "ordered"
    CANCELLED = "cancelled"
    PRELIMINARY = "preliminary"  # the AI's result, nobody has changed it yet
    IN_REVIEW = "in_review"  # a person has changed cells; not signed
    FINAL = "final"  # signed
    CORRECTING = "correcting"  # a signed case reopened for a correction
    CORRECTED = "corrected"  # a correction signed


class SlideStage(StrEnum):
    """Where a slide stands in the pipeline (docs/deployment.md "The case pipeline"), kept on its row.

    A scan that arrives before its order has no slide row yet: its import job waits (`jobs list`).
    """

    ORDERED = "ordered"  # the order named the slide; no scan yet
    SCANNED = "scanned"  # its export folder arrived and its import is queued
    IMPORTED = "imported"  # stored as DICOM WSI; analysis queued
    ANALYSING = "analysing"
    PRELIMINARY = "preliminary"  # AI results stored, ORU (P) queued (or no LIS configured)
    PRELIMINARY_SENT = "preliminary_sent"  # the LIS acknowledged the ORU (P)
    IN_REVIEW = "in_review"
    SIGNED = "signed"  # final (or corrected) SR stored, ORU (F/C) queued
    FINAL_SENT = "final_sent"  # the LIS acknowledged the ORU (F)
    CORRECTED = "corrected"  # the LIS acknowledged the ORU (C)
    FAILED = "failed"  # a step gave up; the job says why


class Patient(SQLModel, table=True):
    """A person; `merged_into_id` points to the survivor after an ADT^A40 merge."""

    __tablename__ = "patients"

    id: int | None = Field(default=None, primary_key=True)
    family_name: str = Field(default="", max_length=200)
    given_name: str = Field(default="", max_length=200)
    middle_name: str = Field(default="", max_length=200)
    birth_date: date | None = None
    sex: str = Field(default="", max_length=2)
    merged_into_id: int | None = Field(default=None, foreign_key="patients.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PatientIdentifier(SQLModel, table=True):
    """One PID-3 identifier (id + assigning authority) of a patient; unique across patients."""

    __tablename__ = "patient_identifiers"
    __table_args__ = (UniqueConstraint("value", "authority", name="uq_patient_identifier"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    value: str = Field(max_length=200)
    authority: str = Field(default="", max_length=200)
    type_code: str = Field(default="", max_length=10)


class Case(SQLModel, table=True):
    """One order (accession number) for one patient; owns its slides."""

    __tablename__ = "cases"

    id: int | None = Field(default=None, primary_key=True)
    accession_number: str = Field(max_length=200, unique=True)
    placer_order_number: str = Field(default="", max_length=200)
    #: OBR-3 of every ORU for this case (P → F → C refer to it); assigned once, never changed.
    filler_order_number: str = Field(default="", max_length=200)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    ordering_provider_id: str = Field(default="", max_length=200)
    ordering_provider_name: str = Field(default="", max_length=400)  # "Given Family", for display
    ordering_provider_family: str = Field(default="", max_length=200)
    ordering_provider_given: str = Field(default="", max_length=200)
    status: str = Field(default=CaseStatus.ORDERED.value, max_length=20)
    priority: str = Field(default="R", max_length=2)
    service_code: str = Field(default="", max_length=100)
    service_text: str = Field(default="", max_length=400)
    collected_at: datetime | None = None
    #: Digits of YYYYMMDDHHMMSS the collection time was sent with (8: a day; 15: fractions), see
    #: acquisition.timestamps.Precision; NULL on rows from before it was kept.
    collected_precision: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Slide(SQLModel, table=True):
    """One physical smear; its barcode is the DICOM Container Identifier of every image of it."""

    __tablename__ = "slides"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id", index=True)
    barcode: str = Field(max_length=200, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    stage: str = Field(default=SlideStage.ORDERED.value, max_length=20)
    stage_at: datetime | None = None
    #: Why the slide is failed (the step and its error), else empty.
    stage_reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    study_instance_uid: str = Field(default="", max_length=64)
    #: The latest result message queued for the slide (hl7 outbox id): its ACK moves the stage on.
    outbox_id: int | None = None


class AuditLog(SQLModel, table=True):
    """Append-only (database triggers refuse UPDATE and DELETE): who changed what, when, from where."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=200)  # "hl7:LIS|HOSP", "user:jdoe", …
    action: str = Field(max_length=60)  # "case.created", "patient.merged", …
    entity: str = Field(max_length=40)
    entity_id: str = Field(max_length=200)
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False))


def set_slide_stage(
    session: Session,
    stage: SlideStage,
    *,
    barcode: str | None = None,
    case_id: int | None = None,
    reason: str = "",
    **values: Any,
) -> list[Slide]:
    """Move one slide (by barcode) or every slide of a case to `stage`, in the caller's transaction."""
    query = select(Slide)
    if barcode is not None:
        query = query.where(Slide.barcode == barcode)
    elif case_id is not None:
        query = query.where(Slide.case_id == case_id)
    else:
        raise ValueError("set_slide_stage needs a barcode or a case id")
    slides = list(session.exec(query).all())
    for slide in slides:
        slide.stage, slide.stage_at, slide.stage_reason = stage.value, utcnow(), reason
        for key, value in values.items():
            setattr(slide, key, value)
        session.add(slide)
    return slides


def audit(session: Session, actor: str, action: str, entity: str, entity_id: object, **details: Any) -> None:
    """Add an audit record to the caller's transaction (committed, or rolled back, with the change)."""
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            details=json.dumps(details, default=str, ensure_ascii=False, sort_keys=True),
        )
    )


def get_case(session: Session, accession_number: str) -> Case | None:
    return session.exec(select(Case).where(Case.accession_number == accession_number)).first()


def list_cases(session: Session, *, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Case]:
    query = select(Case).order_by(col(Case.id).desc()).offset(offset).limit(limit)
    if status:
        query = query.where(Case.status == status)
    return list(session.exec(query).all())


def case_slides(session: Session, case_id: int) -> list[Slide]:
    return list(session.exec(select(Slide).where(Slide.case_id == case_id).order_by(col(Slide.id))).all())


def patient_identifiers(session: Session, patient_id: int) -> list[PatientIdentifier]:
    query = (
        select(PatientIdentifier).where(PatientIdentifier.patient_id == patient_id).order_by(col(PatientIdentifier.id))
    )
    return list(session.exec(query).all())


def find_patient(session: Session, identifiers: list[tuple[str, str]]) -> Patient | None:
    """The (surviving) patient holding any of the (value, authority) identifiers."""
    for value, authority in identifiers:
        query = select(PatientIdentifier).where(
            PatientIdentifier.value == value, PatientIdentifier.authority == authority
        )
        found = session.exec(query).first()
        if found is not None:
            patient = session.get(Patient, found.patient_id)
            while patient is not None and patient.merged_into_id is not None:
                patient = session.get(Patient, patient.merged_into_id)
            return patient
    return None


def audit_entries(session: Session, *, entity: str | None = None, entity_id: str | None = None) -> list[AuditLog]:
    query = select(AuditLog).order_by(col(AuditLog.id))
    if entity:
        query = query.where(AuditLog.entity == entity)
    if entity_id:
        query = query.where(AuditLog.entity_id == entity_id)
    return list(session.exec(query).all())
