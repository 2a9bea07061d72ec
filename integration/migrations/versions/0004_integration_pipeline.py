"""integration: the pipeline — durable jobs, and each slide's stage.

Revision ID: integration_0004
Revises: integration_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "integration_0004"
down_revision = "integration_0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("step", sa.String(20), nullable=False, index=True),
        sa.Column("barcode", sa.String(200), nullable=False, index=True),
        sa.Column("folder", sa.Text(), nullable=False, server_default=""),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("state", sa.String(12), nullable=False, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="4"),
        sa.Column("not_before", _TS, nullable=False),
        sa.Column("owner", sa.String(300), nullable=False, server_default=""),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("dispatched_at", _TS, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.UniqueConstraint("key", name="uq_jobs_key"),
    )
    with op.batch_alter_table("slides") as batch:
        batch.add_column(sa.Column("stage", sa.String(20), nullable=False, server_default="ordered"))
        batch.add_column(sa.Column("stage_at", _TS, nullable=True))
        batch.add_column(sa.Column("stage_reason", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("study_instance_uid", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("outbox_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("slides") as batch:
        for name in ("outbox_id", "study_instance_uid", "stage_reason", "stage_at", "stage"):
            batch.drop_column(name)
    op.drop_table("jobs")
