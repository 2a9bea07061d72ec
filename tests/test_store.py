"""The Store API on SQLite and PostgreSQL: atomic writes, duplicates, frames, matching."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from dicom_store import (
    DuplicateInstance,
    InvalidInstance,
    Level,
    NotFound,
    Outcome,
    OutOfResources,
    Store,
)
from dicom_store.models import Instance, Study
from tests.dicom_factory import secondary_capture, wsi_level


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _blob_files(store: Store) -> list[Path]:
    return [p for p in store.blobs.root.rglob("*") if p.is_file()]


@pytest.fixture
def store(engine, tmp_path: Path) -> Store:
    return Store(engine, tmp_path / "blobs")


def test_store_and_read_back(store: Store) -> None:
    ds = secondary_capture()
    result = store.store_bytes(_bytes(ds))
    assert result.outcome is Outcome.STORED
    back = store.get_dataset(ds.SOPInstanceUID)
    assert back.PatientName == "DOE^JANE"
    assert back.PixelData == ds.PixelData
    assert store.get_frames(ds.SOPInstanceUID, [1]) == [ds.PixelData]
    assert not list(store.blobs.tmp.iterdir())


def test_wsi_frames_are_the_stored_bytes(store: Store) -> None:
    ds, frames = wsi_level(frames=7)
    store.store_dataset(ds)
    row = store.instance(ds.SOPInstanceUID)
    assert row.number_of_frames == 7
    assert row.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    assert row.total_pixel_matrix_columns == ds.TotalPixelMatrixColumns
    assert row.dimension_organization_type == "TILED_FULL"
    assert row.container_identifier == "SLIDE-0001"
    assert row.image_type == "ORIGINAL\\PRIMARY\\VOLUME\\NONE"
    got = store.get_frames(ds.SOPInstanceUID, [1, 7, 3])
    # Encapsulated fragments are padded to even length; the stored bytes are what the file holds.
    assert [g.rstrip(b"\x00") for g in got] == [frames[0], frames[6], frames[2]]
    with pytest.raises(NotFound):
        store.get_frames(ds.SOPInstanceUID, [8])


def test_duplicate_policies(engine, tmp_path: Path) -> None:
    ds = secondary_capture(patient_name="FIRST^ONE")
    reject = Store(engine, tmp_path / "blobs")
    reject.store_dataset(ds)
    with pytest.raises(DuplicateInstance, match="already stored") as info:
        reject.store_dataset(
            secondary_capture(
                sop_uid=ds.SOPInstanceUID, study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID, seed=5
            )
        )
    assert info.value.status == 0x0111
    assert len(_blob_files(reject)) == 1

    keep = Store(engine, tmp_path / "blobs", duplicate_policy="keep")
    changed = secondary_capture(
        sop_uid=ds.SOPInstanceUID, study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID, seed=5
    )
    assert keep.store_dataset(changed).outcome is Outcome.KEPT_EXISTING
    assert keep.get_dataset(ds.SOPInstanceUID).PixelData == ds.PixelData

    replace = Store(engine, tmp_path / "blobs", duplicate_policy="replace")
    assert replace.store_dataset(changed).outcome is Outcome.REPLACED
    assert replace.get_dataset(ds.SOPInstanceUID).PixelData == changed.PixelData
    assert len(_blob_files(replace)) == 1  # the old blob is gone, not left behind


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"this is not dicom at all", "not a DICOM"),
        (b"\x00" * 128 + b"DICM" + b"\x02\x00", "TransferSyntaxUID"),
    ],
)
def test_garbage_is_refused_and_nothing_written(store: Store, engine, payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidInstance, match=reason):
        store.store_bytes(payload)
    assert _blob_files(store) == []
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 0


def test_truncated_pixel_data_is_refused(store: Store) -> None:
    ds, _ = wsi_level(frames=4)
    data = _bytes(ds)
    with pytest.raises(InvalidInstance, match="truncated"):
        store.store_bytes(data[: len(data) - 3000])
    assert _blob_files(store) == []


def test_missing_and_hostile_uids(store: Store) -> None:
    ds = secondary_capture()
    del ds.SOPInstanceUID
    with pytest.raises(InvalidInstance, match="SOPInstanceUID"):
        store.store_dataset(ds)
    hostile = secondary_capture(sop_uid="1.2.3")
    hostile.SOPInstanceUID = "../../../etc/passwd"
    hostile.file_meta.MediaStorageSOPInstanceUID = "../../../etc/passwd"
    with pytest.raises(InvalidInstance, match="not a valid DICOM UID"):
        store.store_bytes(_bytes(hostile))
    assert _blob_files(store) == []


def test_size_limit(engine, tmp_path: Path) -> None:
    small = Store(engine, tmp_path / "blobs", max_instance_bytes=1000)
    with pytest.raises(OutOfResources):
        small.store_dataset(secondary_capture(size=64))


def test_series_in_two_studies_is_refused(store: Store) -> None:
    first = secondary_capture()
    store.store_dataset(first)
    other = secondary_capture(series_uid=first.SeriesInstanceUID)
    with pytest.raises(InvalidInstance, match="belongs to study"):
        store.store_dataset(other)


def test_matching(store: Store, engine) -> None:
    a = secondary_capture(patient_name="Müller^Anna", patient_id="P1", accession="A1", modality="SM")
    a.StudyDate = "20260102"
    b = secondary_capture(patient_name="SMITH^JOHN", patient_id="P2", accession="A2", modality="SR")
    b.StudyDate = "20261224"
    c = secondary_capture(
        study_uid=b.StudyInstanceUID,
        patient_name="SMITH^JOHN",
        patient_id="P2",
        accession="A2",
        modality="SM",
        instance_number=2,
    )
    for ds in (a, b, c):
        store.store_dataset(ds)

    def uids(level: Level, *params: tuple[str, str]) -> set[str]:
        key = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}[level]
        return {str(ds[key].value) for ds in store.search(level, params)}

    assert uids(Level.STUDY, ("PatientName", "smith*")) == {b.StudyInstanceUID}
    assert uids(Level.STUDY, ("PatientName", "MÜLLER^ANNA")) == {a.StudyInstanceUID}
    assert uids(Level.STUDY, ("PatientName", "ann"), ("fuzzymatching", "true")) == {a.StudyInstanceUID}
    assert uids(Level.STUDY, ("StudyDate", "20260601-")) == {b.StudyInstanceUID}
    assert uids(Level.STUDY, ("StudyDate", "-20260601")) == {a.StudyInstanceUID}
    assert uids(Level.STUDY, ("ModalitiesInStudy", "SR")) == {b.StudyInstanceUID}
    assert uids(Level.STUDY, ("00080050", "A1")) == {a.StudyInstanceUID}
    assert uids(Level.STUDY, ("StudyInstanceUID", f"{a.StudyInstanceUID},{b.StudyInstanceUID}")) == {
        a.StudyInstanceUID,
        b.StudyInstanceUID,
    }
    assert uids(Level.SERIES, ("Modality", "SM")) == {a.SeriesInstanceUID, c.SeriesInstanceUID}
    assert uids(Level.IMAGE, ("StudyInstanceUID", b.StudyInstanceUID), ("InstanceNumber", "2")) == {c.SOPInstanceUID}
    assert uids(Level.STUDY, ("PatientID", "P?")) == {a.StudyInstanceUID, b.StudyInstanceUID}
    assert uids(Level.STUDY, ("PatientID", "P%")) == set()  # SQL wildcards are literal

    study = next(ds for ds in store.search(Level.STUDY, [("AccessionNumber", "A2")]))
    assert list(study.ModalitiesInStudy) == ["SM", "SR"]
    assert study.NumberOfStudyRelatedSeries == 2
    assert study.NumberOfStudyRelatedInstances == 2
    paged = store.search(Level.STUDY, [("limit", "1"), ("offset", "1")])
    assert len(paged) == 1
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 2


def test_delete_instance_removes_rows_and_blob(store: Store, engine) -> None:
    first = secondary_capture()
    second = secondary_capture(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, instance_number=2)
    store.store_dataset(first)
    store.store_dataset(second)
    store.delete_instance(first.SOPInstanceUID)
    assert store.study_exists(first.StudyInstanceUID)
    assert len(_blob_files(store)) == 1
    store.delete_instance(second.SOPInstanceUID)
    assert not store.study_exists(first.StudyInstanceUID)
    assert not store.series_exists(first.SeriesInstanceUID)
    assert _blob_files(store) == []
    store.delete_instance(second.SOPInstanceUID)  # already gone: nothing to do


def test_old_temp_files_of_a_crashed_writer_are_swept(tmp_path: Path) -> None:
    import os
    import time

    from dicom_store.blobs import BlobStore

    blobs = BlobStore(tmp_path / "blobs")
    old, young = blobs.temp_file(), blobs.temp_file()
    old.write_bytes(b"half an instance")
    young.write_bytes(b"being written right now")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    BlobStore(tmp_path / "blobs")  # the next start
    assert not old.exists()
    assert young.exists()


def test_search_json_is_the_datasets_json(store: Store) -> None:
    """QIDO builds DICOM JSON straight from index rows: the same objects as the C-FIND Datasets' JSON."""
    from dicom_store.dicomweb.json_model import dataset_to_json

    names = ["Yamada^Tarou=山田^太郎=やまだ^たろう", "Müller^Anna", "O'NEIL^SEAN^^DR", "A^B==C", ""]
    first = None
    for index, name in enumerate(names):
        ds = secondary_capture(patient_name=name, patient_id=f"P{index}", accession=f"A{index}", modality="SM")
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyDescription = "two\\values" if index == 1 else ""
        ds.ReferringPhysicianName = "DR^WHO" if index == 2 else ""
        ds.SeriesNumber = str(index) if index else ""
        if index == 3:
            del ds.InstanceNumber
        store.store_dataset(ds)
        first = first or ds
    slide, _ = wsi_level(frames=4, study_uid=first.StudyInstanceUID)
    slide.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    slide.PerformedProcedureStepStartDate, slide.PerformedProcedureStepStartTime = "20260102", "101500"
    store.store_dataset(slide)

    searches = [
        (Level.STUDY, []),
        (Level.STUDY, [("PatientName", "Yamada*"), ("limit", "2")]),
        (Level.SERIES, []),
        (Level.SERIES, [("StudyInstanceUID", first.StudyInstanceUID)]),
        (Level.IMAGE, []),
        (Level.IMAGE, [("includefield", "all")]),
        (Level.IMAGE, [("includefield", "ImageType,TotalPixelMatrixRows,Rows")]),
        (Level.PATIENT, [("PatientID", "P1")]),
    ]
    for level, params in searches:
        expected = [dataset_to_json(ds, None) for ds in store.search(level, params)]
        assert expected, (level, params)
        assert store.search_json(level, params) == expected, (level, params)


