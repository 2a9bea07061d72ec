"""Where pixels lie on the slide: the one mapping shared by the WSI, SEG, ANN and SR objects.

The scanner reports stage positions in µm with x to the right and y down, as the camera sees them.
DICOM's Slide Coordinate System is in mm from the slide corner. We use ImageOrientationSlide
``[0, 1, 0, 1, 0, 0]`` (wsidicom's default, read by every peer we test with): the image's column axis
runs along slide +Y and its row axis along slide +X, so slide X = stage y and slide Y = stage x.
"""

from __future__ import annotations

from dataclasses import dataclass

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
