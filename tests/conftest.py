"""Shared fixtures: index databases (SQLite and PostgreSQL), free ports, peer programs."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

POSTGRES_ADMIN_URL = os.environ.get("MARROWLINK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nobody listens on now and that this test run has not handed out before.

    The kernel may give the same ephemeral port to two binds in a row once the first
    socket is closed, so a server started with ``free_port(), free_port()`` could be
    told to listen twice on one port (CI saw DICOM and MLLP both on 49283). Remembering
    what was handed out rules that out within the run.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def _postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL database, so that concurrent test runs never see each other's rows."""
    name = f"mlt_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, said plainly
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is required for the postgres tests: {exc}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The index database URL, once for SQLite (WAL, file) and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


@pytest.fixture
def engine(index_url: str):  # type: ignore[no-untyped-def]
    """A migrated index engine (every package's tables)."""
    from integration.database import open_index

    eng = open_index(index_url)
    yield eng
    eng.dispose()


def dcmtk(tool: str) -> str:
    """Full path of a dcmtk tool: pynetdicom installs same-named scripts into the venv that shadow it."""
    path = Path("/usr/bin") / tool
    if not path.exists():
        pytest.fail(f"dcmtk's {tool} is not installed (apt-get install dcmtk); .ci/run installs it")
    return str(path)


def require_program(name: str) -> str:
    found = shutil.which(name, path="/usr/bin:/usr/local/bin:/bin")
    if not found:
        pytest.fail(f"{name} is not installed; .ci/run installs the Debian packages the tests need")
    return found


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny segmentation and classification networks trained for a few steps: real models for testing
    the pipeline's plumbing (accuracy is `marrowlink evaluate`'s job, not a test's)."""
    from ai.synthetic import write_labelled, write_seg
    from ai.training import train

    root = tmp_path_factory.mktemp("tiny_models")
    seg_data = write_seg(root / "seg_data", n=6, shape=(128, 192), pixel_size_um=0.043)
    cls_data = write_labelled(root / "cls_data", "cls", ["BLA", "NGS", "EBO", "LYT"], per_class=10, size=48)
    common = {"batch_size": 4, "steps_per_epoch": 3, "verbose": 0, "threads": 2}
    train("seg", seg_data, "compact", 1, root / "seg", input_size=64, seg_scale=0.5,
          arch_params={"width": 4, "depth": 2}, **common)  # fmt: skip
    train("cls", cls_data, "compact", 1, root / "cls", input_size=32, arch_params={"width": 4}, **common)
    return {"root": root, "seg": root / "seg", "cls": root / "cls"}
