"""`marrowlink import-scan`: a (virtual) Metafer export folder in, valid DICOM WSI out, all or nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from acquisition import plan_scan, read_metafer_export, simulate_slide, write_metafer_export
from dicom_store import Store
from dicom_store.slides import StoredSlide
from integration.database import open_index
from integration.scans import import_scan, study_uid_for
from tests.conftest import require_program

MARROWLINK = str(Path(sys.executable).parent / "marrowlink")
UID_ROOT = "1.2.826.0.1.3680043.8.498."


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small virtual scan: a 3x2-tile overview, 3 FOVs."""
    slide = simulate_slide(11, "apl", scan_area_um=(600.0, 300.0))
    overview = slide.render_overview()
    positions = plan_scan(overview, n=3)
    folder = tmp_path_factory.mktemp("export")
    write_metafer_export(slide, folder, positions, overview=overview)
    return folder


def test_import_stores_a_wsi_that_reads_back(export: Path, engine, tmp_path: Path) -> None:
    store = Store(engine, tmp_path / "blobs")
    result = import_scan(export, store, uid_root=UID_ROOT, accession_number="ACC-7", engine=engine)
    manifest = read_metafer_export(export)
    assert result.study_instance_uid == study_uid_for("ACC-7", UID_ROOT)
    assert result.container_identifier == manifest.barcode
    rows = store.instances(result.study_instance_uid)
    assert {r.container_identifier for r in rows} == {manifest.barcode}
    slide = StoredSlide.find(store, result.study_instance_uid)
    # The FOV positions read back from the plane positions match the manifest: each FOV's own pixels
    # are in the region that covers its position.
    sparse = slide.header()
    origin = manifest.overview
    fov_px = manifest.fovs[0].pixel_size_um
    regions = slide.regions()
    from acquisition.wsi.tiles import decode_image

    for fov in manifest.fovs:
        column = round((fov.x_um - origin.x_um) / fov_px)
        row = round((fov.y_um - origin.y_um) / fov_px)
        region = next(r for r in regions if r.column <= column < r.column + r.width and r.row <= row < r.row + r.height)
        pixels = slide.read_region(region)
        source = decode_image(fov.file.read_bytes())
        y, x = row - region.row, column - region.column
        window = pixels[y + 8 : y + 600, x + 8 : x + 800].astype(int)
        assert np.abs(window - source[8:600, 8:800].astype(int)).mean() < 4.0
    assert sparse.TotalPixelMatrixColumns >= max(r.column + r.width for r in regions)


def test_base_overview_level_copies_the_source_jpegs_whole_tiles(tmp_path: Path) -> None:
    """The overview is a 4:2:0 baseline JPEG at the origin of its level: its whole tiles are stored as
    cut from it (DCT domain, no re-encoding); only the edge tiles, which need padding, are encoded."""
    from acquisition.wsi.tiles import copy_tiles

    slide = simulate_slide(12, "normal", scan_area_um=(900.0, 600.0))  # 652x435 px: two whole tiles
    overview_image = slide.render_overview()
    export = tmp_path / "export"
    write_metafer_export(slide, export, plan_scan(overview_image, n=1), overview=overview_image)
    engine = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    store = Store(engine, tmp_path / "blobs")
    result = import_scan(export, store, uid_root=UID_ROOT, accession_number="ACC-COPY", engine=engine)
    overview = read_metafer_export(export).overview
    assert overview is not None
    base = next(
        r
        for r in store.instances(result.study_instance_uid)
        if (ds := store.get_dataset(r.sop_instance_uid, stop_before_pixels=True)).ImageType[0] == "ORIGINAL"
        and ds.DimensionOrganizationType == "TILED_FULL"
    )
    ds = store.get_dataset(base.sop_instance_uid, stop_before_pixels=True)
    copied = copy_tiles(overview.file.read_bytes(), overview.width, overview.height, int(ds.Columns))
    assert copied, "the test scan's overview should hold whole tiles"
    per_row = -(-int(ds.TotalPixelMatrixColumns) // int(ds.Columns))
    numbers = [row * per_row + column + 1 for row, column in copied]
    frames = store.get_frames(base.sop_instance_uid, numbers)
    assert [f.rstrip(b"\0") for f in frames] == [copied[key].rstrip(b"\0") for key in copied]
    engine.dispose()


def test_imported_instances_pass_dciodvfy(export: Path, tmp_path: Path) -> None:
    dciodvfy = require_program("dciodvfy")
    engine = open_index(f"sqlite:///{tmp_path / 'i.sqlite3'}")
    store = Store(engine, tmp_path / "blobs")
    result = import_scan(export, store, uid_root=UID_ROOT, accession_number="ACC-8")
    for uid in result.sop_instance_uids:
        row = store.instance(uid)
        out = subprocess.run([dciodvfy, str(store.path(uid))], capture_output=True, text=True)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        if row.dimension_organization_type == "TILED_SPARSE":
            # dciodvfy's full-grid frame count does not apply to TILED_SPARSE (see test_wsi_encode).
            errors = [e for e in errors if "NumberOfFrames does not match expected value for tiled" not in e]
        assert errors == [], errors


def _copy(export: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(export, target)
    return target


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing_field", "slide.barcode"),
        ("missing_file", "fov_0002"),
        ("bad_jpeg", "fov_0003.jpg"),
    ],
)
def test_cli_refuses_a_bad_export_and_stores_nothing(export: Path, tmp_path: Path, damage: str, message: str) -> None:
    folder = _copy(export, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    if damage == "missing_field":
        del manifest["slide"]["barcode"]
    elif damage == "missing_file":
        (folder / "fov" / "fov_0002.jpg").unlink()
    else:
        (folder / "fov" / "fov_0003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = tmp_path / "data"
    out = subprocess.run([MARROWLINK, "import-scan", str(folder), "--data", str(data)], capture_output=True, text=True)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "nothing stored" in out.stderr
    blobs = [p for p in (data / "blobs").rglob("*.dcm")] if (data / "blobs").exists() else []
    assert blobs == []


@pytest.mark.parametrize("manifest", ["json", "csv"])
def test_cli_imports(export: Path, tmp_path: Path, manifest: str) -> None:
    """`import-scan` of the export as written, and of the same scan described by manifest.csv."""
    from acquisition.metafer.csv import convert_to_csv

    folder = export
    if manifest == "csv":
        folder = tmp_path / "csv-export"
        shutil.copytree(export, folder)
        convert_to_csv(folder)
    out = subprocess.run(
        [MARROWLINK, "import-scan", str(folder), "--accession", "ACC-9", "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"stored slide {read_metafer_export(export).barcode}" in out.stdout
    assert study_uid_for("ACC-9", UID_ROOT) in out.stdout


def test_orthanc_accepts_imported_instances_over_c_store(export: Path, engine, tmp_path: Path) -> None:
    from dicom_store.dimse.scu import forward
    from tests.orthanc import orthanc_server

    store = Store(engine, tmp_path / "blobs")
    result = import_scan(export, store, uid_root=UID_ROOT, accession_number="ACC-10")
    with orthanc_server(tmp_path / "orthanc") as orthanc:
        sent = forward(store, result.sop_instance_uids, ("127.0.0.1", orthanc.dicom_port, orthanc.ae_title))
        assert sent.ok, sent.failed
        with orthanc.client() as client:
            stored = client.get("/instances").json()
            assert len(stored) == len(result.sop_instance_uids)
            tags = client.get(f"/instances/{stored[0]}/simplified-tags").json()
            assert tags["ContainerIdentifier"] == read_metafer_export(export).barcode
