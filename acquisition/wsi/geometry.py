"""Where pixels lie on the slide: the one geometry model of the WSI and of the SEG, ANN and SR on it.

The scanner reports stage positions in µm with x to the right and y down, as the camera sees them.
DICOM's Slide Coordinate System is in mm from the slide corner. We use ImageOrientationSlide
``[0, 1, 0, 1, 0, 0]`` (wsidicom's default, read by every peer we test with): the image's column axis
runs along slide +Y and its row axis along slide +X, so slide X = stage y and slide Y = stage x.

Two views of the same model: `PixelGrid` places a pixel matrix when the encoder writes a WSI level;
`LevelGeometry` reads a level's placement back from its dataset (TotalPixelMatrixOriginSequence,
PixelSpacing, ImageOrientationSlide, through highdicom's transformers). The result writers use only
`LevelGeometry`, so SEG/ANN/SR stay aligned with whatever WSI they are written for, ours or a third
party's; a test checks that both views agree on our own WSIs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import highdicom as hd
    from pydicom.dataset import Dataset

IMAGE_ORIENTATION_SLIDE = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0)


@dataclass(frozen=True)
class SlidePoint:
    x_mm: float
    y_mm: float


def stage_to_slide(x_um: float, y_um: float) -> SlidePoint:
    """A stage position (µm, x right, y down) in slide coordinates (mm)."""
    return SlidePoint(x_mm=y_um / 1000.0, y_mm=x_um / 1000.0)


@dataclass(frozen=True)
class PixelGrid:
    """A total pixel matrix placed on the slide: its top-left pixel's stage position and pixel size."""

    origin_x_um: float
    origin_y_um: float
    pixel_size_um: float
    columns: int
    rows: int

    def pixel_to_stage(self, column: float, row: float) -> tuple[float, float]:
        return (self.origin_x_um + column * self.pixel_size_um, self.origin_y_um + row * self.pixel_size_um)

    def pixel_to_slide(self, column: float, row: float) -> SlidePoint:
        return stage_to_slide(*self.pixel_to_stage(column, row))

    def stage_to_pixel(self, x_um: float, y_um: float) -> tuple[float, float]:
        return ((x_um - self.origin_x_um) / self.pixel_size_um, (y_um - self.origin_y_um) / self.pixel_size_um)

    @property
    def origin(self) -> SlidePoint:
        return stage_to_slide(self.origin_x_um, self.origin_y_um)

    @property
    def width_mm(self) -> float:
        return self.columns * self.pixel_size_um / 1000.0

    @property
    def height_mm(self) -> float:
        return self.rows * self.pixel_size_um / 1000.0


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
        import highdicom as hd  # on first use: the encoder needs only PixelGrid
        from pydicom.uid import VLWholeSlideMicroscopyImageStorage

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
        import highdicom as hd

        x, y, z = self.pixel_to_slide(np.array([[column, row]]))[0]
        return hd.PlanePositionSequence(
            coordinate_system="SLIDE",
            image_position=(float(x), float(y), float(z)),
            pixel_matrix_position=(column + 1, row + 1),
        )
