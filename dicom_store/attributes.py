"""From a parsed dataset to index rows: which attributes are indexed, and how they are normalised."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from dicom_store.blobs import check_uid
from dicom_store.errors import InvalidInstance


def text(ds: Dataset, keyword: str) -> str:
    """An attribute as the stored DICOM string ('' when absent); multi-values joined with backslash."""
    element = ds.get(keyword)
    if element is None or element == "" or element is None:
        return ""
    if isinstance(element, list | tuple) or type(element).__name__ == "MultiValue":
        return "\\".join(str(v) for v in element)
    return str(element)


def integer(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def search_name(name: str) -> str:
    """Upper-cased name with components separated by spaces, for fuzzy matching."""
    return " ".join(part for part in name.upper().replace("=", "^").split("^") if part)


def identify(ds: Dataset) -> tuple[str, str, str, str]:
    """(study, series, instance, class) UIDs, validated; raise naming the missing or bad attribute."""
    sop_instance = check_uid(text(ds, "SOPInstanceUID"), "SOPInstanceUID")
    sop_class = check_uid(text(ds, "SOPClassUID"), "SOPClassUID")
    study = check_uid(text(ds, "StudyInstanceUID"), "StudyInstanceUID")
    series = check_uid(text(ds, "SeriesInstanceUID"), "SeriesInstanceUID")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPInstanceUID") not in (None, "", sop_instance):
        raise InvalidInstance(
            f"MediaStorageSOPInstanceUID {meta.MediaStorageSOPInstanceUID} differs from SOPInstanceUID {sop_instance}"
        )
    return study, series, sop_instance, sop_class


def study_values(ds: Dataset) -> dict[str, Any]:
    name = text(ds, "PatientName")
    return {
        "patient_id": text(ds, "PatientID"),
        "issuer_of_patient_id": text(ds, "IssuerOfPatientID"),
        "patient_name": name,
        "patient_name_search": search_name(name),
        "patient_birth_date": text(ds, "PatientBirthDate"),
        "patient_sex": text(ds, "PatientSex"),
        "study_date": text(ds, "StudyDate"),
        "study_time": text(ds, "StudyTime"),
        "accession_number": text(ds, "AccessionNumber"),
        "study_id": text(ds, "StudyID"),
        "referring_physician_name": text(ds, "ReferringPhysicianName"),
        "study_description": text(ds, "StudyDescription"),
    }


def series_values(ds: Dataset) -> dict[str, Any]:
    return {
        "modality": text(ds, "Modality"),
        "series_number": text(ds, "SeriesNumber"),
        "series_description": text(ds, "SeriesDescription"),
        "series_date": text(ds, "SeriesDate"),
        "series_time": text(ds, "SeriesTime"),
        "performed_procedure_step_start_date": text(ds, "PerformedProcedureStepStartDate"),
        "performed_procedure_step_start_time": text(ds, "PerformedProcedureStepStartTime"),
    }


def instance_values(ds: Dataset) -> dict[str, Any]:
    container = text(ds, "ContainerIdentifier")
    return {
        "instance_number": integer(ds, "InstanceNumber"),
        "content_date": text(ds, "ContentDate"),
        "content_time": text(ds, "ContentTime"),
        "number_of_frames": integer(ds, "NumberOfFrames") or 1,
        "rows": integer(ds, "Rows"),
        "columns": integer(ds, "Columns"),
        "bits_allocated": integer(ds, "BitsAllocated"),
        "image_type": text(ds, "ImageType")[:128],
        "total_pixel_matrix_rows": integer(ds, "TotalPixelMatrixRows"),
        "total_pixel_matrix_columns": integer(ds, "TotalPixelMatrixColumns"),
        "dimension_organization_type": text(ds, "DimensionOrganizationType"),
        "container_identifier": container,
    }


def frame_bytes(ds: Dataset) -> int | None:
    """Bytes per native frame; None when frames are not byte-aligned (1-bit frames of odd size)."""
    rows, columns = integer(ds, "Rows"), integer(ds, "Columns")
    bits = integer(ds, "BitsAllocated") or 8
    samples = integer(ds, "SamplesPerPixel") or 1
    if not rows or not columns:
        return None
    bits_per_frame = rows * columns * samples * bits
    if bits_per_frame % 8:
        return None
    return bits_per_frame // 8
