"""The virtual Metafer: determinism, geometry, ground truth, profiles, planning, data sets, difficulty."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from acquisition import (
    CELL_CLASSES,
    CLASS_CODES,
    CRITICAL_CODES,
    PROFILES,
    QUALITY_CLASSES,
    plan_scan,
    simulate_slide,
)
from acquisition.simulator import optics

SMALL = (1400.0, 900.0)  # 7 x 6 grid tiles: a fast slide that still has every smear zone


@pytest.fixture(scope="module")
def slide():  # type: ignore[no-untyped-def]
    return simulate_slide(7, "normal", scan_area_um=SMALL)


@pytest.fixture(scope="module")
def overview(slide):  # type: ignore[no-untyped-def]
    return slide.render_overview()


@pytest.fixture(scope="module")
def fov(slide, overview):  # type: ignore[no-untyped-def]
    best = plan_scan(overview, n=1)[0]
    return slide.render_fov(best.x_um, best.y_um)


def test_catalogue_is_the_documented_table() -> None:
    assert len(CELL_CLASSES) == 23 and len(set(CLASS_CODES)) == 23
    assert CLASS_CODES[:7] == CRITICAL_CODES == ("BLA", "APL", "HAC", "LYM", "TUM", "ABE", "APC")
    assert CLASS_CODES[-1] == "NIF"
    assert QUALITY_CLASSES == ("optimal", "acceptable", "too_dense", "too_sparse", "artefact", "background")
    # Every class appears in some disease profile.
    for code in CLASS_CODES:
        assert any(PROFILES[p][code] > 0 for p in PROFILES if p != "balanced"), code


def test_catalogue_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, acquisition; acquisition.CLASS_CODES; print('numpy' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_same_seed_same_bytes_different_seed_differs(slide, fov) -> None:  # type: ignore[no-untyped-def]
    again = simulate_slide(7, "normal", scan_area_um=SMALL)
    other = again.render_fov(*fov.position_um)
    assert other.image.tobytes() == fov.image.tobytes()
    assert np.array_equal(other.instance_mask, fov.instance_mask)
    assert other.cells == fov.cells
    different = simulate_slide(8, "normal", scan_area_um=SMALL).render_fov(*fov.position_um)
    assert different.image.tobytes() != fov.image.tobytes()


def test_overlapping_fovs_see_the_same_slide(slide, fov) -> None:  # type: ignore[no-untyped-def]
    """Lazily generated blocks: a FOV shifted by 400 px shows the same pixels where they overlap."""
    x, y = fov.position_um
    shift = 400
    moved = slide.render_fov(x + shift * optics.FOV_PIXEL_UM, y)
    a = fov.image[:, shift:].astype(int)
    b = moved.image[:, :-shift].astype(int)
    # Noise, vignetting and focus differ per capture; the content must match.
    assert np.abs(cv2.blur(a, (15, 15)) - cv2.blur(b, (15, 15))).mean() < 6.0
    both = (fov.instance_mask[:, shift + 300 : -300] > 0) == (moved.instance_mask[:, 300 : -shift - 300] > 0)
    assert both.mean() > 0.97


def test_fov_shape_pixel_size_and_masks(fov) -> None:  # type: ignore[no-untyped-def]
    assert fov.image.shape == (1496, 2048, 3) and fov.image.dtype == np.uint8
    assert fov.pixel_size_um == pytest.approx(0.08625)
    assert fov.instance_mask.shape == fov.distractor_mask.shape == (1496, 2048)
    ids = np.unique(fov.instance_mask)
    ids = ids[ids > 0]
    assert list(ids) == [c.id for c in fov.cells] == list(range(1, len(fov.cells) + 1))
    areas = np.bincount(fov.instance_mask.ravel())
    for c in fov.cells:
        assert c.code in CLASS_CODES
        assert areas[c.id] == c.area_px <= c.full_area_px
        x0, y0, x1, y1 = c.bbox
        sub = fov.instance_mask[y0:y1, x0:x1] == c.id
        assert sub.sum() == c.area_px and sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
    # Distractors never share a pixel with a nucleated cell, and are recorded by kind.
    assert not np.any((fov.distractor_mask > 0) & (fov.instance_mask > 0))
    kinds = Counter(d.kind for d in fov.distractors)
    assert kinds["red_cell"] > 50 and kinds["platelet"] > 0
    assert len(np.unique(fov.distractor_mask)) - 1 == len(fov.distractors)
    # Each cell's whole outline holds its visible part (and what lies under cells painted over it).
    assert len(fov.amodal_masks) == len(fov.cells)
    for c, whole in zip(fov.cells, fov.amodal_masks, strict=True):
        canvas = np.zeros(fov.instance_mask.shape, bool)
        h, w = whole.mask.shape
        canvas[whole.y0 : whole.y0 + h, whole.x0 : whole.x0 + w] = whole.mask
        assert not np.any((fov.instance_mask == c.id) & ~canvas) and c.area_px <= canvas.sum() <= c.full_area_px
    # Shared pixels lie inside two whole outlines: overlaps of a visible cell with what it covers.
    shared = fov.shared_pixels()
    assert shared.shape == fov.instance_mask.shape and shared.any()
    assert np.all(fov.instance_mask[shared] > 0)
    # Cells are 100-250 px across at 40x (most of them).
    diam = np.median([np.sqrt(c.full_area_px / np.pi) * 2 for c in fov.cells])
    assert 80 < diam < 250


def test_touching_cells_exist(slide, overview) -> None:  # type: ignore[no-untyped-def]
    """Segmentation must split touching cells: some instances border another instance."""
    touching = 0
    for pos in plan_scan(overview, n=2):
        mask = slide.render_fov(pos.x_um, pos.y_um).instance_mask
        right = (mask[:, 1:] != mask[:, :-1]) & (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
        down = (mask[1:] != mask[:-1]) & (mask[1:] > 0) & (mask[:-1] > 0)
        touching += int(right.sum() + down.sum())
    assert touching > 100


def _covered_share(fov, hidden: float) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Cells (at least 15 µm² visible) of which more than `hidden` of their outline lies under other cells."""
    seen = np.array([c.area_px for c in fov.cells], float)
    whole = np.array([m.mask.sum() for m in fov.amodal_masks], float)
    keep = seen >= 15.0 / fov.pixel_size_um**2
    return int(((1 - seen / whole) > hidden)[keep].sum()), int(keep.sum())


