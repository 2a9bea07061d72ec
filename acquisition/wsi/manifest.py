"""A read Metafer export (`ScanManifest`) encoded as DICOM WSI: the pixels the manifest points at.

Kept out of integration.scans, which also stores and audits: this is all the encode path needs, so a
conversion (and `marrowlink bench wsi`) imports neither the Store nor the case database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset

from acquisition.wsi.context import SlideContext
from acquisition.wsi.encode import FovCapture, encode_slide
from acquisition.wsi.tiles import decode_image

if TYPE_CHECKING:
    from acquisition.metafer import ScanManifest


class ScanImportError(RuntimeError):
    """A scan that cannot be imported; the message says which file or field and why."""


def _decode(path: Path, data: bytes) -> np.ndarray:
    try:
        return decode_image(data)
    except Exception as exc:
        raise ScanImportError(f"{path}: cannot decode image: {exc}") from exc


def _loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: _decode(path, path.read_bytes())


def encode_manifest(manifest: ScanManifest, context: SlideContext) -> list[Dataset]:
    """The slide's WSI instances (40x level first), or ScanImportError naming the file at fault."""
    overview = manifest.overview
    if overview is None:
        raise ScanImportError(f"{manifest.path}: the export has no overview image")
    fovs = manifest.fovs
    if not fovs:
        raise ScanImportError(f"{manifest.path}: the export has no FOV images")
    source = overview.file.read_bytes()  # decoded here, and its whole tiles copied by encode_slide
    overview_pixels = _decode(overview.file, source)
    if overview_pixels.shape[:2] != (overview.height, overview.width):
        raise ScanImportError(
            f"{overview.file}: image is {overview_pixels.shape[1]}x{overview_pixels.shape[0]}, "
            f"manifest says {overview.width}x{overview.height}"
        )
    captures = [FovCapture(f.x_um, f.y_um, f.width, f.height, _loader(f.file), f.focus_um) for f in fovs]
    magnifications = manifest.objectives
    return encode_slide(
        overview=overview_pixels,
        overview_origin_um=(overview.x_um, overview.y_um),
        overview_pixel_size_um=overview.pixel_size_um,
        fovs=captures,
        fov_pixel_size_um=fovs[0].pixel_size_um,
        context=context,
        overview_objective_power=magnifications["overview"].magnification if "overview" in magnifications else 10.0,
        fov_objective_power=magnifications["fov"].magnification if "fov" in magnifications else 40.0,
        overview_jpeg=source,
    )
