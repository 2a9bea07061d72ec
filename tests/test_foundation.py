"""The foundation: settings, index migrations on SQLite and PostgreSQL, CLI start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from integration.database import open_index
from integration.settings import load_settings


def test_settings_from_env_and_toml(tmp_path: Path, monkeypatch) -> None:
    toml = tmp_path / "marrowlink.toml"
    toml.write_text('http_port = 8123\nae_title = "LAB_AE"\nduplicate_policy = "replace"\n')
    monkeypatch.setenv("MARROWLINK_CONFIG", str(toml))
    monkeypatch.setenv("MARROWLINK_DICOM_PORT", "11999")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://x@h/db")
    settings = load_settings(data_dir=tmp_path / "d", http_port=None)
    assert settings.http_port == 8123
    assert settings.dicom_port == 11999
    assert settings.ae_title == "LAB_AE"
    assert settings.duplicate_policy == "replace"
    assert settings.effective_database_url == "postgresql+psycopg://x@h/db"
    assert settings.data_dir == tmp_path / "d"


def test_missing_config_file_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MARROWLINK_CONFIG", str(tmp_path / "nope.toml"))
    try:
        load_settings()
    except FileNotFoundError as exc:
        assert "nope.toml" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a missing config file must be an error")


def test_two_listeners_on_one_port_are_refused_before_anything_starts(tmp_path: Path) -> None:
    """serve must say which settings clash, not die half-started with EADDRINUSE."""
    marrowlink = str(Path(sys.executable).parent / "marrowlink")
    run = subprocess.run(
        [marrowlink, "serve", "--data", str(tmp_path), "--dicom-port", "12575", "--mllp-port", "12575"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "dicom_port and mllp_port are both 12575" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "index.sqlite3").exists()


def test_migrations_are_idempotent(index_url: str) -> None:
    engine = open_index(index_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    engine = open_index(index_url)  # second start: nothing to do, no error
    assert set(inspect(engine).get_table_names()) == tables
    assert "alembic_version" in tables
    engine.dispose()


def test_help_is_fast_and_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from integration.cli import app; "
        "assert 'tensorflow' not in sys.modules; assert 'pynetdicom' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "marrowlink"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Research use only" in out.stdout