def test_cells_spread_side_by_side_in_a_monolayer_and_pile_up_where_thick(slide, overview) -> None:  # type: ignore[no-untyped-def]
    """Where the AOI sends the 40x scan, nucleated cells touch but seldom lie on one another (stain
    densities add, so which one is on top would be invisible); in thick areas they do pile up."""
    covered = total = 0
    for pos in plan_scan(overview, n=3):
        c, t = _covered_share(slide.render_fov(pos.x_um, pos.y_um), 0.3)
        covered, total = covered + c, total + t
    assert total > 80 and covered / total < 0.15  # 11 % here; independent positions gave 21 %
    ys, xs = np.mgrid[0 : SMALL[1] - 130 : 20.0, 0 : SMALL[0] - 177 : 20.0]
    thick = slide.geometry.coverage(xs + 88, ys + 65)
    k = int(np.argmax(thick))
    assert thick.flat[k] > 1.6
    c, t = _covered_share(slide.render_fov(xs.flat[k], ys.flat[k]), 0.3)
    assert c / t > 0.15


def test_overview_and_grid(slide, overview) -> None:  # type: ignore[no-untyped-def]
    assert overview.pixel_size_um == pytest.approx(1.38)
    assert overview.image.shape == (slide.rows * 94, slide.cols * 128, 3)
    assert overview.quality.shape == (slide.rows, slide.cols)
    tiles = overview.grid_tiles()
    assert [t.label for t in tiles] == [t.label for t in slide.grid_tiles()]
    assert set(overview.quality.ravel()) <= set(QUALITY_CLASSES)
    # A tile is one FOV footprint rounded up to whole overview pixels.
    assert tiles[0].width_um >= optics.FOV_WIDTH_UM and tiles[0].height_um >= optics.FOV_HEIGHT_UM
    assert overview.tile_image(tiles[-1]).shape == (94, 128, 3)


def test_smear_has_every_quality_zone() -> None:
    labels = Counter(t.label for t in simulate_slide(3).grid_tiles())  # default scan area, no rendering
    assert set(labels) == set(QUALITY_CLASSES)
    assert labels["optimal"] + labels["acceptable"] >= 100


