"""dicom_store: study, series, instance index and frame tables.

Revision ID: dicom_store_0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dicom_store_0001"
down_revision = None
branch_labels = ("dicom_store",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_study",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("issuer_of_patient_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("patient_name", sa.String(324), nullable=False, server_default=""),
        sa.Column("patient_name_search", sa.String(324), nullable=False, server_default=""),
        sa.Column("patient_birth_date", sa.String(8), nullable=False, server_default=""),
        sa.Column("patient_sex", sa.String(16), nullable=False, server_default=""),
        sa.Column("study_date", sa.String(8), nullable=False, server_default=""),
        sa.Column("study_time", sa.String(16), nullable=False, server_default=""),
        sa.Column("accession_number", sa.String(16), nullable=False, server_default=""),
        sa.Column("study_id", sa.String(16), nullable=False, server_default=""),
        sa.Column("referring_physician_name", sa.String(324), nullable=False, server_default=""),
        sa.Column("study_description", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    for column in ("patient_id", "patient_name_search", "study_date", "accession_number"):
        op.create_index(f"ix_dicom_study_{column}", "dicom_study", [column])

    op.create_table(
        "dicom_series",
        sa.Column("series_instance_uid", sa.String(64), primary_key=True),
        sa.Column(
            "study_instance_uid",
            sa.String(64),
            sa.ForeignKey("dicom_study.study_instance_uid"),
            nullable=False,
        ),
        sa.Column("modality", sa.String(16), nullable=False, server_default=""),
        sa.Column("series_number", sa.String(12), nullable=False, server_default=""),
        sa.Column("series_description", sa.String(64), nullable=False, server_default=""),
        sa.Column("series_date", sa.String(8), nullable=False, server_default=""),
        sa.Column("series_time", sa.String(16), nullable=False, server_default=""),
        sa.Column("performed_procedure_step_start_date", sa.String(8), nullable=False, server_default=""),
        sa.Column("performed_procedure_step_start_time", sa.String(16), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dicom_series_study_instance_uid", "dicom_series", ["study_instance_uid"])
    op.create_index("ix_dicom_series_modality", "dicom_series", ["modality"])

    op.create_table(
        "dicom_instance",
        sa.Column("sop_instance_uid", sa.String(64), primary_key=True),
        sa.Column(
            "series_instance_uid",
            sa.String(64),
            sa.ForeignKey("dicom_series.series_instance_uid"),
            nullable=False,
        ),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("content_date", sa.String(8), nullable=False, server_default=""),
        sa.Column("content_time", sa.String(16), nullable=False, server_default=""),
        sa.Column("number_of_frames", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("bits_allocated", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("image_type", sa.String(128), nullable=False, server_default=""),
        sa.Column("total_pixel_matrix_rows", sa.Integer(), nullable=True),
        sa.Column("total_pixel_matrix_columns", sa.Integer(), nullable=True),
        sa.Column("dimension_organization_type", sa.String(16), nullable=False, server_default=""),
        sa.Column("container_identifier", sa.String(64), nullable=False, server_default=""),
        sa.Column("path", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dicom_instance_study_instance_uid", "dicom_instance", ["study_instance_uid"])
    op.create_index("ix_dicom_instance_sop_class_uid", "dicom_instance", ["sop_class_uid"])
    op.create_index("ix_dicom_instance_container_identifier", "dicom_instance", ["container_identifier"])
    op.create_index("ix_dicom_instance_series_number", "dicom_instance", ["series_instance_uid", "instance_number"])

    op.create_table(
        "dicom_frame_table",
        sa.Column(
            "sop_instance_uid",
            sa.String(64),
            sa.ForeignKey("dicom_instance.sop_instance_uid", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("encapsulated", sa.Boolean(), nullable=False),
        sa.Column("fragments", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dicom_frame_table")
    op.drop_table("dicom_instance")
    op.drop_table("dicom_series")
    op.drop_table("dicom_study")
