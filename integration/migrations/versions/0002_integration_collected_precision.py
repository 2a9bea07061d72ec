"""integration: a case keeps the precision its collection time was sent in.

OBR-7 may be a day (`20261206`), a minute or a second; the instant is stored as UTC, and the precision
beside it, so that a date is never reported back as a midnight timestamp. Rows from before this
revision have none (NULL): they are reported at second precision, as before.

Revision ID: integration_0002
Revises: integration_0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "integration_0002"
down_revision = "integration_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("collected_precision", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("collected_precision")