def test_optimal_tiles_look_better_than_dense_and_glass(slide, overview) -> None:  # type: ignore[no-untyped-def]
    mean = {lab: [] for lab in QUALITY_CLASSES}
    for t in overview.grid_tiles():
        mean[t.label].append(overview.tile_image(t).mean())
    if mean["too_dense"] and mean["optimal"]:
        assert np.mean(mean["too_dense"]) < np.mean(mean["optimal"])
    if mean["background"] and mean["optimal"]:
        assert np.mean(mean["background"]) > np.mean(mean["optimal"])


def test_plan_prefers_good_tiles_and_never_overlaps(overview) -> None:  # type: ignore[no-untyped-def]
    positions = plan_scan(overview, n=12)
    assert len(positions) == 12 and [p.rank for p in positions] == list(range(12))
    good = sum(p.label in ("optimal", "acceptable") for p in positions)
    available = sum(t.label in ("optimal", "acceptable") for t in overview.grid_tiles())
    assert good == min(12, available)
    for i, a in enumerate(positions):
        for b in positions[i + 1 :]:
            apart_x = abs(a.x_um - b.x_um) >= optics.FOV_WIDTH_UM - 1e-6  # abutting is fine
            apart_y = abs(a.y_um - b.y_um) >= optics.FOV_HEIGHT_UM - 1e-6
            assert apart_x or apart_y
    # A pluggable scorer: prefer the brightest tiles (glass) and it plans glass.
    bright = plan_scan(overview, lambda images: [float(im.mean()) for im in images], n=3)
    assert all(p.label in ("background", "too_sparse", "artefact") for p in bright)


def _counts(profile: str, seed: int = 21) -> Counter:
    s = simulate_slide(seed, profile, scan_area_um=SMALL)
    c: Counter = Counter()
    for by in range(0, 18):
        for bx in range(0, 28):
            c.update(cell.code for cell in s.objects.cell_block(bx, by))
    return c


def test_profiles_change_class_frequencies() -> None:
    normal, apl, myeloma = _counts("normal"), _counts("apl"), _counts("myeloma")
    total = sum(normal.values())
    assert total > 200
    assert sum(normal[c] for c in CRITICAL_CODES) / total < 0.05
    assert apl["APL"] / sum(apl.values()) > 0.3
    assert myeloma["APC"] / sum(myeloma.values()) > 0.15 and normal["APC"] == 0
    with pytest.raises(ValueError, match="unknown profile"):
        simulate_slide(1, "leukaemia")


def test_class_weights_override_and_scan_area_in_mm() -> None:
    only = simulate_slide(21, "normal", scan_area_mm=(1.4, 0.9), class_weights_override={"HAC": 1.0})
    assert only.scan_area_um == simulate_slide(21, scan_area_um=SMALL).scan_area_um
    codes = {cell.code for by in range(18) for bx in range(28) for cell in only.objects.cell_block(bx, by)}
    assert codes == {"HAC"}
    with pytest.raises(ValueError, match="unknown class codes"):
        simulate_slide(1, class_weights_override={"XYZ": 1.0})


def test_every_class_can_be_painted() -> None:
    """Each recipe draws a cell with a nucleus-coloured mask of sensible size."""
    from acquisition.simulator.cells import paint_cell
    from acquisition.simulator.morphology import RECIPES
    from acquisition.simulator.stain import random_stain

    stain = random_stain(np.random.default_rng(0))
    for code in CLASS_CODES:
        rng = np.random.default_rng(1)
        sprite = paint_cell(RECIPES[code](rng), rng, stain, optics.FOV_PIXEL_UM, 300.0, 300.0)
        area_um2 = sprite.mask.sum() * optics.FOV_PIXEL_UM**2
        assert 15 < area_um2 < 4000, (code, area_um2)
        assert sprite.od[sprite.mask].mean() > 0.05, code


