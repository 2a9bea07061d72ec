"""integration: cells cut by the edge of their analysed image are kept, flagged, and not counted.

Revision ID: integration_0005
Revises: integration_0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "integration_0005"
down_revision = "integration_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.add_column(sa.Column("border", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("border")
