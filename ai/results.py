"""Typed results that `ai` hands to the rest of marrowlink (the DICOM writers in ai.dicom, hl7.build_oru, api).

Plain dataclasses over numpy and built-ins: importing them must not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from acquisition import CLASS_CODES, CRITICAL_CODES, ERYTHROID_CODES, GRANULOCYTIC_CODES, NOT_CLASSED_CODES
from ai.catalogue import UNIDENTIFIED


@dataclass
class Cell:
    """One segmented nucleated cell in one FOV, in that FOV's own pixel coordinates (x right, y down).

    `polygon` is an open ring (the first point is not repeated at the end), as DICOM ANN POLYGON wants.
    `cell_class` is a code from the classifier's model card, or UNIDENTIFIED below its confidence threshold.
    `border`: the outline touches the image edge (`ai.cell_rules`), so part of the cell lies outside the
    image; such a cell is shown and classified but, as on a microscope, not counted.
    """

    polygon: np.ndarray  # (N, 2) float32, x/y
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1/y1 exclusive)
    area_px: float
    detection_score: float = 1.0
    cell_class: str | None = None
    probability: float | None = None
    probabilities: np.ndarray | None = None
    border: bool = False

    def to_json(self) -> dict:
        """The `detect --json` shape: bbox, polygon, class, probability, border."""
        return {
            "bbox": [int(v) for v in self.bbox],
            "polygon": [[round(float(x), 1), round(float(y), 1)] for x, y in self.polygon],
            "class": self.cell_class,
            "probability": None if self.probability is None else round(float(self.probability), 4),
            "border": bool(self.border),
        }


@dataclass
class CellDetections:
    """All cells found in one FOV, with the scale they were found at."""

    cells: list[Cell]
    image_shape: tuple[int, int]  # height, width of the FOV the coordinates refer to
    pixel_size_um: float

    def __len__(self) -> int:
        return len(self.cells)

    def masks(self) -> list[tuple[int, int, np.ndarray]]:
        """Each cell's pixels as (x0, y0, bool mask in its bounding box); unlike `label_image`, cells that
        overlap keep their shared pixels."""
        from ai.star import polygon_mask

        return [polygon_mask(np.asarray(cell.polygon)) for cell in self.cells]

    def label_image(self) -> np.ndarray:
        """Rasterise the polygons into an instance-id image (1..n; later cells win overlaps)."""
        import cv2

        labels = np.zeros(self.image_shape, np.int32)
        for i, cell in enumerate(self.cells, start=1):
            cv2.fillPoly(labels, [np.round(cell.polygon).astype(np.int32).reshape(-1, 1, 2)], i)
        return labels


@dataclass
class Differential:
    """Counts and percentages per class for one slide or case.

    Percent denominators exclude smudge (KSC), not identifiable (NIF) and the UNIDENTIFIED review bin by
    default; `total` counts every cell and `total_classed` the denominator.
    M:E ratio = (PMO+APL+MYB+MMZ+NGB+NGS+EOS+ABE+BAS) / (PEB+EBO); None when there are no erythroid cells.
    """

    counts: dict[str, int]
    percent: dict[str, float]
    total: int
    total_classed: int
    me_ratio: float | None
    critical: dict[str, int] = field(default_factory=dict)

    @property
    def has_critical(self) -> bool:
        return any(self.critical.values())

    @classmethod
    def from_classes(
        cls,
        labels: Iterable[str | None],
        classes: Sequence[str] = CLASS_CODES,
        not_classed: Sequence[str] = NOT_CLASSED_CODES,
        critical: Sequence[str] = CRITICAL_CODES,
        myeloid: Sequence[str] = GRANULOCYTIC_CODES,
        erythroid: Sequence[str] = ERYTHROID_CODES,
    ) -> Differential:
        """Build the differential from per-cell class codes (None counts as UNIDENTIFIED)."""
        counts = {code: 0 for code in (*classes, UNIDENTIFIED)}
        for label in labels:
            key = UNIDENTIFIED if label is None else label
            counts[key] = counts.get(key, 0) + 1
        excluded = {*not_classed, UNIDENTIFIED}
        total = sum(counts.values())
        total_classed = sum(n for code, n in counts.items() if code not in excluded)
        percent = {
            code: (100.0 * n / total_classed if total_classed and code not in excluded else 0.0)
            for code, n in counts.items()
        }
        m = sum(counts.get(c, 0) for c in myeloid)
        e = sum(counts.get(c, 0) for c in erythroid)
        return cls(
            counts=counts,
            percent=percent,
            total=total,
            total_classed=total_classed,
            me_ratio=(m / e) if e else None,
            critical={c: counts.get(c, 0) for c in critical},
        )

    @classmethod
    def from_detections(cls, detections: Iterable[CellDetections], **kwargs) -> Differential:
        """The differential of the cells found, without the cells cut by an image edge (`Cell.border`): a
        reviewer skips those, since part of the cell is not seen and the neighbouring field may hold the rest;
        counting them would count fragments, and some cells twice."""
        return cls.from_classes((c.cell_class for d in detections for c in d.cells if not c.border), **kwargs)
