"""dicom_store: indexes for the worklist query (newest studies first, ModalitiesInStudy).

Revision ID: dicom_store_0002
Revises: dicom_store_0001
Create Date: 2026-11-25

Slim's worklist asks ``/studies?ModalitiesInStudy=SM&limit=…``; without these the database sorted
every matching study by date before applying the limit (40 ms at 100k instances).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dicom_store_0002"
down_revision = "dicom_store_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_dicom_study_date_uid", "dicom_study", [sa.text("study_date DESC"), sa.text("study_instance_uid")]
    )
    op.create_index("ix_dicom_series_modality_study", "dicom_series", ["modality", "study_instance_uid"])


def downgrade() -> None:
    op.drop_index("ix_dicom_series_modality_study", "dicom_series")
    op.drop_index("ix_dicom_study_date_uid", "dicom_study")