def naive_threshold_f1(fov) -> float:  # type: ignore[no-untyped-def]
    """A plain colour-threshold nucleus detector (Otsu on 'blueness' minus red, connected components),
    matched to true cells at IoU >= 0.5 of the nucleated-cell masks it overlaps most."""
    rgb = fov.image.astype(np.float32)
    score = rgb[:, :, 0] * 0.0 + (rgb[:, :, 2] - rgb[:, :, 1])  # nuclei: blue >> green
    u8 = cv2.normalize(score, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, binary = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels = cv2.connectedComponents(binary)
    truth = fov.instance_mask
    found, predicted = set(), 0
    for k in range(1, n):
        comp = labels == k
        size = int(comp.sum())
        if size < 300:
            continue
        predicted += 1
        ids, counts = np.unique(truth[comp], return_counts=True)
        for cid, inter in zip(ids, counts, strict=True):
            if cid == 0:
                continue
            union = size + int((truth == cid).sum()) - int(inter)
            if inter / union >= 0.5:
                found.add(int(cid))
    true_n = len(fov.cells)
    tp = len(found)
    precision = tp / max(predicted, 1)
    recall = tp / max(true_n, 1)
    return 2 * precision * recall / max(precision + recall, 1e-9)


def test_a_colour_threshold_detector_is_clearly_imperfect(slide, overview, fov) -> None:  # type: ignore[no-untyped-def]
    """The simulator must be hard enough that thresholding does clearly worse than a network."""
    scores = [naive_threshold_f1(fov)]
    for pos in plan_scan(overview, n=3)[1:]:
        scores.append(naive_threshold_f1(slide.render_fov(pos.x_um, pos.y_um)))
    assert 0.0 <= np.mean(scores) < 0.75, scores


def test_make_dataset_cli_writes_the_documented_formats(tmp_path: Path) -> None:
    from integration.cli import app

    runner = CliRunner()
    area = ["--scan-area", "900x600"]
    for kind in ("aoi", "seg", "cls"):
        out = tmp_path / kind
        extra = ["--fovs-per-seed", "1"] if kind != "aoi" else []
        result = runner.invoke(app, ["make-dataset", kind, "--out", str(out), "--seeds", "4:6", *area, *extra])
        assert result.exit_code == 0, result.output
        meta = json.loads((out / "dataset.json").read_text())
        assert meta["kind"] == kind and meta["seeds"] == [4, 5] and meta["generator_version"]
        assert {"profiles", "pixel_size_um", "counts"} <= set(meta)
    with (tmp_path / "aoi" / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label", "seed", "row", "col"]
    assert {r["label"] for r in rows} <= set(QUALITY_CLASSES)
    tile = cv2.imread(str(tmp_path / "aoi" / rows[0]["file"]))
    assert tile.shape == (94, 128, 3)
    assert rows[0]["file"] == f"tiles/{rows[0]['seed']}_{rows[0]['row']}_{rows[0]['col']}.png"

    seg = tmp_path / "seg"
    names = sorted(p.name for p in (seg / "images").glob("*.png"))
    assert names == ["4_0.png", "5_0.png"]
    mask = cv2.imread(str(seg / "masks" / names[0]), cv2.IMREAD_UNCHANGED)
    dis = cv2.imread(str(seg / "distractors" / names[0]), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint16 and mask.shape == (1496, 2048) and dis.dtype == np.uint16
    shared = cv2.imread(str(seg / "shared" / names[0]), cv2.IMREAD_UNCHANGED)
    assert shared.dtype == np.uint16 and shared.shape == mask.shape and shared.max() <= 1
    assert np.all(mask[shared > 0] > 0)  # only where cells are
    assert cv2.imread(str(seg / "images" / names[0])).shape == (1496, 2048, 3)
    with (seg / "cells.csv").open() as f:
        cells = list(csv.DictReader(f))
    assert list(cells[0]) == ["file", "instance_id", "class"]
    ids = {int(r["instance_id"]) for r in cells if r["file"] == names[0]}
    assert ids == set(np.unique(mask)) - {0}
    with (seg / "fovs.csv").open() as f:
        where = list(csv.DictReader(f))
    assert [r["file"] for r in where] == names
    assert {r["source"] for r in where} == {"scan_list"}  # one FOV per slide: the best position
    assert {r["quality"] for r in where} <= set(QUALITY_CLASSES)

    cls = tmp_path / "cls"
    meta = json.loads((cls / "dataset.json").read_text())
    assert meta["crop_pixel_size_um"] == pytest.approx(0.1725)
    with (cls / "labels.csv").open() as f:
        crops = list(csv.DictReader(f))
    assert list(crops[0]) == ["file", "label", "seed"] and len(crops) > 10
    for r in crops[:5]:
        assert r["file"].startswith(f"crops/{r['label']}/{r['seed']}_")
        assert cv2.imread(str(cls / r["file"])).shape == (128, 128, 3)
    # Balanced: no class dominates the crops.
    per = Counter(r["label"] for r in crops)
    assert max(per.values()) < 0.3 * len(crops)
    # A second run into a used folder is refused (stale files would join the set).
    again = runner.invoke(app, ["make-dataset", "cls", "--out", str(cls), "--seeds", "4:5", *area])
    assert again.exit_code == 2 and "not empty" in again.output
