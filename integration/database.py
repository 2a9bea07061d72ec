"""The one index database: engine creation and Alembic migrations across all packages.

Each package owns its tables and its own Alembic branch (``<package>/migrations/versions``, with a
branch label equal to the package name); ``migrate`` upgrades every branch to its head, so packages
evolve their schemas independently inside one history.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

#: Packages that own tables, in the order their models must be imported.
TABLE_OWNERS = ("dicom_store", "hl7", "integration")

_HERE = Path(__file__).resolve().parent


def version_locations() -> list[str]:
    """Every package's ``migrations/versions`` folder that exists."""
    locations = []
    for package in TABLE_OWNERS:
        module = importlib.import_module(package)
        folder = Path(module.__file__).resolve().parent / "migrations" / "versions"
        if folder.is_dir():
            locations.append(str(folder))
    return locations


def create_index_engine(url: str, *, max_connections: int = 30) -> Engine:
    """An engine tuned for the index: SQLite in WAL mode with a busy timeout, or a pooled server DB that
    never holds more than `max_connections` connections (a third kept open, the rest opened on demand;
    a request that finds none free waits for one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets `serve` and CLI commands share the data dir; NORMAL keeps every commit across a
            # process crash (kill -9), which is the durability the store promises.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint every ~40 MB of WAL instead of SQLite's ~4 MB: each checkpoint syncs the WAL and
            # the database file inside the commit that triggers it, and at the default interval that was
            # every ~150 stored ORUs (`bench mllp`: 2,660-3,070 -> 3,270-3,520 ORU/s). The size limit
            # truncates the WAL back after a checkpoint once a burst has grown it past 64 MB.
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.execute("PRAGMA journal_size_limit=67108864")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kept = max(1, max_connections // 3)
    return create_engine(url, pool_pre_ping=True, pool_size=kept, max_overflow=max(0, max_connections - kept))


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE / "migrations"))
    config.set_main_option("version_locations", " ".join(version_locations()))
    config.set_main_option("path_separator", "space")
    config.attributes["engine"] = engine
    return config


#: PostgreSQL advisory lock key held while migrating: `serve` and workers starting together take turns.
MIGRATION_LOCK = 0x6D61_7272  # "marr"


def migrate(engine: Engine) -> None:
    """Bring every package's tables to the newest schema (idempotent; safe on every start, and from
    several processes at once: on PostgreSQL they take turns under an advisory lock)."""
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), "heads")
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        try:
            command.upgrade(alembic_config(engine), "heads")
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})


def open_index(url: str, *, max_connections: int = 30) -> Engine:
    """Create the engine and migrate: what every command that touches the store calls first."""
    engine = create_index_engine(url, max_connections=max_connections)
    migrate(engine)
    return engine
