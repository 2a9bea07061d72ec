"""hl7: inbound messages (raw + ACK, de-duplication) and the durable outbox.

Revision ID: hl7_0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hl7_0001"
down_revision = None
branch_labels = ("hl7",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_inbound",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sender", sa.String(400), nullable=False),
        sa.Column("control_id", sa.String(200), nullable=False),
        sa.Column("message_type", sa.String(20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("sender", "control_id", name="uq_hl7_inbound_sender_control"),
    )
    op.create_table(
        "hl7_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("control_id", sa.String(200), nullable=False, unique=True),
        sa.Column("message_type", sa.String(20), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_hl7_outbox_destination_state", "hl7_outbox", ["destination", "state", "id"])
    op.create_table(
        "hl7_outbox_payload",
        sa.Column("outbox_id", sa.Integer(), sa.ForeignKey("hl7_outbox.id"), primary_key=True),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_table(
        "hl7_outbox_lease",
        sa.Column("destination", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hl7_outbox_lease")
    op.drop_table("hl7_outbox_payload")
    op.drop_index("ix_hl7_outbox_destination_state", table_name="hl7_outbox")
    op.drop_table("hl7_outbox")
    op.drop_table("hl7_inbound")
