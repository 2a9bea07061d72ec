"""The case domain: orders create/update/cancel cases, ADT updates/merges patients, audit log append-only."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from hl7 import ErrorCode, MessageError, Order, PatientMerge, PatientUpdate, parse_message
from integration.cases import (
    AuditLog,
    Case,
    CaseStatus,
    Patient,
    audit_entries,
    case_slides,
    find_patient,
    get_case,
    list_cases,
    patient_identifiers,
)
from integration.orders import CaseOrderHandler


def oml(control_id: str, accession: str, *, pid: str = "P1", family: str = "Doe", control: str = "NW",
        slides: tuple[str, ...] = ("S1",), provider: str = "1234^Welby^Marcus") -> str:  # fmt: skip
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261125120000||OML^O21^OML_O21|{control_id}|P|2.5.1",
            f"PID|1||{pid}^^^HOSP^MR||{family}^Jane||19600101|F",
            f"ORC|{control}|PL-{accession}||{accession}||||||||{provider}",
            "TQ1|1||||||||S",
            f"OBR|1|PL-{accession}||BMDIFF^Bone marrow differential^L",
            *(f"SAC|||{s}" for s in slides),
        ]
    )


def apply(engine, message: str) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        CaseOrderHandler().handle(session, parse_message(message))
        session.commit()


def test_order_creates_then_updates_a_case(engine) -> None:  # type: ignore[no-untyped-def]
    apply(engine, oml("M1", "ACC1"))
    apply(engine, oml("M2", "ACC1", slides=("S1", "S2"), provider="99^House^Greg"))
    with Session(engine) as session:
        case = get_case(session, "ACC1")
        assert case is not None
        assert (case.status, case.priority, case.filler_order_number) == (CaseStatus.ORDERED, "S", "ACC1")
        assert (case.ordering_provider_id, case.ordering_provider_name) == ("99", "Greg House")
        assert (case.ordering_provider_family, case.ordering_provider_given) == ("House", "Greg")
        assert [s.barcode for s in case_slides(session, case.id)] == ["S1", "S2"]
        patient = session.get(Patient, case.patient_id)
        assert (patient.family_name, patient.birth_date, patient.sex) == ("Doe", date(1960, 1, 1), "F")
        actions = [a.action for a in audit_entries(session)]
        assert actions == ["patient.created", "case.created", "slide.created", "case.updated", "slide.created"]
        assert all(a.actor == "hl7:LIS|HOSP" for a in audit_entries(session))
        assert [c.accession_number for c in list_cases(session)] == ["ACC1"]


def test_cancel_and_unknown_cancel(engine) -> None:  # type: ignore[no-untyped-def]
    apply(engine, oml("M1", "ACC1"))
    apply(engine, oml("M2", "ACC1", control="CA"))
    with Session(engine) as session:
        assert get_case(session, "ACC1").status == CaseStatus.CANCELLED
    with pytest.raises(MessageError) as info:
        apply(engine, oml("M3", "NOPE", control="CA"))
    assert info.value.code is ErrorCode.UNKNOWN_KEY


def test_slide_of_another_case_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    apply(engine, oml("M1", "ACC1", slides=("S1",)))
    with pytest.raises(MessageError) as info:
        apply(engine, oml("M2", "ACC2", slides=("S1",)))
    assert info.value.code is ErrorCode.DUPLICATE_KEY
    with Session(engine) as session:
        assert get_case(session, "ACC2") is None  # the caller's rollback leaves nothing half-way


def test_adt_update_and_merge(engine) -> None:  # type: ignore[no-untyped-def]
    apply(engine, oml("M1", "ACC1", pid="OLD", family="Doe"))
    apply(engine, oml("M2", "ACC2", pid="NEW", family="Doe-Smith", slides=("S2",)))
    a08 = "\r".join(
        [
            "MSH|^~\\&|ADT|HOSP|MARROWLINK|LAB|20261125120000||ADT^A08^ADT_A01|A1|P|2.5.1",
            "PID|1||NEW^^^HOSP^MR||Smith^Jane||19600102|F",
        ]
    )
    event = parse_message(a08)
    assert isinstance(event, PatientUpdate)
    apply(engine, a08)
    apply(engine, a08.replace("NEW^", "STRANGER^").replace("|A1|", "|A2|"))  # unknown patient: ignored
    a40 = "\r".join(
        [
            "MSH|^~\\&|ADT|HOSP|MARROWLINK|LAB|20261125120000||ADT^A40^ADT_A39|A3|P|2.5.1",
            "PID|1||NEW^^^HOSP^MR||Smith^Jane||19600102|F",
            "MRG|OLD^^^HOSP^MR",
        ]
    )
    assert isinstance(parse_message(a40), PatientMerge)
    apply(engine, a40)
    with Session(engine) as session:
        survivor = find_patient(session, [("NEW", "HOSP")])
        assert survivor is not None and survivor.family_name == "Smith" and survivor.birth_date == date(1960, 1, 2)
        assert find_patient(session, [("OLD", "HOSP")]).id == survivor.id
        assert find_patient(session, [("STRANGER", "HOSP")]) is None
        cases = session.exec(select(Case).order_by(Case.id)).all()
        assert [c.patient_id for c in cases] == [survivor.id, survivor.id]
        assert {i.value for i in patient_identifiers(session, survivor.id)} == {"NEW", "OLD"}
        actions = [a.action for a in audit_entries(session)]
        assert "patient.merged" in actions and actions.count("case.patient_changed") == 1


def test_order_value_types() -> None:
    order = parse_message(oml("M1", "ACC1"))
    assert isinstance(order, Order) and order.order_control == "NW"


def test_audit_log_is_append_only(engine) -> None:  # type: ignore[no-untyped-def]
    apply(engine, oml("M1", "ACC1"))
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with Session(engine) as session, pytest.raises(DBAPIError, match="append-only"):
            session.exec(text(statement))  # type: ignore[call-overload]
            session.commit()
    with Session(engine) as session:
        assert len(session.exec(select(AuditLog)).all()) == 3
