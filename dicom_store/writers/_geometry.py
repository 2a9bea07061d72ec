"""Where a tiled image's pixels lie in the slide's Frame of Reference, read from the image itself.

The writers map through the source dataset's own TotalPixelMatrixOriginSequence, PixelSpacing and
ImageOrientationSlide (highdicom's transformers), never through the encoder's model, so results stay
aligned with whatever WSI they are written for, ours or a third party's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import VLWholeSlideMicroscopyImageStorage


@dataclass(frozen=True)
class LevelGeometry:
    """One pyramid level: its total pixel matrix and the mappings to and from slide coordinates (mm)."""

    frame_of_reference_uid: str
    rows: int
    columns: int
    tile_rows: int
    tile_columns: int
    pixel_size_um: float
    to_slide: hd.spatial.ImageToReferenceTransformer
    to_image: hd.spatial.ReferenceToImageTransformer
    pixel_to_slide: hd.spatial.PixelToReferenceTransformer

    @classmethod
    def of(cls, source: Dataset) -> LevelGeometry:
        """Read the geometry of a VL Whole Slide Microscopy image; raise ValueError when it has none."""
        if source.get("SOPClassUID") != VLWholeSlideMicroscopyImageStorage:
            raise ValueError(
                f"source must be a VL Whole Slide Microscopy image, got SOP class {source.get('SOPClassUID')}"
            )
        for keyword in ("FrameOfReferenceUID", "TotalPixelMatrixOriginSequence", "ImageOrientationSlide"):
            if keyword not in source:
                raise ValueError(f"source WSI lacks {keyword}: results could not be placed on the slide")
        spacing = source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        if abs(float(spacing[0]) - float(spacing[1])) > 1e-9:
            raise ValueError(f"source WSI has non-square pixels {list(spacing)}; not supported")
        return cls(
            frame_of_reference_uid=source.FrameOfReferenceUID,
            rows=int(source.TotalPixelMatrixRows),
            columns=int(source.TotalPixelMatrixColumns),
            tile_rows=int(source.Rows),
            tile_columns=int(source.Columns),
            pixel_size_um=float(spacing[0]) * 1000.0,
            to_slide=hd.spatial.ImageToReferenceTransformer.for_image(source, for_total_pixel_matrix=True),
            to_image=hd.spatial.ReferenceToImageTransformer.for_image(source, for_total_pixel_matrix=True),
            pixel_to_slide=hd.spatial.PixelToReferenceTransformer.for_image(source, for_total_pixel_matrix=True),
        )

    def image_to_slide(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) image coordinates (column, row; (0, 0) = top-left pixel corner) → (N, 3) slide mm."""
        return self.to_slide(np.asarray(points, dtype=np.float64))

    def slide_to_image(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) slide coordinates in mm → (N, 2) image coordinates; the inverse of `image_to_slide`."""
        return self.to_image(np.asarray(points, dtype=np.float64))[:, :2]

    def check_inside(self, rectangles: Sequence[tuple[int, int, int, int]], what: str) -> None:
        """Refuse (column, row, width, height) rectangles that leave the total pixel matrix."""
        for column, row, width, height in rectangles:
            if column + width > self.columns or row + height > self.rows:
                raise ValueError(
                    f"{what} at ({column}, {row}) {width}x{height} leaves the source's "
                    f"{self.columns}x{self.rows} total pixel matrix"
                )

    def tile_position(self, column: int, row: int) -> hd.PlanePositionSequence:
        """Plane Position (Slide) of a frame whose top-left pixel is (column, row), 0-based.

        The offsets are those of the pixel's centre (PS3.3 C.8.12.6.1.1), as the WSI's own frames give.
        """
        x, y, z = self.pixel_to_slide(np.array([[column, row]]))[0]
        return hd.PlanePositionSequence(
            coordinate_system="SLIDE",
            image_position=(float(x), float(y), float(z)),
            pixel_matrix_position=(column + 1, row + 1),
        )
