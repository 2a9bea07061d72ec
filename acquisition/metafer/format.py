"""The Metafer export format: its names, its manifest model and its error, shared by reader and writer.

The layout is documented in docs/metafer-export.md. A lab produces it from Metafer's own export; the
virtual Metafer writes exactly the same layout (plus a `ground_truth/` folder). Nothing here reads or
writes files, so the reader, the writer and the CSV form depend on this module and never on each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
CSV_MANIFEST_NAME = "manifest.csv"  # the same manifest as one table (acquisition.metafer.csv)
FORMAT = "marrowlink-metafer-export"
FORMAT_VERSION = 1
IMAGE_KINDS = ("overview", "fov")
ANCHORS = ("top_left", "centre")
#: Relative tolerance between camera pixel / magnification x binning and the declared pixel size.
PIXEL_TOLERANCE = 0.02


class MetaferExportError(ValueError):
    """An export folder that cannot be read; `field` is the manifest field, `file` the file concerned."""

    def __init__(self, file: Path | str, field: str, reason: str) -> None:
        self.file = str(file)
        self.field = field
        self.reason = reason
        super().__init__(f"{self.file}: {field}: {reason}")


@dataclass(frozen=True)
class Equipment:
    """Scanner, microscope and camera, for the DICOM Equipment and Optical Path modules."""

    manufacturer: str
    scanner: str
    software_version: str
    microscope: str
    camera: str
    camera_pixel_size_um: float | None


@dataclass(frozen=True)
class Objective:
    magnification: float
    numerical_aperture: float | None
    binning: int


@dataclass(frozen=True)
class ManifestImage:
    """One image of the export. Stage positions as written; `x_um`/`y_um` are slide µm of the top-left."""

    file: Path  # absolute
    kind: str  # overview | fov
    stage_x_um: float
    stage_y_um: float
    x_um: float  # top-left corner relative to the stage origin (slide coordinates)
    y_um: float
    focus_um: float | None
    width: int
    height: int
    pixel_size_um: float


@dataclass(frozen=True)
class ScanManifest:
    """A validated export folder."""

    path: Path
    barcode: str
    specimen: str
    stain: str
    equipment: Equipment
    objectives: Mapping[str, Objective]
    pixel_size_um: Mapping[str, float]
    stage_origin_um: tuple[float, float]
    position_anchor: str
    scan_area_um: tuple[float, float] | None
    acquired: str | None
    images: tuple[ManifestImage, ...]
    ground_truth: Path | None
    vendor: Mapping[str, Any]

    @property
    def overview(self) -> ManifestImage | None:
        return next((i for i in self.images if i.kind == "overview"), None)

    @property
    def fovs(self) -> list[ManifestImage]:
        return [i for i in self.images if i.kind == "fov"]