def test_store_received_takes_the_file_in_place_and_cleans_up_refusals(store: Store) -> None:
    """C-STORE's path: a data set received into the blob store's temp folder, named by the request's UID."""

    def received(ds: pydicom.Dataset) -> Path:
        path = store.blobs.temp_file()
        path.write_bytes(_bytes(ds))
        return path

    good = secondary_capture()
    path = received(good)
    inode = path.stat().st_ino
    result = store.store_received(path, good.SOPInstanceUID)
    assert result.outcome is Outcome.STORED
    assert store.path(good.SOPInstanceUID).stat().st_ino == inode  # renamed, not copied
    assert not path.exists()

    again = received(good)
    with pytest.raises(DuplicateInstance):
        store.store_received(again, good.SOPInstanceUID)
    other = secondary_capture()
    wrong = received(other)
    with pytest.raises(InvalidInstance, match="differs"):
        store.store_received(wrong, secondary_capture().SOPInstanceUID)
    garbage = store.blobs.temp_file()
    garbage.write_bytes(b"not dicom at all" * 100)
    with pytest.raises(InvalidInstance):
        store.store_received(garbage, other.SOPInstanceUID)
    assert _blob_files(store) == [store.path(good.SOPInstanceUID)]  # nothing else, temp included

    outside = store.blobs.root.parent / "elsewhere.dcm"  # not in the temp folder: the ordinary path
    outside.write_bytes(_bytes(other))
    assert store.store_received(outside, other.SOPInstanceUID).outcome is Outcome.STORED


def test_cached_frames_follow_a_replacement_by_another_process(engine, tmp_path: Path, monkeypatch) -> None:
    """Two Stores on one data dir (HTTP workers, a CLI command): a cached frame layout whose blob was
    replaced elsewhere is dropped at its next check."""
    import dicom_store.store as store_module

    writer = Store(engine, tmp_path / "blobs", duplicate_policy="replace")
    reader = Store(engine, tmp_path / "blobs")
    slide, frames = wsi_level(frames=3, seed=1)
    writer.store_dataset(slide)
    assert reader.get_frames(slide.SOPInstanceUID, [1])[0].rstrip(b"\0") == frames[0]
    replacement, new_frames = wsi_level(frames=3, seed=2, study_uid=slide.StudyInstanceUID)
    replacement.SeriesInstanceUID, replacement.SOPInstanceUID = slide.SeriesInstanceUID, slide.SOPInstanceUID
    replacement.file_meta.MediaStorageSOPInstanceUID = slide.SOPInstanceUID
    writer.store_dataset(replacement)
    monkeypatch.setattr(store_module, "LAYOUT_RECHECK_S", 0.0)
    assert reader.get_frames(slide.SOPInstanceUID, [1])[0].rstrip(b"\0") == new_frames[0]
