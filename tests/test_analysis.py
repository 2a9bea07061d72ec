"""`analyze`: a stored slide in, SEG + ANN + TID 1500 SR stored back, all or nothing, a new series per run.

The networks here are tiny ones trained in the fixture: this test is about the pipeline, not about
accuracy (that is `marrowlink evaluate`'s job).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pytest

from acquisition import plan_scan, simulate_slide, write_metafer_export
from ai.dicom import read_differential_report
from dicom_store import Store
from integration.analysis import AnalysisModels, run_analysis
from integration.scans import import_scan

UID_ROOT = "1.2.826.0.1.3680043.8.498."
MARROWLINK = str(Path(sys.executable).parent / "marrowlink")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    slide = simulate_slide(21, "aml", scan_area_um=(600.0, 300.0))
    overview = slide.render_overview()
    folder = tmp_path_factory.mktemp("export")
    write_metafer_export(slide, folder, plan_scan(overview, n=2), overview=overview)
    return folder


@pytest.fixture
def slide(export: Path, engine, tmp_path: Path) -> tuple[Store, str]:
    store = Store(engine, tmp_path / "blobs")
    result = import_scan(export, store, uid_root=UID_ROOT, accession_number="ACC-AN")
    return store, result.study_instance_uid


def test_analysis_stores_consistent_results(slide, tiny_models) -> None:
    store, study = slide
    models = AnalysisModels.load(tiny_models["seg"], tiny_models["cls"], tiny_models["seg"] / "missing")
    before = {row.sop_instance_uid for row in store.instances(study)}
    run = run_analysis(store, study, models, uid_root=UID_ROOT)
    rows = {row.sop_instance_uid: row for row in store.instances(study)}
    assert set(run.stored) == set(rows) - before
    modalities = {ds.Modality for ds in store.search("SERIES", [("StudyInstanceUID", study)])}
    assert {"SM", "SEG", "ANN", "SR"} <= modalities

    sr = store.get_dataset(run.sr_instance_uid)
    report = read_differential_report(sr)
    ann_uid = next(uid for uid in run.stored if rows[uid].sop_class_uid == "1.2.840.10008.5.1.4.1.1.91.1")
    ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(store.get_dataset(ann_uid))
    group_sizes = {}
    for group in ann.get_annotation_groups():
        group_sizes[group.annotated_property_type.value] = group.number_of_annotations
    cells = [cell for region in run.analysis.regions for cell in region.detections.cells]
    assert sum(group_sizes.values()) == run.cells == len(cells)  # every cell annotated, those cut by an edge too
    assert report["total"] == run.differential.total == sum(not cell.border for cell in cells)  # those not counted
    sparse = next(r for r in rows.values() if r.dimension_organization_type == "TILED_SPARSE")
    assert (
        ann.FrameOfReferenceUID
        == store.get_dataset(sparse.sop_instance_uid, stop_before_pixels=True).FrameOfReferenceUID
    )


def test_rerun_makes_a_new_series_and_failed_run_stores_nothing(slide, tiny_models, monkeypatch) -> None:
    store, study = slide
    models = AnalysisModels.load(tiny_models["seg"], tiny_models["cls"], tiny_models["seg"] / "missing")
    first = run_analysis(store, study, models, uid_root=UID_ROOT)
    second = run_analysis(store, study, models, uid_root=UID_ROOT)
    series = {store.instance(uid).series_instance_uid for uid in first.stored}
    assert series.isdisjoint({store.instance(uid).series_instance_uid for uid in second.stored})
    assert all(store.instance(uid) for uid in first.stored)  # the first run is still there, untouched

    count = len(store.instances(study))
    calls = {"n": 0}
    original = store.store_dataset

    def failing(ds, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # the disk fills up after the SEG was stored
            from dicom_store import OutOfResources

            raise OutOfResources("disk full")
        return original(ds, **kwargs)

    monkeypatch.setattr(store, "store_dataset", failing)
    with pytest.raises(Exception, match="disk full"):
        run_analysis(store, study, models, uid_root=UID_ROOT)
    assert len(store.instances(study)) == count


def test_cli_analyze_unknown_study_is_a_clear_error(tmp_path: Path, tiny_models) -> None:
    out = subprocess.run(
        [MARROWLINK, "analyze", "--study", "1.2.3.4", "--data", str(tmp_path / "d"),
         "--seg-model", str(tiny_models["seg"]), "--cls-model", str(tiny_models["cls"])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert "holds no VL Whole Slide Microscopy images" in out.stderr


def test_large_islands_are_analysed_in_windows_that_own_each_point_once() -> None:
    """An island of adjacent FOVs spanning 12,288 x 8,192 px, half of it not captured: windows of at most
    4,096 px a side plus margins; every captured point belongs to exactly one window; uncaptured cores are
    skipped."""
    import numpy as np

    from dicom_store.slides import Region
    from integration.analysis import WINDOW_MARGIN, WINDOW_SIDE, analysis_windows

    size = 256
    rng = np.random.default_rng(5)
    tiles = frozenset((r, c) for r in range(32) for c in range(48) if (c < 24 or r < 8) and rng.random() < 0.9)
    island = Region(column=0, row=0, width=48 * size, height=32 * size, tiles=tiles, tile_size=size)
    windows = analysis_windows([island])
    assert all(w.region.width <= WINDOW_SIDE + 2 * WINDOW_MARGIN for w in windows)
    assert all(w.region.height <= WINDOW_SIDE + 2 * WINDOW_MARGIN for w in windows)
    # the empty quarter is not read: no window reaches deep into it
    deep = (44 * size, 28 * size)
    assert not any(
        w.region.column <= deep[0] < w.region.column + w.region.width
        and w.region.row <= deep[1] < w.region.row + w.region.height
        for w in windows
    )
    for r, c in sorted(tiles)[::7]:
        for dx, dy in ((1, 1), (size - 2, size - 2)):
            x, y = c * size + dx, r * size + dy
            owners = [
                w for w in windows if w.owns(x - (w.region.column - island.column), y - (w.region.row - island.row))
            ]
            assert len(owners) == 1, (r, c, len(owners))
    small = Region(column=0, row=0, width=2048, height=1536, tiles=frozenset({(0, 0)}), tile_size=size)
    assert [w.region for w in analysis_windows([small])] == [small]
