"""A small synthetic scan and hand-made AI results, shared by the writer tests (no tests here).

Three FOVs on a small overview; cells drawn by hand so that some cross 256-px tile borders and some
touch the region edges, every cell class of the differential appears, and the unidentified and
smudge bins are present.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from acquisition.wsi import FovCapture, Patient, PixelGrid, SlideContext, encode_slide
from ai.catalogue import UNIDENTIFIED
from ai.dicom import (
    AlgorithmInfo,
    AnalysisRegion,
    AoiTile,
    SeriesSlot,
    VerifyingObserver,
    write_aoi_annotations,
    write_cell_annotations,
    write_cell_segmentation,
    write_differential_report,
)
from ai.results import Cell, CellDetections, Differential

UID_ROOT = "1.2.826.0.1.3680043.8.498."
FOV_PX = 0.08625
OVERVIEW_PX = 0.345
FOV_W, FOV_H = 2048, 1496
ORIGIN_UM = (20000.0, 8000.0)
FOV_STAGE_UM = ((20040.0, 8040.0), (20200.0, 8060.0), (20100.0, 8160.0))  # the last overlaps both
CLASS_CYCLE = ("NGS", "BLA", "EBO", "LYT", "MYB", "PEB", "KSC", UNIDENTIFIED, "EOS", "APL", "NIF", "BAS")

SEG_ALGORITHM = AlgorithmInfo("marrowlink-unet16", "1.2.0", "a" * 64, {"threshold": 0.5, "scale": 0.5})
CLS_ALGORITHM = AlgorithmInfo("marrowlink-xception", "2.0.1", "b" * 64, {"confidence_threshold": 0.6})
AOI_ALGORITHM = AlgorithmInfo("marrowlink-aoi", "1.0.0", "c" * 64, {"tile": 256})


def _ring(cx: float, cy: float, rx: float, ry: float, n: int = 18) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1).astype(np.float32)


def _cells(region_index: int, column: int, row: int) -> list[Cell]:
    """Cells of one FOV: on a grid, plus cells across the next tile borders and at the FOV edges."""
    centres = [(150.0 + 330 * i, 160.0 + 300 * j) for i in range(6) for j in range(5)][: 12 + 5 * region_index]
    # Straddle the level's tile grid: region-local positions of total-matrix multiples of 256.
    for k in (1, 3):
        centres.append((256 * ((column // 256) + k) - column, 256 * ((row // 256) + 2) - row))
    centres += [(60.0, 700.0), (FOV_W - 61.0, 300.0), (1000.0, FOV_H - 61.0)]  # at the edges
    cells = []
    for index, (cx, cy) in enumerate(centres):
        rx, ry = 55.0 + (index % 3) * 4, 48.0
        polygon = _ring(cx, cy, rx, ry)
        polygon = np.clip(polygon, 0, [FOV_W - 1, FOV_H - 1])
        code = CLASS_CYCLE[(index + region_index) % len(CLASS_CYCLE)]
        x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
        x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 1
        cells.append(
            Cell(
                polygon=polygon,
                bbox=(int(x0), int(y0), int(x1), int(y1)),
                area_px=float(np.pi * rx * ry),
                cell_class=None if code == UNIDENTIFIED else code,
                probability=0.55 if code == UNIDENTIFIED else 0.9 - 0.01 * index,
            )
        )
    return cells


@dataclass(frozen=True)
class Scan:
    datasets: list[Dataset]
    regions: list[AnalysisRegion]
    tiles: list[AoiTile]
    differential: Differential

    @property
    def sparse(self) -> Dataset:
        return self.datasets[0]

    @property
    def overview(self) -> Dataset:
        return self.datasets[1]


@cache
def scan() -> Scan:
    rng = np.random.default_rng(3)
    overview = rng.integers(150, 240, size=(900, 1200, 3), dtype=np.uint8)
    fovs = []
    for x, y in FOV_STAGE_UM:
        pixels = rng.integers(120, 250, size=(FOV_H, FOV_W, 3), dtype=np.uint8)
        fovs.append(FovCapture(x, y, FOV_W, FOV_H, lambda p=pixels: p))
    context = SlideContext(
        container_identifier="BM-WRITERS-1",
        uid_root=UID_ROOT,
        patient=Patient("DOE^JANE", "P1", "19700101", "F"),
        accession_number="ACC-W1",
    )
    datasets = encode_slide(
        overview=overview,
        overview_origin_um=ORIGIN_UM,
        overview_pixel_size_um=OVERVIEW_PX,
        fovs=fovs,
        fov_pixel_size_um=FOV_PX,
        context=context,
    )
    grid = PixelGrid(ORIGIN_UM[0], ORIGIN_UM[1], FOV_PX, datasets[0].TotalPixelMatrixColumns, 1)
    regions = []
    for index, (x, y) in enumerate(FOV_STAGE_UM):
        column, row = (round(v) for v in grid.stage_to_pixel(x, y))
        detections = CellDetections(_cells(index, column, row), (FOV_H, FOV_W), FOV_PX)
        regions.append(AnalysisRegion(column, row, FOV_W, FOV_H, detections))
    classes = ("optimal", "acceptable", "too_dense", "too_sparse", "artefact", "background")
    tiles = [
        AoiTile(c * 128, r * 128, 128, 128, classes[(c + 2 * r) % len(classes)], round(0.1 + 0.05 * ((c * r) % 17), 3))
        for r in range(900 // 128)
        for c in range(1200 // 128)
    ]
    differential = Differential.from_detections(region.detections for region in regions)
    return Scan(datasets, regions, tiles, differential)


def dciodvfy_errors(ds: Dataset, path: Path) -> tuple[list[str], str]:
    """Write the object and run dciodvfy; return its "Error" lines and the whole output."""
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run(["/usr/bin/dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if line.startswith("Error")], output


@dataclass(frozen=True)
class Results:
    seg: Dataset
    ann: Dataset
    aoi: Dataset
    preliminary: Dataset
    final: Dataset
    corrected: Dataset


SIGNER = VerifyingObserver("Pathologist^Paula", "Marrow Lab", "ppath")


@cache
def results() -> Results:
    """All objects of one analysis run (a series per modality), then the sign-off and a correction."""
    s = scan()
    seg = write_cell_segmentation(s.sparse, s.regions, SEG_ALGORITHM, series=SeriesSlot(UID_ROOT, 900))
    # Both annotation objects of the run share one ANN series; a series never mixes modalities.
    ann_series = generate_uid(UID_ROOT)
    ann = write_cell_annotations(s.sparse, s.regions, CLS_ALGORITHM, series=SeriesSlot(UID_ROOT, 901, ann_series))
    aoi = write_aoi_annotations(
        s.overview, s.tiles, AOI_ALGORITHM, series=SeriesSlot(UID_ROOT, 901, ann_series, instance_number=2)
    )
    report = {"source": s.sparse, "seg": seg, "ann": ann, "algorithm": CLS_ALGORITHM, "regions": s.regions}
    preliminary = write_differential_report(
        **report, differential=s.differential, evidence=[aoi, s.overview], series=SeriesSlot(UID_ROOT, 902)
    )
    signed = {"series": SeriesSlot(UID_ROOT, 903), "verifying_observer": SIGNER}
    final = write_differential_report(**report, differential=s.differential, status="final", **signed)
    corrected_classes = [
        "BLA" if c.cell_class == "MYB" else c.cell_class for r in s.regions for c in r.detections.cells
    ]
    corrected = write_differential_report(
        **report,
        differential=Differential.from_classes(corrected_classes),
        status="corrected",
        predecessor=final,
        **signed,
    )
    return Results(seg, ann, aoi, preliminary, final, corrected)
