"""The virtual Metafer's scan: render a slide, hand images and manifest to the export writer, add ground truth.

Byte-for-byte deterministic: no clock, no random file names; the acquisition time is derived from
the seed. FOVs are JPEG (quality 90, as Metafer exports them), the overview a JPEG too, masks 16-bit
PNG. The ground truth folder is ignored by the reader's DICOM path and used by tests and data sets.
The export writer (`acquisition.metafer`) knows nothing of the simulator: this module builds the
same `ScanManifest` model the reader returns and lets the writer serialise it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from acquisition.metafer.format import Equipment, ManifestImage, Objective, ScanManifest
from acquisition.metafer.writer import start_export, write_image, write_manifest
from acquisition.simulator import optics
from acquisition.simulator.fov import Fov
from acquisition.simulator.overview import Overview
from acquisition.simulator.virtual import GENERATOR_VERSION, VirtualSlide

#: Stage position of the scan area's top-left corner on the virtual Metafer's stage (µm).
VIRTUAL_STAGE_ORIGIN_UM = (21000.0, 9500.0)


def write_ids(path: Path, ids: np.ndarray) -> None:
    """Instance ids as a 16-bit single-channel PNG (ids above 65535 cannot occur in one FOV)."""
    if ids.max(initial=0) > 65535:
        raise ValueError(f"{path}: more than 65535 objects")
    if not cv2.imwrite(str(path), ids.astype(np.uint16)):
        raise OSError(f"could not write {path}")


def fov_truth(fov: Fov) -> dict[str, Any]:
    """A FOV's ground truth as JSON-ready data (pixel coordinates of the FOV image)."""
    return {
        "position_um": list(fov.position_um),
        "pixel_size_um": fov.pixel_size_um,
        "defocus_um": round(fov.defocus_um, 4),
        "cells": [
            {
                "id": c.id,
                "class": c.code,
                "bbox": list(c.bbox),
                "centre": list(c.centre),
                "area_px": c.area_px,
                "full_area_px": c.full_area_px,
            }
            for c in fov.cells
        ],
        "distractors": [
            {"id": d.id, "kind": d.kind, "bbox": list(d.bbox), "area_px": d.area_px} for d in fov.distractors
        ],
    }


