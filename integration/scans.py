"""Importing a scan: a Metafer export folder becomes DICOM WSI instances in the Store.

Nothing is stored until the whole slide has been read, validated and encoded; if storing fails half
way, what was stored of this scan is removed again, so a slide is either all there or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import Engine
from sqlmodel import Session, select

from acquisition.metafer import ScanManifest
from acquisition.wsi import Equipment, Patient, SlideContext
from acquisition.wsi.manifest import ScanImportError, encode_manifest
from dicom_store import Store
from integration.cases import Case, Slide, audit
from integration.cases import Patient as PatientRow

log = logging.getLogger(__name__)

__all__ = ["ImportedScan", "ScanImportError", "build_context", "encode_manifest", "import_scan", "study_uid_for"]


@dataclass(frozen=True)
class ImportedScan:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]
    accession_number: str
    container_identifier: str
    fovs: int


def study_uid_for(accession_number: str, uid_root: str) -> str:
    """One case, one study: the UID is derived from the accession, so every slide of a case joins it."""
    return generate_uid(uid_root, entropy_srcs=["marrowlink-study", accession_number])


def _order_for(engine: Engine | None, barcode: str) -> tuple[Case | None, PatientRow | None]:
    if engine is None:
        return None, None
    with Session(engine) as session:
        slide = session.exec(select(Slide).where(Slide.barcode == barcode)).first()
        if slide is None:
            return None, None
        case = session.get(Case, slide.case_id)
        patient = session.get(PatientRow, case.patient_id) if case else None
        if case is not None:
            session.expunge(case)
        if patient is not None:
            session.expunge(patient)
        return case, patient


def _patient(engine: Engine | None, row: PatientRow | None) -> Patient:
    if row is None:
        return Patient()
    from integration.cases import patient_identifiers

    identifier = ""
    if engine is not None and row.id is not None:
        with Session(engine) as session:
            ids = patient_identifiers(session, row.id)
            identifier = ids[0].value if ids else ""
    name = "^".join(p for p in (row.family_name, row.given_name, row.middle_name))
    return Patient(
        name=name.rstrip("^"),
        id=identifier,
        birth_date=row.birth_date.strftime("%Y%m%d") if row.birth_date else "",
        sex=row.sex if row.sex in ("M", "F", "O") else "",
    )


def build_context(
    manifest: ScanManifest,
    *,
    uid_root: str,
    accession_number: str | None,
    engine: Engine | None,
    zone: tzinfo = UTC,
    series_instance_uid: str = "",
) -> SlideContext:
    case, patient_row = _order_for(engine, manifest.barcode)
    accession = accession_number or (case.accession_number if case else "")
    if case is None:
        log.warning("no order for slide %s: stored without patient data", manifest.barcode)
    acquired = datetime.now(UTC)
    if manifest.acquired:
        try:
            acquired = datetime.fromisoformat(manifest.acquired)
        except ValueError:
            log.warning("acquired %r is not an ISO date-time; using now", manifest.acquired)
        if acquired.tzinfo is None:  # the scanner's wall clock: the site's
            acquired = acquired.replace(tzinfo=zone)
    return SlideContext(
        container_identifier=manifest.barcode,
        uid_root=uid_root,
        patient=_patient(engine, patient_row),
        accession_number=accession[:16],
        study_instance_uid=study_uid_for(accession, uid_root) if accession else "",
        study_id=accession[:16],
        series_instance_uid=series_instance_uid,
        equipment=Equipment(
            manufacturer=manifest.equipment.manufacturer,
            model_name=manifest.equipment.scanner,
            software_versions=manifest.equipment.software_version or "unknown",
            microscope=manifest.equipment.microscope,
        ),
        acquisition_datetime=acquired,
        zone=zone,
    )


def import_scan(
    folder: Path,
    store: Store,
    *,
    uid_root: str,
    accession_number: str | None = None,
    engine: Engine | None = None,
    actor: str = "cli",
    zone: tzinfo = UTC,
    series_instance_uid: str = "",
) -> ImportedScan:
    """Read, validate, encode and store one export folder (all or nothing); DICOM times on `zone`'s clock.

    A job passes the `series_instance_uid` it derived from its key, so that what a killed attempt left of
    the series can be found and removed before the next attempt stores it again.
    """
    from acquisition.metafer import read_metafer_export

    manifest = read_metafer_export(folder)
    context = build_context(
        manifest,
        uid_root=uid_root,
        accession_number=accession_number,
        engine=engine,
        zone=zone,
        series_instance_uid=series_instance_uid,
    )
    datasets = encode_manifest(manifest, context)
    stored = [item.sop_instance_uid for item in store.store_datasets(datasets)]
    if engine is not None:
        with Session(engine) as session, session.begin():
            audit(
                session,
                actor,
                "slide.imported",
                "slide",
                manifest.barcode,
                study=context.study_instance_uid,
                series=context.series_instance_uid,
                fovs=len(manifest.fovs),
            )
    return ImportedScan(
        study_instance_uid=context.study_instance_uid,
        series_instance_uid=context.series_instance_uid,
        sop_instance_uids=tuple(stored),
        accession_number=context.accession_number,
        container_identifier=manifest.barcode,
        fovs=len(manifest.fovs),
    )
