"""The DIMSE SCP against dcmtk (the independent peer): echo, allowlist, store, bad input, find.

Each test runs an in-process ``DimseServer`` over a Store on SQLite and on PostgreSQL (the ``engine``
fixture) and drives it with dcmtk's command-line tools, called by full path (pynetdicom's same-named
console scripts in the venv would shadow them).
"""

from __future__ import annotations

import logging
import re
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, _config
from sqlalchemy import func, select, text
from sqlmodel import Session

from dicom_store import Store
from dicom_store.dimse import DimseServer
from dicom_store.models import Instance
from tests.conftest import dcmtk, free_port
from tests.dicom_factory import ROOT, secondary_capture, write, wsi_level

pytestmark = pytest.mark.peer


def run_tool(tool: str, *args: str, ok: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a dcmtk tool; with ``ok`` fail the test showing its output unless it exits 0."""
    done = subprocess.run([dcmtk(tool), *args], capture_output=True, text=True, timeout=60, env=env)
    if ok and done.returncode != 0:
        pytest.fail(f"{tool} {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture
def store(engine, tmp_path: Path) -> Store:
    return Store(engine, tmp_path / "blobs")


@contextmanager
def sqlite_store_in(folder: Path) -> Iterator[Store]:
    """For tests of the protocol side only (association, refusals): the database does not matter."""
    from integration.database import open_index

    engine = open_index(f"sqlite:///{folder / 'index.sqlite3'}")
    try:
        yield Store(engine, folder / "blobs")
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with sqlite_store_in(tmp_path) as store:
        yield store


@contextmanager
def running(store: Store, **options: Any) -> Iterator[DimseServer]:
    server = DimseServer(store, host="127.0.0.1", port=free_port(), **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


ALLOWED = ["STORESCU", "FINDSCU", "ECHOSCU"]


@pytest.fixture
def scp(store: Store) -> Iterator[DimseServer]:
    with running(store, allowed_aes=ALLOWED) as server:
        yield server


@pytest.fixture
def light_scp(sqlite_store: Store) -> Iterator[DimseServer]:
    with running(sqlite_store, allowed_aes=ALLOWED) as server:
        yield server


def peer(server: DimseServer) -> list[str]:
    """The arguments naming our SCP on a dcmtk command line."""
    host, port = server.address
    return ["-aec", server.ae_title, host, str(port)]


def index_count(store: Store) -> int:
    with Session(store.engine) as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


def blob_files(store: Store) -> list[Path]:
    return [p for p in store.blobs.root.rglob("*") if p.is_file()]


def test_echo(light_scp: DimseServer) -> None:
    done = run_tool("echoscu", "-v", *peer(light_scp))
    assert "Received Echo Response (Success)" in done.stderr


def test_calling_ae_not_on_allowlist_is_rejected(light_scp: DimseServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_store.dimse"):
        done = run_tool("echoscu", "-v", "-aet", "INTRUDER", *peer(light_scp), ok=False)
    assert done.returncode != 0
    assert "Association Rejected" in done.stderr
    assert "Calling AE Title Not Recognized" in done.stderr
    assert any("'INTRUDER' is not on the allowlist" in record.getMessage() for record in caplog.records)


def test_storescu_several_files_in_one_association_with_wsi(scp: DimseServer, store: Store, tmp_path: Path) -> None:
    study = pydicom.uid.generate_uid(ROOT)
    wsi, frames = wsi_level(frames=30, study_uid=study)
    files = [write(wsi, tmp_path / "wsi.dcm")]
    files += [
        write(secondary_capture(study_uid=study, instance_number=n, seed=n), tmp_path / f"sc{n}.dcm") for n in (1, 2)
    ]
    # -R -xy: propose the JPEG syntax the WSI is stored in (plain storescu has no VL WSM context).
    done = run_tool("storescu", "-v", "-R", "-xy", *peer(scp), *map(str, files))
    assert done.stderr.count("Requesting Association") == 1
    assert done.stderr.count("Received Store Response (Success)") == 3

    row = store.instance(wsi.SOPInstanceUID)
    assert row.transfer_syntax_uid == pydicom.uid.JPEGBaseline8Bit
    assert row.number_of_frames == 30
    got = store.get_frames(wsi.SOPInstanceUID, range(1, 31))
    assert [g.rstrip(b"\x00") for g in got] == frames
    assert len(store.instances(study)) == 3
    # The chunked-receive temp files were taken over, not left behind.
    assert not list(store.blobs.tmp.iterdir())


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    no_uid = secondary_capture()
    del no_uid.SOPInstanceUID
    path_uid = secondary_capture()
    path_uid.SOPInstanceUID = "1.2.826.0.1/../../../etc"
    path_uid.file_meta.MediaStorageSOPInstanceUID = path_uid.SOPInstanceUID
    files = {}
    for name, ds in (("no_uid", no_uid), ("path_uid", path_uid)):
        files[name] = tmp_path / f"{name}.dcm"
        ds.preamble = b"\x00" * 128  # a Part-10 file, just not a valid one
        ds.save_as(files[name], enforce_file_format=False)
    return files


def _error_comment(stderr: str) -> str:
    match = re.search(r"\(0000,0902\) LO \[([^\]]*)\]", stderr)
    return match.group(1) if match else ""


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the hostile UID is the point
def test_bad_instances_get_failure_status_with_comment_and_nothing_is_written(
    scp: DimseServer, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = secondary_capture()
    write(good, tmp_path / "good.dcm")
    run_tool("storescu", *peer(scp), str(tmp_path / "good.dcm"))
    stored_blobs = blob_files(store)
    assert index_count(store) == 1

    files = _bad_files(tmp_path)
    duplicate = secondary_capture(
        sop_uid=good.SOPInstanceUID, study_uid=good.StudyInstanceUID, series_uid=good.SeriesInstanceUID, seed=9
    )
    files["duplicate"] = write(duplicate, tmp_path / "duplicate.dcm")
    expected = {
        "path_uid": (0xC000, "is not a valid DICOM UID"),
        "duplicate": (0x0111, "is already stored"),
    }
    # dcmtk refuses to send a data set without SOP Instance UID, so pynetdicom sends that file as it is
    # (chunked send: the command's UIDs come from the File Meta, the data set goes unparsed).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE("STORESCU")
    ae.add_requested_context(pydicom.uid.SecondaryCaptureImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    ae.add_requested_context(pydicom.uid.VLWholeSlideMicroscopyImageStorage, pydicom.uid.JPEGBaseline8Bit)
    # A WSI cut short in its last frame: the data set ends inside the encapsulated Pixel Data.
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(write(wsi_level(frames=6)[0], tmp_path / "whole.dcm").read_bytes()[:-3000])
    assoc = ae.associate(*scp.address, ae_title=scp.ae_title)
    assert assoc.is_established
    answer = assoc.send_c_store(files.pop("no_uid"))
    cut = assoc.send_c_store(truncated)
    assoc.release()
    assert answer.Status == 0xC000
    assert "SOPInstanceUID is missing" in answer.ErrorComment
    assert cut.Status == 0xC000, cut
    assert "truncated" in cut.ErrorComment

    for name, path in files.items():
        # -d prints the whole C-STORE-RSP command set, Error Comment included.
        done = run_tool("storescu", "-d", *peer(scp), str(path), ok=False)
        status, comment = expected[name]
        assert re.search(rf"DIMSE Status\s*: 0x{status:04x}", done.stderr, re.I), (name, done.stderr[-2000:])
        assert comment in _error_comment(done.stderr), (name, done.stderr[-2000:])

    assert index_count(store) == 1
    assert blob_files(store) == stored_blobs
    assert store.get_dataset(good.SOPInstanceUID).PixelData == good.PixelData


def _load_study_set(scp: DimseServer, tmp_path: Path) -> dict[str, pydicom.Dataset]:
    """Two patients, three studies, one with a WSI series and an OT series."""
    a1 = secondary_capture(patient_name="DOE^JANE", patient_id="P1", accession="ACC1", modality="OT")
    a2, _ = wsi_level(frames=4, patient_name="DOE^JANE", patient_id="P1", accession="ACC2")
    a2_ot = secondary_capture(
        study_uid=a2.StudyInstanceUID, patient_name="DOE^JANE", patient_id="P1", accession="ACC2", modality="OT"
    )
    b1 = secondary_capture(patient_name="ROE^RICHARD", patient_id="P2", accession="ACC3", modality="OT")
    b1.StudyDate = "20250101"
    data = {"a1": a1, "a2": a2, "a2_ot": a2_ot, "b1": b1}
    files = [str(write(ds, tmp_path / f"{name}.dcm")) for name, ds in data.items()]
    run_tool("storescu", "-R", "-xy", *peer(scp), *files)
    return data


def _find(scp: DimseServer, model: str, *keys: str) -> list[dict[str, str]]:
    """Run findscu and parse each Pending response into {tag: value}."""
    args = ["-v", model, *[a for key in keys for a in ("-k", key)], *peer(scp)]
    done = run_tool("findscu", *args, "-aet", "FINDSCU")
    responses: list[dict[str, str]] = []
    for block in done.stderr.split("Find Response:")[1:]:
        values = {}
        # dcmtk prints values in brackets, well-known UIDs as =Name, and empty values as (no value …).
        pattern = r"\(([0-9a-f]{4},[0-9a-f]{4})\) \w\w (?:\[([^\]]*)\]|(=\w+)|\(no value)"
        for tag, value, uid_name in re.findall(pattern, block):
            values[tag] = (value or uid_name).strip("\x00 ")
        responses.append(values)
    assert "Received Final Find Response (Success)" in done.stderr, done.stderr[-2000:]
    return responses


def test_find_study_series_image_levels_in_both_models(scp: DimseServer, tmp_path: Path) -> None:
    data = _load_study_set(scp, tmp_path)
    # Study root, study level, wildcard on the name and a date range: both of Jane's studies, not Richard's.
    studies = _find(
        scp,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientName=DOE*",
        "StudyDate=20260101-20261231",
        "StudyInstanceUID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    )
    by_accession = {r["0008,0050"]: r for r in studies}
    assert set(by_accession) == {"ACC1", "ACC2"}
    assert by_accession["ACC2"]["0008,0061"] == "OT\\SM"
    assert by_accession["ACC2"]["0020,1208"] == "2"
    assert by_accession["ACC2"]["0020,000d"] == data["a2"].StudyInstanceUID
    # Only requested keys come back (plus the level's unique key, level and character set).
    assert set(by_accession["ACC1"]) == {
        "0008,0005", "0008,0052", "0010,0010", "0008,0020", "0020,000d", "0008,0050", "0008,0061", "0020,1208"
    }  # fmt: skip

    # ModalitiesInStudy as a matching key.
    sm = _find(scp, "-S", "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=SM", "AccessionNumber")
    assert [r["0008,0050"] for r in sm] == ["ACC2"]

    # Patient root, patient level: one answer per patient with the related-study count.
    patients = _find(
        scp, "-P", "QueryRetrieveLevel=PATIENT", "PatientID=P*", "PatientName", "NumberOfPatientRelatedStudies"
    )
    assert {(p["0010,0020"], p["0010,0010"], p["0020,1200"]) for p in patients} == {
        ("P1", "DOE^JANE", "2"),
        ("P2", "ROE^RICHARD", "1"),
    }

    # Patient root, series level under one study.
    series = _find(
        scp,
        "-P",
        "QueryRetrieveLevel=SERIES",
        "PatientID=P1",
        f"StudyInstanceUID={data['a2'].StudyInstanceUID}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert sorted(s["0008,0060"] for s in series) == ["OT", "SM"]
    assert all(s["0020,1209"] == "1" for s in series)

    # Study root, image level with an indexed WSI return key.
    images = _find(
        scp,
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"SeriesInstanceUID={data['a2'].SeriesInstanceUID}",
        "SOPInstanceUID",
        "SOPClassUID",
        "NumberOfFrames",
        "ContainerIdentifier",
    )
    assert len(images) == 1
    assert images[0]["0008,0018"] == data["a2"].SOPInstanceUID
    assert images[0]["0008,0016"] == "=VLWholeSlideMicroscopyImageStorage"
    assert images[0]["0028,0008"] == "4"
    assert images[0]["0040,0512"] == "SLIDE-0001"

    # The same levels in the other model answer the same.
    assert {
        r["0008,0050"] for r in _find(scp, "-P", "QueryRetrieveLevel=STUDY", "PatientID=P1", "AccessionNumber")
    } == {
        "ACC1",
        "ACC2",
    }
    study_root_series = _find(
        scp, "-S", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={data['a2'].StudyInstanceUID}", "Modality"
    )
    assert sorted(s["0008,0060"] for s in study_root_series) == ["OT", "SM"]
    patient_root_images = _find(scp, "-P", "QueryRetrieveLevel=IMAGE", "PatientID=P2", "SOPInstanceUID")
    assert [i["0008,0018"] for i in patient_root_images] == [data["b1"].SOPInstanceUID]

    # Wildcards on text keys other than PN are case-sensitive on every index database (PS3.4 C.2.2.2.4).
    assert _find(scp, "-S", "QueryRetrieveLevel=STUDY", "AccessionNumber=acc*") == []
    assert len(_find(scp, "-S", "QueryRetrieveLevel=STUDY", "AccessionNumber=ACC*")) == 3

    # A key the SCP cannot match on matches universally, and the pending status says so (0xFF01).
    done = run_tool(
        "findscu", "-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "AccessionNumber=ACC1",
        "-k", "PatientAge=030Y", "-aet", "FINDSCU", *peer(scp),
    )  # fmt: skip
    assert re.search(r"DIMSE Status\s*: 0xff01", done.stderr, re.I), done.stderr[-2000:]

    # No match: only the final Success.
    assert _find(scp, "-S", "QueryRetrieveLevel=STUDY", "AccessionNumber=NOPE") == []


def test_find_refuses_bad_identifiers_with_comment(light_scp: DimseServer) -> None:
    scp = light_scp
    # PATIENT level does not exist in the Study Root model (PS3.4 C.6.2).
    done = run_tool("findscu", "-d", "-S", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID", *peer(scp), ok=False)
    assert "a900" in done.stderr.lower() or "Identifier Does Not Match SOP Class" in done.stderr
    assert "Patient Root" in _error_comment(done.stderr)
    done = run_tool(
        "findscu", "-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyDate=yesterday", *peer(scp), ok=False
    )
    assert "is not a DICOM date/time" in _error_comment(done.stderr)


def test_an_unexpected_failure_answers_with_an_incident_id_only(light_scp: DimseServer, caplog) -> None:  # type: ignore[no-untyped-def]
    """A real fault (the index table is gone): the peer reads an incident id, the log has the SQL."""
    caplog.set_level(logging.ERROR)
    with light_scp.store.engine.begin() as connection:
        connection.execute(text("DROP TABLE dicom_study"))
    done = run_tool(
        "findscu", "-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID", *peer(light_scp), ok=False
    )
    comment = _error_comment(done.stderr)
    incident_id = re.search(r"incident ([0-9a-f]{12})", comment).group(1)  # type: ignore[union-attr]
    for word in ("SQL", "sqlite3", "OperationalError", "dicom_study", "Error:"):
        assert word not in done.stderr + done.stdout
    assert any(incident_id in r.getMessage() and r.exc_info for r in caplog.records)
    assert "no such table: dicom_study" in caplog.text


def test_tls_echo_and_store(sqlite_store: Store, tmp_path: Path) -> None:
    """DICOM over TLS (PS3.15 B.1) with a throw-away self-signed server certificate; dcmtk as client."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with running(sqlite_store, ssl_context=context) as server:
        # +tla: TLS without a client certificate; +cf: trust our self-signed server certificate.
        tls = ["+tla", "+cf", str(cert)]
        assert "Received Echo Response (Success)" in run_tool("echoscu", "-v", *tls, *peer(server)).stderr
        ds = secondary_capture()
        run_tool("storescu", *tls, *peer(server), str(write(ds, tmp_path / "sc.dcm")))
        assert sqlite_store.get_dataset(ds.SOPInstanceUID).PixelData == ds.PixelData
        # A plain TCP client cannot talk to the TLS port.
        assert run_tool("echoscu", *peer(server), ok=False).returncode != 0


def test_negotiation_accepts_archive_classes_in_the_proposed_syntax(light_scp: DimseServer) -> None:
    """Every class the archive stores is accepted, in the sender's encapsulated syntax when it offers one
    (a sender that gets Explicit VR Little Endian instead would have to decompress)."""
    from pynetdicom.sop_class import (
        BasicTextSRStorage,
        Comprehensive3DSRStorage,
        ComprehensiveSRStorage,
        MicroscopyBulkSimpleAnnotationsStorage,
        SecondaryCaptureImageStorage,
        SegmentationStorage,
        VLSlideCoordinatesMicroscopicImageStorage,
        VLWholeSlideMicroscopyImageStorage,
    )

    uid = pydicom.uid
    proposals = {
        VLWholeSlideMicroscopyImageStorage: [uid.JPEGBaseline8Bit, uid.ExplicitVRLittleEndian],
        VLSlideCoordinatesMicroscopicImageStorage: [uid.HTJ2K, uid.ExplicitVRLittleEndian],
        SegmentationStorage: [uid.ExplicitVRLittleEndian, uid.RLELossless],
        SecondaryCaptureImageStorage: [uid.JPEG2000Lossless],
        MicroscopyBulkSimpleAnnotationsStorage: [uid.ExplicitVRLittleEndian],
        Comprehensive3DSRStorage: [uid.ImplicitVRLittleEndian],
        ComprehensiveSRStorage: [uid.DeflatedExplicitVRLittleEndian],
        BasicTextSRStorage: [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian],
    }
    expected = {
        VLWholeSlideMicroscopyImageStorage: uid.JPEGBaseline8Bit,
        VLSlideCoordinatesMicroscopicImageStorage: uid.HTJ2K,
        SegmentationStorage: uid.RLELossless,
        SecondaryCaptureImageStorage: uid.JPEG2000Lossless,
        MicroscopyBulkSimpleAnnotationsStorage: uid.ExplicitVRLittleEndian,
        Comprehensive3DSRStorage: uid.ImplicitVRLittleEndian,
        ComprehensiveSRStorage: uid.DeflatedExplicitVRLittleEndian,
        BasicTextSRStorage: uid.ExplicitVRLittleEndian,
    }
    ae = AE("STORESCU")
    for sop_class, syntaxes in proposals.items():
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(*light_scp.address, ae_title=light_scp.ae_title)
    assert assoc.is_established
    try:
        accepted = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    finally:
        assoc.release()
    assert accepted == expected
    # The Storage SCP takes every storage class pynetdicom knows, not only these.
    assert len(light_scp.ae.supported_contexts) >= 170


def test_sender_killed_mid_transfer_leaves_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    """kill -9 of storescu during a large WSI: no partial file in the temp folder, nothing stored."""
    from integration.bench.dimse import write_wsi_series

    (big,) = write_wsi_series(tmp_path / "big", size_mb=150, instances=1)
    spool = sqlite_store.blobs.tmp  # data sets are received straight into the blob store's temp folder
    before = set(spool.glob("*.part"))
    system_before = set(Path(tempfile.gettempdir()).glob("tmp*.dcm"))
    with running(sqlite_store) as server:
        sender = subprocess.Popen(
            [dcmtk("storescu"), "-R", "-xy", *peer(server), str(big)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        partial: set[Path] = set()
        deadline = time.monotonic() + 30
        while not partial and time.monotonic() < deadline and sender.poll() is None:
            partial = {p for p in set(spool.glob("*.part")) - before if p.stat().st_size > 1_000_000}
            time.sleep(0.01)
        sender.kill()
        sender.wait()
        assert partial, "the transfer finished before it could be interrupted"
        deadline = time.monotonic() + 10
        while any(p.exists() for p in partial) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(p.exists() for p in partial)
        assert set(Path(tempfile.gettempdir()).glob("tmp*.dcm")) <= system_before  # nothing in the system's
        assert index_count(sqlite_store) == 0
        assert blob_files(sqlite_store) == []
        # The server keeps serving.
        run_tool("echoscu", *peer(server))


def test_find_matches_names_across_character_sets(light_scp: DimseServer, tmp_path: Path) -> None:
    """Stored in Latin-1, asked for in UTF-8: matched on the decoded name, answered in UTF-8."""
    ds = secondary_capture(patient_name="MÜLLER^JÖRG", patient_id="P9")
    ds.SpecificCharacterSet = "ISO_IR 100"
    run_tool("storescu", *peer(light_scp), str(write(ds, tmp_path / "latin1.dcm")))
    assert pydicom.dcmread(tmp_path / "latin1.dcm").PatientName == "MÜLLER^JÖRG"
    done = subprocess.run(
        [dcmtk("findscu"), "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "SpecificCharacterSet=ISO_IR 192",
         "-k", "PatientName=MÜ*", "-k", "PatientID", *peer(light_scp)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, stderr
    assert "Find Response: 1" in stderr and "Find Response: 2" not in stderr
    assert "[ISO_IR 192]" in stderr and "PN [MÜLLER^JÖRG" in stderr and "[P9]" in stderr, stderr


def test_find_cancel(light_scp: DimseServer, sqlite_store: Store) -> None:
    """C-CANCEL-FIND after the first response ends the matches with 0xFE00 (checked before each response).

    The matches must outlast the time the cancel takes to arrive, also on a fast idle machine: 20,000
    index rows (C-FIND answers from the index alone, so no files are needed) take seconds to send one
    by one, the cancel arrives within milliseconds of the first response.
    """
    from datetime import UTC, datetime

    from dicom_store.models import Series, Study

    study, series = pydicom.uid.generate_uid(ROOT), pydicom.uid.generate_uid(ROOT)
    now = datetime.now(UTC)
    matches = 20_000
    with sqlite_store.engine.begin() as connection:
        connection.execute(Study.__table__.insert(), [{"study_instance_uid": study, "created_at": now}])
        connection.execute(
            Series.__table__.insert(),
            [{"series_instance_uid": series, "study_instance_uid": study, "modality": "OT", "created_at": now}],
        )
        connection.execute(
            Instance.__table__.insert(),
            [
                {
                    "sop_instance_uid": f"{study}.{number}",
                    "series_instance_uid": series,
                    "study_instance_uid": study,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
                    "instance_number": number,
                    "path": f"never/read/{number}.dcm",
                    "stored_at": now,
                }
                for number in range(matches)
            ],
        )
    done = run_tool(
        "findscu", "-v", "-S", "--cancel", "1", "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}",
        "-k", "SOPInstanceUID", *peer(light_scp),
    )  # fmt: skip
    assert "Received Final Find Response (Cancel: MatchingTerminatedDueToCancelRequest)" in done.stderr
    assert done.stderr.count("Find Response:") < matches


def test_concurrent_associations_into_one_new_study(scp: DimseServer, store: Store, tmp_path: Path) -> None:
    """Several senders at once (one association each) into the same new study and series."""
    study, series = pydicom.uid.generate_uid(ROOT), pydicom.uid.generate_uid(ROOT)
    batches = []
    for sender in range(4):
        folder = tmp_path / f"sender{sender}"
        folder.mkdir()
        batch = [
            secondary_capture(study_uid=study, series_uid=series, instance_number=sender * 10 + n, seed=n)
            for n in range(3)
        ]
        batches.append([str(write(ds, folder / f"{ds.SOPInstanceUID}.dcm")) for ds in batch])
    senders = [
        subprocess.Popen([dcmtk("storescu"), *peer(scp), *files], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for files in batches
    ]
    outputs = [sender.communicate(timeout=60)[0].decode() for sender in senders]
    assert [sender.returncode for sender in senders] == [0, 0, 0, 0], outputs
    assert len(store.instances(study, series)) == 12


def test_oversize_instance_is_refused_with_out_of_resources(tmp_path: Path) -> None:
    with sqlite_store_in(tmp_path) as store:
        store.max_instance_bytes = 100_000
        wsi, _ = wsi_level(frames=20)
        with running(store) as server:
            done = run_tool("storescu", "-d", "-R", "-xy", *peer(server), str(write(wsi, tmp_path / "w.dcm")), ok=False)
        assert re.search(r"DIMSE Status\s*: 0xa700", done.stderr, re.I), done.stderr[-2000:]
        assert "exceeds the limit" in _error_comment(done.stderr)
        assert index_count(store) == 0
        assert blob_files(store) == []
