"""Writing an export folder from the reader's own model: images first, the manifest last.

The writer knows the format, not where the pixels come from: the virtual Metafer renders a slide and
hands the images and a `ScanManifest` to it, as a converter from a real scanner's files could. The
manifest is written last and atomically (a temporary name, then a rename), so a folder that has a
manifest holds every image it lists: a watcher may take "manifest present" as "export complete".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from acquisition.metafer.format import FORMAT, FORMAT_VERSION, MANIFEST_NAME, ManifestImage, ScanManifest


def start_export(folder: Path | str) -> Path:
    """Create the export folder; refuse one that holds anything, so no earlier scan is mixed in."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_image(folder: Path, name: str, image: np.ndarray, jpeg_quality: int | None = None) -> Path:
    """An RGB image at `folder/name`; the suffix picks the codec (JPEG with `jpeg_quality`, PNG, TIFF)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if jpeg_quality is not None else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")
    return path


def manifest_json(manifest: ScanManifest) -> dict[str, Any]:
    """The manifest.json structure of a manifest: what `read_metafer_export` reads back to an equal model."""
    eq = manifest.equipment
    equipment: dict[str, Any] = {
        "manufacturer": eq.manufacturer,
        "scanner": eq.scanner,
        "software_version": eq.software_version,
        "microscope": eq.microscope,
        "camera": eq.camera,
    }
    if eq.camera_pixel_size_um is not None:
        equipment["camera_pixel_size_um"] = eq.camera_pixel_size_um
    objectives = {}
    for kind, obj in manifest.objectives.items():
        entry: dict[str, Any] = {"magnification": obj.magnification}
        if obj.numerical_aperture is not None:
            entry["numerical_aperture"] = obj.numerical_aperture
        entry["binning"] = obj.binning
        objectives[kind] = entry
    out: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "slide": {"barcode": manifest.barcode, "specimen": manifest.specimen, "stain": manifest.stain},
        "equipment": equipment,
        "objectives": objectives,
        "pixel_size_um": dict(manifest.pixel_size_um),
        "stage_origin_um": {"x": manifest.stage_origin_um[0], "y": manifest.stage_origin_um[1]},
        "position_anchor": manifest.position_anchor,
    }
    if manifest.scan_area_um is not None:
        out["scan_area_um"] = {"width": manifest.scan_area_um[0], "height": manifest.scan_area_um[1]}
    if manifest.acquired is not None:
        out["acquired"] = manifest.acquired
    out["images"] = [_image_json(manifest.path, image) for image in manifest.images]
    if manifest.ground_truth is not None:
        out["ground_truth"] = manifest.ground_truth.resolve().relative_to(manifest.path.resolve()).as_posix()
    if manifest.vendor:
        out["vendor"] = dict(manifest.vendor)
    return out


def _image_json(folder: Path, image: ManifestImage) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "file": image.file.resolve().relative_to(folder.resolve()).as_posix(),
        "kind": image.kind,
        "stage_x_um": image.stage_x_um,
        "stage_y_um": image.stage_y_um,
    }
    if image.focus_um is not None:
        entry["focus_um"] = image.focus_um
    entry["width"] = image.width
    entry["height"] = image.height
    return entry


def write_manifest(manifest: ScanManifest) -> Path:
    """Write `manifest.path/manifest.json` last and atomically; returns its path."""
    path = manifest.path / MANIFEST_NAME
    partial = path.with_name(f".{MANIFEST_NAME}.partial")
    with partial.open("w", encoding="utf-8") as f:
        f.write(json.dumps(manifest_json(manifest), indent=2, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    return path
