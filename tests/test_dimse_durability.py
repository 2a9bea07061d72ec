"""kill -9 of `marrowlink serve` in the middle of a C-STORE stream: nothing acknowledged is lost.

dcmtk storescu sends WSI instances over one association and reports each C-STORE response; the server
is killed after a few successes. After a restart every instance that got a success response is in the
index with its bytes, and every index row has its blob (as for STOW in test_dicomweb_e2e).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from dicom_store import Store
from integration.bench.dimse import write_wsi_series
from integration.database import open_index
from tests.conftest import dcmtk
from tests.servers import marrowlink_server

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def test_kill_9_during_c_store_loses_nothing_acknowledged(tmp_path: Path) -> None:
    files = write_wsi_series(tmp_path / "wsi", size_mb=40, instances=40)
    uids = {str(path): str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files}
    data = tmp_path / "data"
    data.mkdir()
    acknowledged: list[str] = []
    with marrowlink_server(data) as server:
        sender = subprocess.Popen(
            [dcmtk("storescu"), "-v", "-R", "-xy", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port)]
            + [str(path) for path in files],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert sender.stdout is not None
        sending = None
        for line in sender.stdout:
            if "Sending file: " in line:
                sending = line.split("Sending file: ", 1)[1].strip()
            elif "Received Store Response (Success)" in line and sending is not None:
                acknowledged.append(uids[sending])
                if len(acknowledged) == 6:
                    server.process.kill()  # the 7th instance is on its way
                    server.process.wait()
        sender.wait(timeout=60)
    assert 6 <= len(acknowledged) < len(files), "the kill did not land inside the stream"

    engine = open_index(f"sqlite:///{data / 'index.sqlite3'}")
    try:
        store = Store(engine, data / "blobs")
        indexed = {row.sop_instance_uid: row for row in store.instances()}
        missing = [uid for uid in acknowledged if uid not in indexed]
        assert not missing, f"{len(missing)} acknowledged instances lost"
        for uid, row in indexed.items():  # every row has its complete bytes
            assert store.blobs.absolute(row.path).stat().st_size == row.size, uid
            assert len(store.get_frames(uid, [row.number_of_frames])[0]) > 0
    finally:
        engine.dispose()
    with marrowlink_server(data) as server:  # and the server starts again on that data
        sent = subprocess.run(
            [dcmtk("echoscu"), "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port)], timeout=60
        )
        assert sent.returncode == 0
