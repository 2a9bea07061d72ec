"""Typed inputs of the writers: what was analysed, by which algorithm, and who signed.

Validated at construction (highdicom's rule: an object that exists is valid), so that a writer
never finds out half-way through building a DICOM object that its input was inconsistent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

import numpy as np
from pydicom.uid import generate_uid

from acquisition import QUALITY_CLASSES
from acquisition.timestamps import DicomDateTime, format_dicom
from ai.results import CellDetections

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class AnalysisRegion:
    """A rectangle of the 40x level's total pixel matrix that was analysed, with the cells found in it.

    Parameters
    ----------
    column: int
        0-based column offset of the rectangle's top-left pixel in the total pixel matrix.
    row: int
        0-based row offset of the rectangle's top-left pixel in the total pixel matrix.
    width: int
        Number of columns analysed.
    height: int
        Number of rows analysed.
    detections: ai.results.CellDetections
        Cells in region-local pixel coordinates (x right, y down; integer values are pixel centres),
        at ``detections.pixel_size_um``; writers rescale them to the level's pixel spacing.
    """

    column: int
    row: int
    width: int
    height: int
    detections: CellDetections

    def __post_init__(self) -> None:
        if self.column < 0 or self.row < 0:
            raise ValueError(f"AnalysisRegion column/row must be >= 0, got {self.column}, {self.row}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"AnalysisRegion width/height must be > 0, got {self.width}x{self.height}")
        if self.detections.pixel_size_um <= 0:
            raise ValueError("AnalysisRegion detections.pixel_size_um must be > 0")
        for index, cell in enumerate(self.detections.cells):
            polygon = np.asarray(cell.polygon)
            if polygon.ndim != 2 or polygon.shape[1] != 2 or polygon.shape[0] < 3:
                raise ValueError(f"cell {index}: polygon must be (N >= 3, 2), got {polygon.shape}")
            if np.allclose(polygon[0], polygon[-1]):
                raise ValueError(f"cell {index}: polygon repeats its first point (must be an open ring)")
            if not np.isfinite(polygon).all():
                raise ValueError(f"cell {index}: polygon has non-finite coordinates")

    def cell_polygons(self, level_pixel_size_um: float) -> list[np.ndarray]:
        """Each cell's polygon in total-pixel-matrix image coordinates of the level.

        Image coordinates put (0, 0) at the top-left *corner* of the top-left pixel (highdicom's and
        DICOM SCOORD's convention), so a vertex on pixel centre (x, y) becomes (x + 0.5, y + 0.5).
        Vertices are checked to lie inside the rectangle, so no annotation leaves what was analysed.
        """
        scale = self.detections.pixel_size_um / level_pixel_size_um
        polygons = []
        for index, cell in enumerate(self.detections.cells):
            local = (np.asarray(cell.polygon, dtype=np.float64) + 0.5) * scale
            outside = (local < -1e-6).any() or (local[:, 0] > self.width + 1e-6).any()
            if outside or (local[:, 1] > self.height + 1e-6).any():
                raise ValueError(
                    f"cell {index}: polygon leaves the {self.width}x{self.height} region at "
                    f"({self.column}, {self.row}); cells must be in region-local pixel coordinates"
                )
            polygons.append(local + np.array([self.column, self.row], dtype=np.float64))
        return polygons

    def corners(self) -> np.ndarray:
        """The rectangle's four corners in image coordinates, clockwise on screen from top-left."""
        c0, r0, c1, r1 = self.column, self.row, self.column + self.width, self.row + self.height
        return np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], dtype=np.float64)


