"""The Metafer export folder: the virtual Metafer writes it, one reader validates real and simulated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from acquisition import MetaferExportError, plan_scan, read_metafer_export, simulate_slide, write_metafer_export


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    slide = simulate_slide(5, "myeloma", scan_area_um=(900.0, 600.0))
    overview = slide.render_overview()
    folder = tmp_path_factory.mktemp("export") / "scan"
    write_metafer_export(slide, folder, plan_scan(overview, n=2), overview=overview)
    return folder


def _damaged(export: Path, tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_round_trip(export: Path) -> None:
    m = read_metafer_export(export)
    assert m.barcode == "VM00000005"
    assert m.equipment.scanner == "Metafer 4 (virtual)" and m.equipment.microscope == "Zeiss Axio Imager.Z2"
    assert m.objectives["fov"].magnification == 40 and m.objectives["overview"].magnification == 10
    assert m.pixel_size_um["fov"] == pytest.approx(0.08625) and m.pixel_size_um["overview"] == pytest.approx(1.38)
    assert m.overview is not None and m.overview.x_um == 0 and m.overview.y_um == 0
    assert len(m.fovs) == 2
    truth = [json.loads((export / "ground_truth" / f"fov_{k:04d}.json").read_text()) for k in (1, 2)]
    for fov, gt in zip(m.fovs, truth, strict=True):
        assert (fov.width, fov.height) == (2048, 1496)
        assert (fov.x_um, fov.y_um) == pytest.approx(tuple(gt["position_um"]))
        assert fov.focus_um is not None and fov.file.suffix == ".jpg"
        mask = cv2.imread(str(export / "ground_truth" / f"{fov.file.stem}_instances.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint16 and int(mask.max()) == len(gt["cells"])
    assert m.ground_truth == export / "ground_truth"
    assert m.acquired and m.acquired.endswith("Z")
    # The path to manifest.json works too.
    assert read_metafer_export(export / "manifest.json").barcode == m.barcode


def test_export_is_deterministic(export: Path, tmp_path: Path) -> None:
    slide = simulate_slide(5, "myeloma", scan_area_um=(900.0, 600.0))
    overview = slide.render_overview()
    again = tmp_path / "again"
    write_metafer_export(slide, again, plan_scan(overview, n=2), overview=overview)
    for name in ("manifest.json", "overview.jpg", "fov/fov_0001.jpg", "ground_truth/fov_0002_instances.png"):
        assert (again / name).read_bytes() == (export / name).read_bytes(), name


def test_centre_anchor(export: Path, tmp_path: Path) -> None:
    def centre(m, folder):  # type: ignore[no-untyped-def]
        m["position_anchor"] = "centre"
        for im in m["images"]:
            px = m["pixel_size_um"][im["kind"]]
            im["stage_x_um"] += im["width"] * px / 2
            im["stage_y_um"] += im["height"] * px / 2

    a, b = read_metafer_export(export), read_metafer_export(_damaged(export, tmp_path, centre))
    for x, y in zip(a.images, b.images, strict=True):
        assert (x.x_um, x.y_um) == pytest.approx((y.x_um, y.y_um), abs=1e-6)


CASES = [
    ("missing barcode", lambda m, f: m["slide"].pop("barcode"), "slide.barcode", "manifest.json"),
    ("missing images", lambda m, f: m.pop("images"), "images", "manifest.json"),
    ("unknown top field", lambda m, f: m.update(colour="blue"), "colour", "manifest.json"),
    ("unknown image field", lambda m, f: m["images"][1].update(zoom=2), "images[1].zoom", "manifest.json"),
    ("unknown kind", lambda m, f: m["images"][1].update(kind="label"), "images[1].kind", "manifest.json"),
    ("missing stage x", lambda m, f: m["images"][2].pop("stage_x_um"), "images[2].stage_x_um", "manifest.json"),
    ("missing file", lambda m, f: (f / "fov" / "fov_0002.jpg").unlink(), "images[2].file", "fov_0002.jpg"),
    ("pixel size vs objective", lambda m, f: m["pixel_size_um"].update(fov=0.1), "pixel_size_um.fov", "manifest.json"),
    ("image pixel size", lambda m, f: m["images"][1].update(pixel_size_um=0.2), "images[1].pixel_size_um",
     "fov_0001.jpg"),
    ("declared width", lambda m, f: m["images"][0].update(width=10), "images[0].width", "overview.jpg"),
    ("not a number", lambda m, f: m["images"][1].update(stage_y_um="12 mm"), "images[1].stage_y_um", "manifest.json"),
    ("wrong format", lambda m, f: m.update(format="other"), "format", "manifest.json"),
    ("missing objective", lambda m, f: m["objectives"].pop("fov"), "objectives.fov", "manifest.json"),
    ("path escape", lambda m, f: m["images"][1].update(file="../../etc/passwd"), "images[1].file", "passwd"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "change", "field", "file"), CASES, ids=[c[0] for c in CASES])
def test_each_error_names_field_and_file(export: Path, tmp_path: Path, name, change, field, file) -> None:  # type: ignore[no-untyped-def]
    bad = _damaged(export, tmp_path, change)
    with pytest.raises(MetaferExportError) as info:
        read_metafer_export(bad)
    assert info.value.field == field, str(info.value)
    assert info.value.file.endswith(file), str(info.value)
    assert field in str(info.value) and file in str(info.value)


def test_corrupt_image_and_missing_manifest(export: Path, tmp_path: Path) -> None:
    bad = _damaged(export, tmp_path, lambda m, f: (f / "fov" / "fov_0001.jpg").write_bytes(b"not a jpeg"))
    with pytest.raises(MetaferExportError, match=r"images\[1\]\.file"):
        read_metafer_export(bad)
    with pytest.raises(MetaferExportError, match=r"no manifest\.json"):
        read_metafer_export(tmp_path)


def test_simulate_scan_cli(tmp_path: Path) -> None:
    from integration.cli import app

    out = tmp_path / "scan"
    args = ["simulate-scan", "--out", str(out), "--seed", "9", "--profile", "apl", "--fovs", "2",
            "--scan-area", "900x600"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    m = read_metafer_export(out)
    assert len(m.fovs) == 2 and m.vendor["simulator"]["profile"] == "apl"
    cells = (out / "ground_truth" / "cells.csv").read_text().splitlines()
    assert cells[0] == "file,instance_id,class,x0,y0,x1,y1,area_px" and len(cells) > 10
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "not empty" in again.output


def test_simulate_scan_can_plan_with_an_aoi_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--aoi-model` plugs the AOI network in as the scorer; a stub that likes dark tiles plans dense ones."""
    import ai.inference
    from integration.cli import app

    class Stub:
        def score_tiles(self, tiles):  # type: ignore[no-untyped-def]
            return np.array([[255.0 - float(t.mean())] for t in tiles])

        def good_score(self, probabilities):  # type: ignore[no-untyped-def]
            return probabilities[:, 0]

    monkeypatch.setattr(ai.inference.AoiModel, "load", classmethod(lambda cls, folder=None: Stub()))
    out = tmp_path / "scan"
    args = ["simulate-scan", "--out", str(out), "--seed", "9", "--fovs", "1", "--scan-area", "900x600",
            "--aoi-model", str(tmp_path), "--no-ground-truth"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    m = read_metafer_export(out)
    assert m.ground_truth is None and len(m.fovs) == 1
    overview = simulate_slide(9, scan_area_um=(900.0, 600.0)).render_overview()
    darkest = min(overview.grid_tiles(), key=lambda t: (-(255.0 - float(overview.tile_image(t).mean())), t.row, t.col))
    assert (m.fovs[0].x_um, m.fovs[0].y_um) == pytest.approx((darkest.x_um, darkest.y_um), abs=1e-3)


def _as_csv(export: Path, tmp_path: Path, edit=None) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the export whose manifest is manifest.csv (`edit(text)` may change the table)."""
    from acquisition.metafer.csv import convert_to_csv

    copy = tmp_path / "csv-export"
    shutil.copytree(export, copy)
    target = convert_to_csv(copy)
    if edit is not None:
        target.write_text(edit(target.read_text()))
    return copy


def test_csv_manifest_reads_as_the_json_one(export: Path, tmp_path: Path) -> None:
    """One table, one row per image, slide fields repeated on each row: the same scan as manifest.json."""
    from dataclasses import replace

    copy = _as_csv(export, tmp_path)
    assert not (copy / "manifest.json").exists()
    header = (copy / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["file", "kind", "stage_x_um", "stage_y_um"] and "slide.barcode" in header
    from_json, from_csv = read_metafer_export(export), read_metafer_export(copy)
    moved = lambda m, root: tuple(replace(im, file=im.file.relative_to(root)) for im in m.images)  # noqa: E731
    assert moved(from_csv, copy) == moved(from_json, export)
    for field in ("barcode", "equipment", "objectives", "pixel_size_um", "stage_origin_um", "acquired"):
        assert getattr(from_csv, field) == getattr(from_json, field)
    assert read_metafer_export(copy / "manifest.csv").barcode == from_json.barcode
    # With a BOM, as spreadsheets write it.
    (copy / "manifest.csv").write_text("\ufeff" + (copy / "manifest.csv").read_text(), encoding="utf-8")
    assert read_metafer_export(copy).barcode == from_json.barcode


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (lambda t: t.replace("slide.barcode", "slide.barcod"), "slide.barcod", "unknown field"),
        (lambda t: t.replace("VM00000005", "VM00000099", 1), "slide.barcode", "one slide, one value"),
        (lambda t: t.replace(",fov,", ",fob,", 1), "images[1].kind", "unknown image kind"),
        (lambda t: t.replace("0.08625", "abc"), "pixel_size_um.fov", "must be a number"),
        (lambda t: t.splitlines()[0] + "\n", "images", "no image rows"),
        (lambda t: t + "a,b\n", "(manifest)", "row 5 has 2 cells"),
    ],
)
def test_csv_manifest_errors_name_the_field(export: Path, tmp_path: Path, edit, field: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    copy = _as_csv(export, tmp_path, edit)
    with pytest.raises(MetaferExportError) as caught:
        read_metafer_export(copy)
    assert caught.value.field == field and reason in str(caught.value)
    assert caught.value.file.endswith("manifest.csv")


def test_two_manifests_are_refused(export: Path, tmp_path: Path) -> None:
    copy = _as_csv(export, tmp_path)
    shutil.copy(export / "manifest.json", copy / "manifest.json")
    with pytest.raises(MetaferExportError, match=r"both manifest\.json and manifest\.csv"):
        read_metafer_export(copy)
