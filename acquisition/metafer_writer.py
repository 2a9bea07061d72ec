"""The virtual Metafer's side of the export folder: images, manifest and ground truth.

Byte-for-byte deterministic: no clock, no random file names; the acquisition time is derived from
the seed. FOVs are JPEG (quality 90, as Metafer exports them), the overview a JPEG too, masks 16-bit
PNG. The ground truth folder is ignored by the reader's DICOM path and used by tests and data sets.
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

from acquisition.metafer import FORMAT, FORMAT_VERSION, MANIFEST_NAME, VIRTUAL_STAGE_ORIGIN_UM
from acquisition.simulator import GENERATOR_VERSION, Fov, Overview, VirtualSlide, optics


def _rgb_write(path: Path, image: np.ndarray, quality: int | None = None) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if quality is not None else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")


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


def write_export(
    slide: VirtualSlide,
    out: Path,
    positions: Sequence[Any],
    overview: Overview | None,
    ground_truth: bool,
    jpeg_quality: int,
    progress: Callable[[int], None] | None,
) -> Path:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    (out / "fov").mkdir(parents=True, exist_ok=True)
    gt = out / "ground_truth"
    if ground_truth:
        gt.mkdir(exist_ok=True)
    ox, oy = VIRTUAL_STAGE_ORIGIN_UM
    if overview is None:
        overview = slide.render_overview()
    _rgb_write(out / "overview.jpg", overview.image, 92)
    h, w = overview.image.shape[:2]
    images: list[dict[str, Any]] = [
        {
            "file": "overview.jpg",
            "kind": "overview",
            "stage_x_um": ox,
            "stage_y_um": oy,
            "focus_um": slide.focus_base_um,
            "width": w,
            "height": h,
        },
    ]
    done = 1
    if progress:
        progress(done)
    cell_rows: list[list[Any]] = []
    for k, pos in enumerate(positions, start=1):
        fov = slide.render_fov(pos.x_um, pos.y_um)
        name = f"fov_{k:04d}"
        _rgb_write(out / "fov" / f"{name}.jpg", fov.image, jpeg_quality)
        images.append(
            {
                "file": f"fov/{name}.jpg",
                "kind": "fov",
                "stage_x_um": round(ox + fov.position_um[0], 3),
                "stage_y_um": round(oy + fov.position_um[1], 3),
                "focus_um": fov.focus_um,
                "width": optics.FOV_WIDTH_PX,
                "height": optics.FOV_HEIGHT_PX,
            }
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
    acquired = datetime(2026, 1, 5, 8, 0, tzinfo=UTC) + timedelta(minutes=slide.seed % 500_000)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "slide": {"barcode": slide.barcode, "specimen": "bone marrow smear", "stain": "May-Grünwald-Giemsa"},
        "equipment": {
            "manufacturer": "MetaSystems",
            "scanner": "Metafer 4 (virtual)",
            "software_version": f"marrowlink virtual Metafer {GENERATOR_VERSION}",
            "microscope": "Zeiss Axio Imager.Z2",
            "camera": "virtual 2048x1496 CCD",
            "camera_pixel_size_um": optics.CAMERA_PIXEL_UM,
        },
        "objectives": {
            "overview": {
                "magnification": optics.OVERVIEW_MAGNIFICATION,
                "numerical_aperture": optics.OVERVIEW_NA,
                "binning": optics.OVERVIEW_BINNING,
            },
            "fov": {"magnification": optics.FOV_MAGNIFICATION, "numerical_aperture": optics.FOV_NA, "binning": 1},
        },
        "pixel_size_um": {"overview": optics.OVERVIEW_PIXEL_UM, "fov": optics.FOV_PIXEL_UM},
        "stage_origin_um": {"x": ox, "y": oy},
        "position_anchor": "top_left",
        "scan_area_um": {"width": slide.scan_area_um[0], "height": slide.scan_area_um[1]},
        "acquired": acquired.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "images": images,
        **({"ground_truth": "ground_truth"} if ground_truth else {}),
        "vendor": {"simulator": {"seed": slide.seed, "profile": slide.profile, "generator_version": GENERATOR_VERSION}},
    }
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


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