def write_metafer_export(
    slide: VirtualSlide,
    out_dir: Path | str,
    positions: Sequence[Any],
    *,
    overview: Overview | None = None,
    ground_truth: bool = True,
    jpeg_quality: int = 90,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Scan a virtual slide (overview + FOVs at `positions`) into an export folder; returns the manifest path.

    `positions` are `ScanPosition`s (or anything with `x_um`/`y_um`: FOV top-left in slide µm).
    `progress(n)` is called after each image with the number done.
    """
    out = start_export(out_dir)
    gt = out / "ground_truth"
    if ground_truth:
        gt.mkdir(exist_ok=True)
    ox, oy = VIRTUAL_STAGE_ORIGIN_UM
    if overview is None:
        overview = slide.render_overview()
    h, w = overview.image.shape[:2]
    write_image(out, "overview.jpg", overview.image, 92)
    images = [
        ManifestImage(
            out / "overview.jpg", "overview", ox, oy, 0.0, 0.0, slide.focus_base_um, w, h, optics.OVERVIEW_PIXEL_UM
        )
    ]
    done = 1
    if progress:
        progress(done)
    cell_rows: list[list[Any]] = []
    for k, pos in enumerate(positions, start=1):
        fov = slide.render_fov(pos.x_um, pos.y_um)
        name = f"fov_{k:04d}"
        file = write_image(out, f"fov/{name}.jpg", fov.image, jpeg_quality)
        sx, sy = round(ox + fov.position_um[0], 3), round(oy + fov.position_um[1], 3)
        images.append(
            ManifestImage(
                file,
                "fov",
                sx,
                sy,
                sx - ox,
                sy - oy,
                fov.focus_um,
                optics.FOV_WIDTH_PX,
                optics.FOV_HEIGHT_PX,
                optics.FOV_PIXEL_UM,
            )
        )
        if ground_truth:
            write_ids(gt / f"{name}_instances.png", fov.instance_mask)
            write_ids(gt / f"{name}_distractors.png", fov.distractor_mask)
            (gt / f"{name}.json").write_text(json.dumps(fov_truth(fov), indent=1) + "\n")
            cell_rows += [[f"fov/{name}.jpg", c.id, c.code, *c.bbox, c.area_px] for c in fov.cells]
        done += 1
        if progress:
            progress(done)
    if ground_truth:
        _write_truth_tables(gt, slide, overview, positions, cell_rows)
    return write_manifest(_virtual_manifest(slide, out, tuple(images), gt if ground_truth else None))


def _virtual_manifest(
    slide: VirtualSlide, out: Path, images: tuple[ManifestImage, ...], ground_truth: Path | None
) -> ScanManifest:
    """What the virtual Metafer says about its scan: equipment, optics, stage origin, seed-derived time."""
    acquired = datetime(2026, 1, 5, 8, 0, tzinfo=UTC) + timedelta(minutes=slide.seed % 500_000)
    return ScanManifest(
        path=out,
        barcode=slide.barcode,
        specimen="bone marrow smear",
        stain="May-Grünwald-Giemsa",
        equipment=Equipment(
            manufacturer="MetaSystems",
            scanner="Metafer 4 (virtual)",
            software_version=f"marrowlink virtual Metafer {GENERATOR_VERSION}",
            microscope="Zeiss Axio Imager.Z2",
            camera="virtual 2048x1496 CCD",
            camera_pixel_size_um=optics.CAMERA_PIXEL_UM,
        ),
        objectives={
            "overview": Objective(optics.OVERVIEW_MAGNIFICATION, optics.OVERVIEW_NA, optics.OVERVIEW_BINNING),
            "fov": Objective(optics.FOV_MAGNIFICATION, optics.FOV_NA, 1),
        },
        pixel_size_um={"overview": optics.OVERVIEW_PIXEL_UM, "fov": optics.FOV_PIXEL_UM},
        stage_origin_um=VIRTUAL_STAGE_ORIGIN_UM,
        position_anchor="top_left",
        scan_area_um=(slide.scan_area_um[0], slide.scan_area_um[1]),
        acquired=acquired.strftime("%Y-%m-%dT%H:%M:%SZ"),
        images=images,
        ground_truth=ground_truth,
        vendor={"simulator": {"seed": slide.seed, "profile": slide.profile, "generator_version": GENERATOR_VERSION}},
    )


def _write_truth_tables(
    gt: Path, slide: VirtualSlide, overview: Overview, positions: Sequence[Any], cell_rows: list[list[Any]]
) -> None:
    with (gt / "quality.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "col", "x_um", "y_um", "width_um", "height_um", "x_px", "y_px", "label", "coverage"])
        for t in overview.tiles:
            w.writerow(
                [
                    t.row,
                    t.col,
                    t.x_um,
                    t.y_um,
                    round(t.width_um, 3),
                    round(t.height_um, 3),
                    t.x_px,
                    t.y_px,
                    t.label,
                    t.coverage,
                ]
            )
    with (gt / "positions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fov", "rank", "row", "col", "x_um", "y_um", "score", "label"])
        for k, p in enumerate(positions, start=1):
            w.writerow(
                [
                    f"fov/fov_{k:04d}.jpg",
                    getattr(p, "rank", k - 1),
                    getattr(p, "row", ""),
                    getattr(p, "col", ""),
                    p.x_um,
                    p.y_um,
                    getattr(p, "score", ""),
                    getattr(p, "label", ""),
                ]
            )
    with (gt / "cells.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "instance_id", "class", "x0", "y0", "x1", "y1", "area_px"])
        w.writerows(cell_rows)
    (gt / "slide.json").write_text(
        json.dumps(
            {
                "seed": slide.seed,
                "profile": slide.profile,
                "generator_version": GENERATOR_VERSION,
                "barcode": slide.barcode,
                "rows": slide.rows,
                "cols": slide.cols,
                "scan_area_um": list(slide.scan_area_um),
            },
            indent=2,
        )
        + "\n"
    )
