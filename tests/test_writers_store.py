"""Results stored through the Store API like any STOW, and the report's references resolve there."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest

from ai.dicom import read_differential_report
from dicom_store import Level, Store
from tests.test_writers_support import results, scan


@pytest.fixture
def store(engine, tmp_path: Path) -> Store:  # type: ignore[no-untyped-def]
    return Store(engine, tmp_path / "blobs")


def test_report_references_resolve_to_stored_instances(store: Store) -> None:
    s, r = scan(), results()
    for ds in [*s.datasets, r.seg, r.ann, r.aoi, r.preliminary, r.final, r.corrected]:
        store.store_dataset(ds)
    for sr in (r.preliminary, r.final, r.corrected):
        stored = store.get_dataset(sr.SOPInstanceUID)
        report = read_differential_report(stored)
        referenced = [*report["evidence"], *report["predecessors"]]
        rows = store.instances(sop_instance_uids=referenced)
        assert {row.sop_instance_uid for row in rows} == set(referenced)
        for row in rows:  # the reference names the instance's own study, series and class
            assert row.study_instance_uid == s.sparse.StudyInstanceUID
    # Every result is in the slide's study, found by modality like Slim/DMV query them.
    modalities = {ds.Modality for ds in store.search(Level.SERIES, [("StudyInstanceUID", s.sparse.StudyInstanceUID)])}
    assert modalities == {"SM", "SEG", "ANN", "SR"}


def test_stored_objects_read_back_through_highdicom(store: Store) -> None:
    r = results()
    for ds in (r.seg, r.ann, r.aoi):
        store.store_dataset(ds)
    seg = hd.seg.Segmentation.from_dataset(store.get_dataset(r.seg.SOPInstanceUID))
    assert seg.number_of_segments == 1
    ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(store.get_dataset(r.ann.SOPInstanceUID))
    assert sum(g.number_of_annotations for g in ann.get_annotation_groups()) == scan().differential.total
    assert store.get_frames(r.seg.SOPInstanceUID, [1])
