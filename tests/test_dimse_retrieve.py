"""C-MOVE, C-GET and the forwarding SCU against dcmtk peers (movescu/getscu, storescp as destination)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from dicom_store import Store
from dicom_store.dimse import DimseServer, ForwardError, forward
from tests.conftest import dcmtk, free_port
from tests.dicom_factory import ROOT, secondary_capture, write, wsi_level
from tests.servers import wait_for_port
from tests.test_dimse_scp import _error_comment, peer, run_tool, running, sqlite_store_in

pytestmark = pytest.mark.peer


@dataclass
class StoreScp:
    """A dcmtk storescp writing what it receives into ``folder``."""

    ae_title: str
    port: int
    folder: Path

    def received(self) -> dict[str, pydicom.Dataset]:
        return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in self.folder.iterdir())}


@contextmanager
def storescp(folder: Path, ae_title: str = "PEER") -> Iterator[StoreScp]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # +xa: accept every syntax dcmtk knows (our SCU never transcodes); TCP_NODELAY: no Nagle delays.
    process = subprocess.Popen(
        [dcmtk("storescp"), "-aet", ae_title, "+xa", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_for_port(port, timeout=10, process=process)
        yield StoreScp(ae_title, port, folder)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def store(engine, tmp_path: Path) -> Store:
    return Store(engine, tmp_path / "blobs")


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[StoreScp]:
    with storescp(tmp_path / "peer") as peer_scp:
        yield peer_scp


@pytest.fixture
def scp(store: Store, destination: StoreScp) -> Iterator[DimseServer]:
    server = DimseServer(
        store,
        host="127.0.0.1",
        port=free_port(),
        remote_aes={destination.ae_title: ("127.0.0.1", destination.port)},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def study(scp: DimseServer, tmp_path: Path) -> dict[str, pydicom.Dataset]:
    """One study: a 3-instance SC series and a JPEG WSI level, sent with dcmtk."""
    study_uid = pydicom.uid.generate_uid(ROOT)
    series_uid = pydicom.uid.generate_uid(ROOT)
    data = {
        f"sc{n}": secondary_capture(study_uid=study_uid, series_uid=series_uid, instance_number=n, seed=n)
        for n in (1, 2, 3)
    }
    data["wsi"], _ = wsi_level(frames=9, study_uid=study_uid)
    sources = tmp_path / "sources"
    sources.mkdir()
    files = [str(write(ds, sources / f"{name}.dcm")) for name, ds in data.items()]
    run_tool("storescu", "-R", "-xy", *peer(scp), *files)
    return data


def _same_files(sent: dict[str, pydicom.Dataset], received: dict[str, pydicom.Dataset]) -> None:
    assert set(received) == {str(ds.SOPInstanceUID) for ds in sent.values()}
    for ds in sent.values():
        got = received[str(ds.SOPInstanceUID)]
        assert got.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert got.PixelData == ds.PixelData
        assert got.PatientName == ds.PatientName


def test_move_study_to_storescp(scp: DimseServer, destination: StoreScp, study: dict) -> None:
    study_uid = study["wsi"].StudyInstanceUID
    done = run_tool(
        "movescu", "-v", "-S", "-aem", destination.ae_title,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", *peer(scp),
    )  # fmt: skip
    assert "Received Final Move Response (Success)" in done.stderr, done.stderr[-2000:]
    _same_files(study, destination.received())


def test_move_series_in_patient_root(scp: DimseServer, destination: StoreScp, study: dict) -> None:
    done = run_tool(
        "movescu", "-v", "-P", "-aem", destination.ae_title,
        "-k", "QueryRetrieveLevel=SERIES", "-k", "PatientID=P001",
        "-k", f"StudyInstanceUID={study['sc1'].StudyInstanceUID}",
        "-k", f"SeriesInstanceUID={study['sc1'].SeriesInstanceUID}", *peer(scp),
    )  # fmt: skip
    assert "Received Final Move Response (Success)" in done.stderr, done.stderr[-2000:]
    assert set(destination.received()) == {str(study[f"sc{n}"].SOPInstanceUID) for n in (1, 2, 3)}


def scp_folder(scp: DimseServer) -> Path:
    return scp.store.blobs.root.parent


def test_retrieve_refusals_say_why(tmp_path: Path) -> None:
    study_uid = pydicom.uid.generate_uid(ROOT)
    with sqlite_store_in(tmp_path) as store, running(store, remote_aes={"PEER": ("127.0.0.1", free_port())}) as scp:
        _move_refusals(scp, study_uid)


def _move_refusals(scp: DimseServer, study_uid: str) -> None:
    done = run_tool(
        "movescu", "-d", "-S", "-aem", "NOWHERE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", *peer(scp), ok=False,
    )  # fmt: skip
    assert re.search(r"DIMSE Status\s*: 0xa801", done.stderr, re.I), done.stderr[-2000:]
    assert "'NOWHERE' is not a configured remote AE" in _error_comment(done.stderr)
    # A retrieve without the level's unique key would move the whole archive: refused.
    done = run_tool(
        "movescu", "-d", "-S", "-aem", "PEER", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P001",
        *peer(scp), ok=False,
    )  # fmt: skip
    assert "needs StudyInstanceUID" in _error_comment(done.stderr)
    # The same for C-GET, which has no destination to check first.
    done = run_tool(
        "getscu", "-d", "-S", "-od", str(scp_folder(scp)), "-k", "QueryRetrieveLevel=SERIES",
        "-k", "StudyInstanceUID=1.2.3", *peer(scp), ok=False,
    )  # fmt: skip
    assert re.search(r"DIMSE Status\s*: 0xa900", done.stderr, re.I), done.stderr[-2000:]
    assert "needs SeriesInstanceUID" in _error_comment(done.stderr)


def test_get_into_a_folder(scp: DimseServer, study: dict, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    study_uid = study["wsi"].StudyInstanceUID
    # +xy proposes the JPEG syntax next to the native ones for the storage sub-operations.
    done = run_tool(
        "getscu", "-v", "-S", "+xy", "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", *peer(scp),
    )  # fmt: skip
    assert "Received C-GET Response (Success)" in done.stderr, done.stderr[-3000:]
    _same_files(study, {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, out.iterdir())})


def test_forward_to_a_peer(store: Store, destination: StoreScp, study: dict) -> None:
    uids = [str(ds.SOPInstanceUID) for ds in study.values()]
    result = forward(store, [*uids, "1.2.3.4.5"], ("127.0.0.1", destination.port, destination.ae_title))
    assert sorted(result.sent) == sorted(uids)
    assert result.failed == {"1.2.3.4.5": "not in the archive"}
    _same_files(study, destination.received())
    with pytest.raises(ForwardError):
        forward(store, uids[:1], ("127.0.0.1", free_port(), "NOBODY"), timeout=5)


def test_get_decompresses_for_a_peer_that_takes_only_native(scp: DimseServer, study: dict, tmp_path: Path) -> None:
    """getscu without +xy proposes only native syntaxes: the JPEG WSI is decoded for that one transfer."""
    out = tmp_path / "native"
    out.mkdir()
    wsi = study["wsi"]
    done = run_tool(
        "getscu", "-v", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=IMAGE",
        "-k", f"StudyInstanceUID={wsi.StudyInstanceUID}", "-k", f"SeriesInstanceUID={wsi.SeriesInstanceUID}",
        "-k", f"SOPInstanceUID={wsi.SOPInstanceUID}", *peer(scp),
    )  # fmt: skip
    assert "Received C-GET Response (Success)" in done.stderr, done.stderr[-2000:]
    (got,) = [pydicom.dcmread(p) for p in out.iterdir()]
    assert got.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert got.pixel_array.shape == (9, 256, 256, 3)
    # The archived copy is untouched.
    assert scp.store.instance(wsi.SOPInstanceUID).transfer_syntax_uid == pydicom.uid.JPEGBaseline8Bit
