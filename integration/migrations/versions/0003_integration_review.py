"""integration: the review — each AI run's cells, the reports (SR) a case has had, users and their sessions.

Revision ID: integration_0003
Revises: integration_0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "integration_0003"
down_revision = "integration_0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "case_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False, index=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("sr_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("seg_instance_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("ann_instance_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("aoi_instance_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("case_reports.id"), nullable=True),
        sa.Column("predecessor_sr_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("algorithm", sa.Text(), nullable=False),
        sa.Column("pixel_size_um", sa.Float(), nullable=False),
        sa.Column("regions", sa.Text(), nullable=False),
        sa.Column("signed_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("case_reports.id"), nullable=False, index=True),
        sa.Column("region_column", sa.Integer(), nullable=False),
        sa.Column("region_row", sa.Integer(), nullable=False),
        sa.Column("region_width", sa.Integer(), nullable=False),
        sa.Column("region_height", sa.Integer(), nullable=False),
        sa.Column("polygon", sa.Text(), nullable=False),
        sa.Column("x0", sa.Integer(), nullable=False),
        sa.Column("y0", sa.Integer(), nullable=False),
        sa.Column("x1", sa.Integer(), nullable=False),
        sa.Column("y1", sa.Integer(), nullable=False),
        sa.Column("area_px", sa.Float(), nullable=False),
        sa.Column("predicted_class", sa.String(20), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("probabilities", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("reviewed_class", sa.String(20), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("added_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("updated_at", _TS, nullable=False),
    )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("login", sa.String(100), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("organization", sa.String(200), nullable=False, server_default=""),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("user_sessions")
    op.drop_table("users")
    op.drop_table("cells")
    op.drop_table("case_reports")
