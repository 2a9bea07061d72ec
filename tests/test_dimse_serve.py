"""dcmtk against the real `marrowlink serve` process: what a hospital's modality or PACS would see.

One server (SQLite index) for the module: allowlist from MARROWLINK_ALLOWED_AES, a dcmtk storescp
as the C-MOVE destination from MARROWLINK_REMOTE_AES.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_store import Store
from integration.database import open_index
from tests.dicom_factory import ROOT, secondary_capture, write, wsi_level
from tests.servers import RunningServer, marrowlink_server
from tests.test_dimse_retrieve import StoreScp, storescp
from tests.test_dimse_scp import _error_comment, run_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, StoreScp, Path]]:
    root = tmp_path_factory.mktemp("serve")
    with storescp(root / "peer", ae_title="PEER") as destination:
        env = {
            "MARROWLINK_ALLOWED_AES": json.dumps(["STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "ECHOSCU"]),
            "MARROWLINK_REMOTE_AES": json.dumps([{"ae_title": "PEER", "host": "127.0.0.1", "port": destination.port}]),
        }
        data = root / "data"
        data.mkdir()
        with marrowlink_server(data, env=env) as server:
            yield server, destination, root


def _ours(server: RunningServer) -> list[str]:
    return ["-aec", server.ae_title, "127.0.0.1", str(server.dicom_port)]


def test_echo_and_allowlist(served: tuple[RunningServer, StoreScp, Path]) -> None:
    server, _, _ = served
    assert "Received Echo Response (Success)" in run_tool("echoscu", "-v", *_ours(server)).stderr
    refused = run_tool("echoscu", "-aet", "STRANGER", *_ours(server), ok=False)
    assert "Calling AE Title Not Recognized" in refused.stderr
    assert "'STRANGER' is not on the allowlist" in server.log()


def test_store_find_move_get(served: tuple[RunningServer, StoreScp, Path]) -> None:
    server, destination, root = served
    study_uid = pydicom.uid.generate_uid(ROOT)
    wsi, frames = wsi_level(frames=40, study_uid=study_uid, accession="SERVE1")
    scs = [secondary_capture(study_uid=study_uid, accession="SERVE1", instance_number=n, seed=n) for n in (1, 2)]
    sources = root / "sources"
    sources.mkdir()
    files = [str(write(ds, sources / f"{ds.SOPInstanceUID}.dcm")) for ds in (wsi, *scs)]

    # Several files, one association, the WSI in its JPEG syntax.
    sent = run_tool("storescu", "-v", "-R", "-xy", *_ours(server), *files)
    assert sent.stderr.count("Received Store Response (Success)") == 3
    # The serving process and this one share the data dir (SQLite WAL): read the stored frames back.
    engine = open_index(f"sqlite:///{server.data_dir / 'index.sqlite3'}")
    try:
        store = Store(engine, server.data_dir / "blobs")
        assert [f.rstrip(b"\x00") for f in store.get_frames(wsi.SOPInstanceUID, range(1, 41))] == frames
    finally:
        engine.dispose()

    # A duplicate is refused with the reason.
    dup = run_tool("storescu", "-d", *_ours(server), files[1], ok=False)
    assert "already stored" in _error_comment(dup.stderr)

    found = run_tool(
        "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=SERIES", "-k", "AccessionNumber=SERVE*",
        "-k", "SeriesInstanceUID", "-k", "Modality", "-k", "NumberOfSeriesRelatedInstances", *_ours(server),
    )  # fmt: skip
    modalities = sorted(re.findall(r"\(0008,0060\) CS \[(\w+)", found.stderr))
    assert modalities == ["OT", "OT", "SM"], found.stderr[-2000:]

    moved = run_tool(
        "movescu", "-v", "-S", "-aem", "PEER", "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={study_uid}", *_ours(server),
    )  # fmt: skip
    assert "Received Final Move Response (Success)" in moved.stderr, moved.stderr[-2000:]
    assert set(destination.received()) >= {wsi.SOPInstanceUID, *(ds.SOPInstanceUID for ds in scs)}

    out = root / "got"
    out.mkdir()
    got = run_tool(
        "getscu", "-v", "-S", "+xy", "-od", str(out), "-k", "QueryRetrieveLevel=IMAGE",
        "-k", f"StudyInstanceUID={study_uid}", "-k", f"SeriesInstanceUID={wsi.SeriesInstanceUID}",
        "-k", f"SOPInstanceUID={wsi.SOPInstanceUID}", *_ours(server),
    )  # fmt: skip
    assert "Received C-GET Response (Success)" in got.stderr, got.stderr[-2000:]
    (retrieved,) = [pydicom.dcmread(p) for p in out.iterdir()]
    assert retrieved.SOPInstanceUID == wsi.SOPInstanceUID
    assert retrieved.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert retrieved.PixelData == wsi.PixelData
