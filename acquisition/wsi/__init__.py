"""Slide scans as DICOM VL Whole Slide Microscopy: a TILED_SPARSE 40x level over a TILED_FULL overview."""

from acquisition.wsi.context import Equipment, Patient, SlideContext
from acquisition.wsi.encode import FovCapture, encode_slide
from acquisition.wsi.geometry import IMAGE_ORIENTATION_SLIDE, LevelGeometry, PixelGrid, stage_to_slide

__all__ = [
    "IMAGE_ORIENTATION_SLIDE",
    "Equipment",
    "FovCapture",
    "LevelGeometry",
    "Patient",
    "PixelGrid",
    "SlideContext",
    "encode_slide",
    "stage_to_slide",
]
