"""Alembic environment: runs on the engine handed over in ``config.attributes`` (see database.py)."""

from __future__ import annotations

from alembic import context

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
