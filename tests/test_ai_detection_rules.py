"""Detector rules that real images need (ai.cell_rules): one detection per cell, cells cut by the image edge
flagged and not counted, and the pixel sizes `detect` accepts.

The maps are made by hand, in the shape a star network or a label network gives them, and go through
`CellSegmenter.cells`, the step `segment` (so `detect` and the slide analysis) runs on every FOV.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ai.inference import SUPPORTED_PIXEL_SIZE_UM, CellSegmenter
from ai.models import ModelCard
from ai.results import CellDetections, Differential

WORKING_UM = 0.345  # the shipped segmenter's working pixel size
RAYS = 32
SHAPE = (100, 120)  # working pixels

Blob = tuple[int, int, float, float, float]  # centre y, x; ramp radius, peak; outline (ray) radius


def _segmenter(arch: str = "compact_star") -> CellSegmenter:
    """A segmenter whose maps are given by hand: the card, no network (`cells` never calls one)."""
    thresholds = {"centre": 0.1, "seed_distance_um": 1.0, "nms_iou": 0.7, "min_area_um2": 4.0, "foreground": 0.5}
    card = ModelCard("seg", arch, ["nucleated_cell"], 64, WORKING_UM, arch_params={"rays": RAYS}, thresholds=thresholds)
    return CellSegmenter(model=None, card=card)


def _star_maps(blobs: list[Blob], shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A star network's maps: centre channel = the larger of each blob's ramp peak·(1 - d/r)², as its training
    target (cells lying on others keep their own peak); each blob's rays, read at its peak, all `outline` long."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    maps = np.zeros((*shape, 1 + RAYS), np.float32)
    for y, x, radius, peak, _ in blobs:
        d = np.hypot(yy - y, xx - x)
        np.maximum(maps[..., 0], np.where(d < radius, peak * (1 - d / radius) ** 2, 0), out=maps[..., 0])
    for y, x, _, _, outline in blobs:
        maps[y, x, 1:] = np.log(outline)
    return maps


def _cells(blobs: list[Blob], shape: tuple[int, int] = SHAPE) -> CellDetections:
    return _segmenter().cells(_star_maps(blobs, shape), shape, WORKING_UM)


def _centres(det: CellDetections) -> list[tuple[int, int]]:
    """Each cell's centre (y, x), rounded, sorted: which blobs stayed."""
    return sorted((round(float(c.polygon[:, 1].mean())), round(float(c.polygon[:, 0].mean()))) for c in det.cells)


def test_a_big_outline_around_a_cell_and_its_neighbours_is_dropped_and_the_cell_stays():
    """A second peak on the cell whose rays reach over the red cells around it (issue #19: 20 such outlines on
    real photos): almost as strong as the cell's own, but outside the cell nothing in it is cell to the network."""
    cell = (40, 40, 10.0, 0.8, 10.0)
    sweep = (40, 46, 3.0, 0.7, 25.0)  # its peak on the cell, its outline 2.5 cells wide
    before = _segmenter().star_cells(_star_maps([cell, sweep]), SHAPE, WORKING_UM)
    assert len(before) == 2  # the network's own NMS keeps both (IoU 0.16)
    det = _cells([cell, sweep])
    assert len(det) == 1
    ((y, x),) = _centres(det)
    assert abs(y - 40) <= 1 and abs(x - 40) <= 1 and det.cells[0].area_px < 400  # the cell's own outline


def test_a_duplicate_inside_a_cells_outline_is_dropped():
    """A weak second peak inside a cell (a third of the cell's peak or less) is the same cell seen again."""
    cell = (50, 50, 12.0, 0.8, 12.0)
    duplicate = (50, 60, 3.0, 0.2, 4.0)  # inside the cell's outline, a quarter of its peak
    assert len(_segmenter().star_cells(_star_maps([cell, duplicate]), SHAPE, WORKING_UM)) == 2
    det = _cells([cell, duplicate])
    assert len(det) == 1 and det.cells[0].area_px > 300


def test_touching_and_overlapping_cells_all_stay():
    """Recall first: two touching cells, and a small cell lying on a large one (its centre inside the large
    one's outline: a conflict, but both peaks are strong and the large outline is cell all over)."""
    left, right = (40, 30, 10.0, 0.8, 10.0), (40, 50, 10.0, 0.5, 10.0)
    assert len(_cells([left, right])) == 2
    large, on_top = (50, 50, 25.0, 0.8, 25.0), (50, 64, 8.0, 0.7, 8.0)
    det = _cells([large, on_top])
    assert len(det) == 2 and not any(c.border for c in det.cells)


def test_a_cell_cut_by_the_image_edge_is_flagged_and_not_counted():
    det = _cells([(40, 4, 10.0, 0.8, 10.0), (50, 60, 10.0, 0.8, 10.0)])
    assert sorted(c.border for c in det.cells) == [False, True]
    for cell in det.cells:
        cell.cell_class = "BLA"
    edge = next(c for c in det.cells if c.border)
    assert edge.to_json()["border"] is True and edge.to_json()["class"] == "BLA"  # still reported and classified
    differential = Differential.from_detections([det])
    assert differential.total == 1 and differential.counts["BLA"] == 1
    assert Differential.from_classes(c.cell_class for c in det.cells).total == 2  # per-class counts: unchanged


def test_label_network_cells_at_the_edge_are_flagged_at_any_scale():
    """A label network's outline from a working-scale map ends half a working pixel from the image edge, which
    at 1/4 scale is 1.5 FOV pixels in; a cell three working pixels in is not flagged."""
    segmenter = _segmenter("compact")
    fg = np.zeros(SHAPE, np.float32)
    cv2.circle(fg, (0, 30), 8, 1.0, -1)  # cut by the left edge
    cv2.circle(fg, (60, 11), 8, 1.0, -1)  # three working pixels below the top edge
    maps = np.stack([fg, fg], axis=-1)
    fov = (SHAPE[0] * 4, SHAPE[1] * 4)
    det = segmenter.cells(maps, fov, WORKING_UM / 4)
    assert len(det) == 2
    by_x = sorted(det.cells, key=lambda c: c.bbox[0])
    assert [c.border for c in by_x] == [True, False]


def _smear(path: Path) -> Path:
    from ai.synthetic import blob_fov

    image, _, _ = blob_fov(np.random.default_rng(3), (96, 128))
    cv2.imwrite(str(path), image[..., ::-1])
    return path


@pytest.mark.parametrize("pixel_size", ["0.03", "0.3"])
def test_detect_refuses_pixel_sizes_outside_the_supported_range(tmp_path: Path, pixel_size: str):
    from integration.cli import app

    result = CliRunner().invoke(app, ["detect", str(_smear(tmp_path / "x.png")), "--pixel-size", pixel_size])
    low, high = SUPPORTED_PIXEL_SIZE_UM
    assert result.exit_code == 2
    assert f"{low:g}-{high:g} µm" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("pixel_size", SUPPORTED_PIXEL_SIZE_UM)
def test_detect_accepts_both_ends_of_the_range(tmp_path: Path, tiny_models, pixel_size: float):
    from integration.cli import app

    args = ["detect", str(_smear(tmp_path / "x.png")), "--pixel-size", str(pixel_size), "--json",
            "--seg-model", str(tiny_models["seg"]), "--cls-model", str(tiny_models["cls"])]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["images"][0]["cells"]
    assert all(isinstance(c["border"], bool) for c in cells)
