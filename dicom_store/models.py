"""The DICOM index: one row per study, series and instance, with the attributes QIDO and C-FIND match on.

Values are stored as DICOM strings (dates YYYYMMDD, names with ^), so matching follows PS3.4 C.2.2
on the stored text; `patient_name_search` is an upper-cased copy for fuzzy, case-insensitive matching.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, LargeBinary
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class Study(SQLModel, table=True):
    __tablename__ = "dicom_study"

    study_instance_uid: str = Field(primary_key=True, max_length=64)
    patient_id: str = Field(default="", index=True, max_length=64)
    issuer_of_patient_id: str = Field(default="", max_length=64)
    patient_name: str = Field(default="", max_length=324)
    patient_name_search: str = Field(default="", index=True, max_length=324)
    patient_birth_date: str = Field(default="", max_length=8)
    patient_sex: str = Field(default="", max_length=16)
    study_date: str = Field(default="", index=True, max_length=8)
    study_time: str = Field(default="", max_length=16)
    accession_number: str = Field(default="", index=True, max_length=16)
    study_id: str = Field(default="", max_length=16)
    referring_physician_name: str = Field(default="", max_length=324)
    study_description: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=_now)


class Series(SQLModel, table=True):
    __tablename__ = "dicom_series"

    series_instance_uid: str = Field(primary_key=True, max_length=64)
    study_instance_uid: str = Field(index=True, max_length=64, foreign_key="dicom_study.study_instance_uid")
    modality: str = Field(default="", index=True, max_length=16)
    series_number: str = Field(default="", max_length=12)
    series_description: str = Field(default="", max_length=64)
    series_date: str = Field(default="", max_length=8)
    series_time: str = Field(default="", max_length=16)
    performed_procedure_step_start_date: str = Field(default="", max_length=8)
    performed_procedure_step_start_time: str = Field(default="", max_length=16)
    created_at: datetime = Field(default_factory=_now)


class Instance(SQLModel, table=True):
    __tablename__ = "dicom_instance"
    __table_args__ = (Index("ix_dicom_instance_series_number", "series_instance_uid", "instance_number"),)

    sop_instance_uid: str = Field(primary_key=True, max_length=64)
    series_instance_uid: str = Field(max_length=64, foreign_key="dicom_series.series_instance_uid")
    study_instance_uid: str = Field(index=True, max_length=64)
    sop_class_uid: str = Field(default="", index=True, max_length=64)
    instance_number: int | None = Field(default=None)
    content_date: str = Field(default="", max_length=8)
    content_time: str = Field(default="", max_length=16)
    number_of_frames: int = Field(default=1)
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    transfer_syntax_uid: str = Field(default="", max_length=64)
    image_type: str = Field(default="", max_length=128)
    total_pixel_matrix_rows: int | None = None
    total_pixel_matrix_columns: int | None = None
    dimension_organization_type: str = Field(default="", max_length=16)
    container_identifier: str = Field(default="", index=True, max_length=64)
    path: str = Field(max_length=256)
    size: int = 0
    stored_at: datetime = Field(default_factory=_now)


class FrameTable(SQLModel, table=True):
    """Where each frame's encoded bytes lie in the blob: (frame, offset, length) rows as int64.

    Computed once on store, so a WADO frame request is one lookup and one pread, never a parse.
    """

    __tablename__ = "dicom_frame_table"

    sop_instance_uid: str = Field(
        primary_key=True, max_length=64, foreign_key="dicom_instance.sop_instance_uid", ondelete="CASCADE"
    )
    encapsulated: bool = False
    fragments: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
