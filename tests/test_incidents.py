"""An unexpected failure answers with an incident id only; the exception, with the same id, goes to the log.

Exception text can carry SQL, paths and class names: none of it may reach a LIS, a viewer or a PACS.
The failures here are real ones (a handler that raises, a table that is gone), not mocked responses.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session

from hl7 import MllpServer, send_message
from hl7.model import InboundEvent
from integration.database import open_index
from tests.test_dicomweb_support import READ, served_store
from tests.test_timestamps import _order

INCIDENT = re.compile(r"incident ([0-9a-f]{12})")
LEAKS = ("SELECT", "SQL", "sqlite3", "Error:", "Traceback", "RuntimeError", "OperationalError", "dicom_study")


@pytest.fixture
def sqlite_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    yield engine
    engine.dispose()


class BrokenHandler:
    """A domain handler with a bug: its exception text carries SQL, as the report's did."""

    def handle(self, session: Session, event: InboundEvent) -> None:
        raise RuntimeError("(sqlite3.OperationalError) no such column: secret [SQL: SELECT secret FROM patients]")


def _over_mllp(engine, message: str) -> str:  # type: ignore[no-untyped-def]
    """Send one message to a real MLLP listener whose domain handler is broken; the answer as text."""
    loop = asyncio.new_event_loop()
    server = MllpServer(engine, BrokenHandler(), "127.0.0.1", 0)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        return asyncio.run(send_message("127.0.0.1", server.port, message)).text
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_failing_hl7_handler_shows_only_an_incident_id(sqlite_engine, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.ERROR)
    answer = _over_mllp(sqlite_engine, _order("CTL1", "PL1", "20261206000847"))
    msa = next(line for line in answer.split("\r") if line.startswith("MSA|"))
    err = next(line for line in answer.split("\r") if line.startswith("ERR|"))
    assert msa.startswith("MSA|AE|CTL1")
    assert "|207^Application internal error^HL70357|" in err
    incident_id = INCIDENT.search(err).group(1)  # type: ignore[union-attr]
    assert not [word for word in LEAKS if word in answer]
    logged = [r for r in caplog.records if incident_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "SELECT secret FROM patients" in caplog.text  # the traceback, under the same id
    # The same message again gets the same answer (de-duplication), still without the text.
    assert _over_mllp(sqlite_engine, _order("CTL1", "PL1", "20261206000847")) == answer


def test_a_failing_http_request_shows_only_an_incident_id(sqlite_engine, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.ERROR)
    with served_store(sqlite_engine, tmp_path) as served:
        with sqlite_engine.begin() as connection:  # a real fault: the index table is gone
            connection.execute(text("DROP TABLE dicom_study"))
        response = httpx.get(f"{served.dicomweb}/studies", headers=READ)
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"detail", "incident"} and body["incident"] in body["detail"]
    assert not [word for word in LEAKS if word in response.text]
    logged = [r for r in caplog.records if body["incident"] in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with the traceback
    assert "no such table: dicom_study" in caplog.text
