"""Orthanc as an independent peer of `marrowlink serve`: it C-STOREs to us, we C-MOVE to it, and the
same data set queried on both (QIDO-RS on each, C-FIND on ours) gives the same matches.

Runs the real server process (SQLite index) and a real Orthanc, both on free ports.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.dicom_factory import secondary_capture, wsi_level
from tests.orthanc import RunningOrthanc, orthanc_server
from tests.servers import RunningServer, marrowlink_server
from tests.test_dimse_scp import run_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def _part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _data_set() -> list[pydicom.Dataset]:
    """Four studies that the queries below tell apart: names, dates, modalities, accession numbers."""
    jane_wsi, _ = wsi_level(frames=16, patient_name="DOE^JANE", patient_id="P1", accession="ACC2")
    jane_ot = secondary_capture(
        study_uid=jane_wsi.StudyInstanceUID, patient_name="DOE^JANE", patient_id="P1", accession="ACC2"
    )
    john = secondary_capture(patient_name="DOE^JOHN", patient_id="P2", accession="ACC3")
    john.StudyDate = "20250310"
    richard = secondary_capture(patient_name="ROE^RICHARD", patient_id="P3", accession="ACC4")
    richard.StudyDate = "20261001"
    ann = secondary_capture(patient_name="DOE^ANN", patient_id="P4", accession="ACC5", modality="XC")
    ann.StudyDate = "20240101"
    return [jane_wsi, jane_ot, john, richard, ann]


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[RunningOrthanc, RunningServer]]:
    with orthanc_server(tmp_path / "orthanc") as orthanc:
        env = {
            "MARROWLINK_DICOMWEB_PUBLIC_READ": "true",
            "MARROWLINK_ALLOWED_AES": json.dumps(["ORTHANC", "MOVESCU", "FINDSCU"]),
            "MARROWLINK_REMOTE_AES": json.dumps(
                [{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}]
            ),
        }
        data = tmp_path / "data"
        data.mkdir()
        with marrowlink_server(data, env=env) as ours:
            # Orthanc learns our AE at run time, since our port is chosen when the server starts.
            answer = httpx.put(
                f"{orthanc.url}/modalities/marrowlink",
                json={"AET": ours.ae_title, "Host": "127.0.0.1", "Port": ours.dicom_port},
            )
            answer.raise_for_status()
            yield orthanc, ours


def _study_uids(answer: httpx.Response) -> set[str]:
    answer.raise_for_status()
    return {item["0020000D"]["Value"][0] for item in (answer.json() if answer.content else [])}


def _qido(path: str, query: dict[str, str]) -> str:
    """The query string written out by hand: Orthanc 1.10 (DICOMweb plugin 1.7) does not percent-decode
    QIDO values, so ``DOE%2A`` (what httpx makes of ``DOE*``) matches nothing there."""
    return path + "?" + "&".join(f"{key}={value}" for key, value in query.items())


def _cfind_study_uids(ours: RunningServer, **keys: str) -> set[str]:
    args = ["-S", "-aet", "FINDSCU", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    done = run_tool("findscu", "-v", *args, "-aec", ours.ae_title, "127.0.0.1", str(ours.dicom_port))
    return {uid.rstrip("\x00") for uid in _re_uids(done.stderr)}


def _re_uids(text: str) -> list[str]:
    import re

    return re.findall(r"\(0020,000d\) UI \[([0-9.\x00]+)\]", text)


QUERIES = [
    {"PatientName": "DOE*"},
    {"StudyDate": "20260101-20261231"},
    {"ModalitiesInStudy": "SM"},
    {"AccessionNumber": "ACC3"},
    {"PatientName": "DOE^J*", "StudyDate": "20250101-"},
]


def test_orthanc_stores_to_us_and_queries_agree(peers: tuple[RunningOrthanc, RunningServer]) -> None:
    orthanc, ours = peers
    data = _data_set()
    ids = [orthanc.upload(_part10(ds)) for ds in data]

    # Orthanc is the C-STORE SCU here, over one association.
    answer = httpx.post(
        f"{orthanc.url}/modalities/marrowlink/store", json={"Resources": ids, "Synchronous": True}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["InstancesCount"] == len(data)
    assert answer.json()["FailedInstancesCount"] == 0

    wsi = data[0]
    with httpx.Client(base_url=ours.dicomweb_url, timeout=30) as http:
        stored = http.get(f"/studies/{wsi.StudyInstanceUID}/series/{wsi.SeriesInstanceUID}/instances")
        assert stored.status_code == 200
        assert stored.json()[0]["00080018"]["Value"][0] == wsi.SOPInstanceUID
    # Stored as sent: the JPEG frames, not a transcoded copy.
    client = DICOMwebClient(ours.dicomweb_url)
    back = client.retrieve_instance(
        wsi.StudyInstanceUID, wsi.SeriesInstanceUID, wsi.SOPInstanceUID, media_types=(("application/dicom", "*"),)
    )
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert back.PixelData == wsi.PixelData

    with httpx.Client(base_url=ours.dicomweb_url, timeout=30) as http:
        for query in QUERIES:
            mine = _study_uids(http.get(_qido("/studies", query)))
            theirs = _study_uids(httpx.get(_qido(f"{orthanc.dicomweb_url}/studies", query)))
            by_cfind = _cfind_study_uids(ours, **query)
            assert mine == theirs, (query, theirs, orthanc.log()[-3000:])
            assert mine == by_cfind, query
            assert mine, f"query {query} should match something"


def test_we_move_to_orthanc(peers: tuple[RunningOrthanc, RunningServer], tmp_path: Path) -> None:
    orthanc, ours = peers
    wsi, _ = wsi_level(frames=25, patient_name="MOVE^ME", accession="MOV1")
    sc = secondary_capture(study_uid=wsi.StudyInstanceUID, patient_name="MOVE^ME", accession="MOV1")
    files = []
    for name, ds in (("wsi", wsi), ("sc", sc)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(_part10(ds))
        files.append(str(path))
    # STORESCU is not on this server's allowlist; ORTHANC is.
    ours_args = ["-aec", ours.ae_title, "127.0.0.1", str(ours.dicom_port)]
    refused = run_tool("storescu", "-R", "-xy", *ours_args, *files, ok=False)
    assert "Calling AE Title Not Recognized" in refused.stderr
    run_tool("storescu", "-R", "-xy", "-aet", "ORTHANC", *ours_args, *files)
    assert orthanc.sop_instance_uids() == set()

    done = run_tool(
        "movescu", "-v", "-S", "-aet", "MOVESCU", "-aem", "ORTHANC",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={wsi.StudyInstanceUID}",
        "-aec", ours.ae_title, "127.0.0.1", str(ours.dicom_port),
    )  # fmt: skip
    assert "Received Final Move Response (Success)" in done.stderr, done.stderr[-2000:]
    assert orthanc.sop_instance_uids() == {wsi.SOPInstanceUID, sc.SOPInstanceUID}
    with orthanc.client() as http:
        orthanc_id = http.post("/tools/lookup", content=wsi.SOPInstanceUID).json()[0]["ID"]
        moved = pydicom.dcmread(io.BytesIO(http.get(f"/instances/{orthanc_id}/file").content))
    assert moved.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert moved.PixelData == wsi.PixelData