@dataclass(frozen=True)
class AlgorithmInfo:
    """The algorithm that made a result (DICOM Algorithm Identification, TID 4019).

    Parameters
    ----------
    name: str
        Algorithm Name, e.g. the model card's name.
    version: str
        Algorithm Version.
    weights_sha256: str
        SHA-256 of the weights file, lower-case hex: pins the exact trained model.
    parameters: Mapping[str, str]
        Algorithm Parameters (thresholds, input scale, ...), written as ``key=value``.
    manufacturer: str
        Who made the algorithm (Algorithm Manufacturer / device observer manufacturer).
    """

    name: str
    version: str
    weights_sha256: str
    parameters: Mapping[str, object] = field(default_factory=dict)
    manufacturer: str = "marrowlink"

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ValueError("AlgorithmInfo name and version are required")
        if not _SHA256.match(self.weights_sha256):
            raise ValueError(
                f"AlgorithmInfo weights_sha256 must be 64 lower-case hex digits, got {self.weights_sha256!r}"
            )

    def parameter_items(self) -> dict[str, str]:
        """Parameters as strings, the weights hash first: DICOM stores them as text."""
        items = {"weights_sha256": self.weights_sha256}
        items.update({str(k): str(v) for k, v in self.parameters.items()})
        return items


@dataclass(frozen=True)
class AoiTile:
    """One AOI grid tile of the overview, in the overview level's pixels, with its quality class.

    Parameters
    ----------
    column, row: int
        0-based offset of the tile's top-left pixel in the overview's total pixel matrix.
    width, height: int
        Tile size in overview pixels.
    quality_class: str
        One of `QUALITY_CLASSES`.
    score: float
        The AOI network's score for the tile (0..1).
    """

    column: int
    row: int
    width: int
    height: int
    quality_class: str
    score: float

    def __post_init__(self) -> None:
        if self.quality_class not in QUALITY_CLASSES:
            raise ValueError(f"AoiTile quality_class must be one of {QUALITY_CLASSES}, got {self.quality_class!r}")
        if self.width <= 0 or self.height <= 0 or self.column < 0 or self.row < 0:
            raise ValueError(f"AoiTile has an invalid rectangle {self.column},{self.row} {self.width}x{self.height}")
        if not np.isfinite(self.score):
            raise ValueError("AoiTile score must be finite")

    def corners(self) -> np.ndarray:
        c0, r0, c1, r1 = self.column, self.row, self.column + self.width, self.row + self.height
        return np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], dtype=np.float64)


@dataclass(frozen=True)
class VerifyingObserver:
    """The person who signed a final or corrected report (Verifying Observer Sequence, TID 1003).

    Parameters
    ----------
    name: str
        Person name in DICOM PN form, e.g. ``"Doe^Jane"``.
    organization: str
        Verifying Organization.
    login: str
        The user's login in marrowlink (Person Identification Code), for the audit trail.
    """

    name: str
    organization: str
    login: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.organization:
            raise ValueError("VerifyingObserver name and organization are required")


@dataclass(frozen=True)
class SeriesSlot:
    """Where a result object goes: the UID root for its new UIDs, its series and its number in it.

    Parameters
    ----------
    uid_root: str
        UID root for new UIDs (Series/SOP Instance UID when not given, tracking UIDs).
    series_number: int
        Series Number of the result series.
    series_instance_uid, sop_instance_uid: str, optional
        Given to put several objects of one modality in one series (a series never mixes modalities).
    instance_number: int
        Instance Number.
    zone: tzinfo
        The site's time zone: Content and Series Date/Time are on its clock, with TimezoneOffsetFromUTC.
    created: datetime
        When the object is made (aware; default: when the slot was made).
    """

    uid_root: str
    series_number: int
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    instance_number: int = 1
    zone: tzinfo = UTC
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def new_uid(self) -> str:
        return generate_uid(self.uid_root)

    @property
    def stamp(self) -> DicomDateTime:
        return format_dicom(self.created, self.zone)

    def identity(self) -> dict[str, Any]:
        """The series, instance and date/time keywords of highdicom's constructors, new UIDs where none was given.

        TimezoneOffsetFromUTC is not a constructor keyword: `ai.dicom.common.describe` sets it.
        """
        stamp = self.stamp
        return {
            "series_instance_uid": self.series_instance_uid or self.new_uid(),
            "series_number": self.series_number,
            "sop_instance_uid": self.sop_instance_uid or self.new_uid(),
            "instance_number": self.instance_number,
            "content_date": stamp.date,
            "content_time": stamp.time,
            "series_date": stamp.date,
            "series_time": stamp.time,
        }
