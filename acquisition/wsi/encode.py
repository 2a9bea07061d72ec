"""A slide scan as DICOM VL Whole Slide Microscopy instances (PS3.3 A.32.8).

One series per scan: the 40x FOVs as one TILED_SPARSE level whose pixel matrix spans the whole
overview at 40x (only the captured tiles exist), then the 10x overview and its halvings as TILED_FULL
levels. All levels cover the same area of the slide, share the Frame of Reference and Container
Identifier, so a viewer shows one pyramid and zooms from the overview into the captured fields.
highdicom has no WSI constructor and wsidicom writes only TILED_FULL, so the datasets are built here
with pydicom, to the rules viewers enforce (docs/architecture.md §6), and checked by dciodvfy and wsidicom.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage

from acquisition.wsi import modules
from acquisition.wsi.context import SlideContext
from acquisition.wsi.geometry import PixelGrid
from acquisition.wsi.tiles import (
    PlacedFov,
    SparseTile,
    collect_full,
    pool,
    pyramid,
    submit_full,
    tile_sparse,
)

TILE = 256
_COLUMN_POSITION = 0x0048021E
_ROW_POSITION = 0x0048021F
_PLANE_POSITION_SLIDE = 0x0048021A


@dataclass(frozen=True)
class FovCapture:
    """One 40x field of view: top-left stage position (µm) and a loader for its RGB pixels."""

    x_um: float
    y_um: float
    width: int
    height: int
    load: Callable[[], np.ndarray]
    focus_um: float | None = None


def encode_slide(
    *,
    overview: np.ndarray,
    overview_origin_um: tuple[float, float],
    overview_pixel_size_um: float,
    fovs: Sequence[FovCapture],
    fov_pixel_size_um: float,
    context: SlideContext,
    overview_objective_power: float = 10.0,
    fov_objective_power: float = 40.0,
    tile: int = TILE,
    overview_jpeg: bytes | None = None,
) -> list[Dataset]:
    """Encode one scan; returns the datasets in instance-number order (40x first).

    `overview_jpeg`, the overview's source file, lets the base overview level take its whole tiles from it
    without re-encoding (`tiles.copy_tiles`) where it is a JPEG that allows it and the overview needs no
    resampling.
    """
    if overview.ndim != 3 or overview.shape[2] != 3 or overview.dtype != np.uint8:
        raise ValueError(f"overview must be RGB uint8 (H, W, 3), got {overview.dtype} {overview.shape}")
    if fov_pixel_size_um <= 0 or overview_pixel_size_um <= 0:
        raise ValueError("pixel sizes must be positive")
    source = overview
    if fovs:
        overview, overview_pixel_size_um = _align_to_power_of_two(overview, overview_pixel_size_um, fov_pixel_size_um)
    base_jpeg = overview_jpeg if overview is source else None  # a resampled overview has other pixels
    overview_grid = PixelGrid(
        overview_origin_um[0], overview_origin_um[1], overview_pixel_size_um, overview.shape[1], overview.shape[0]
    )
    # One pool for the whole slide: the overview levels are queued first and encode while the FOVs
    # are still being decoded, so both cores stay busy to the end.
    executor = pool()
    try:
        levels = []
        for index, level in enumerate(pyramid(overview, tile)):
            frames = submit_full(executor, level, tile, source_jpeg=base_jpeg if index == 0 else None)
            levels.append((level.shape[1], level.shape[0], frames))
        sparse_level = None
        if fovs:
            fov_grid = PixelGrid(
                overview_origin_um[0],
                overview_origin_um[1],
                fov_pixel_size_um,
                int(np.ceil(overview_grid.width_mm * 1000 / fov_pixel_size_um)),
                int(np.ceil(overview_grid.height_mm * 1000 / fov_pixel_size_um)),
            )
            placed = []
            for fov in fovs:
                column, row = fov_grid.stage_to_pixel(fov.x_um, fov.y_um)
                placed.append(PlacedFov(round(column), round(row), fov.width, fov.height, fov.load))
            sparse = tile_sparse(placed, tile, fov_grid.columns, fov_grid.rows, executor=executor)
            sparse_level = _sparse_level(
                sparse, fov_grid, context, tile=tile, objective_power=fov_objective_power, number=1
            )
            del sparse  # the frames now live only in the level's Pixel Data
        datasets = [] if sparse_level is None else [sparse_level]
        for index, (columns, rows, jobs) in enumerate(levels):
            grid = PixelGrid(
                overview_grid.origin_x_um,
                overview_grid.origin_y_um,
                overview_pixel_size_um * (overview.shape[1] / columns),
                columns,
                rows,
            )
            image_type = (
                ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
                if index == 0
                else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
            )
            ds = _base(
                context,
                grid,
                image_type=image_type,
                tile=tile,
                objective_power=overview_objective_power,
                number=len(datasets) + 1,
            )
            ds.DimensionOrganizationType = "TILED_FULL"
            _pixels(ds, collect_full(jobs), grid, tile)
            datasets.append(ds)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return datasets


def _align_to_power_of_two(
    overview: np.ndarray, overview_pixel_size_um: float, fov_pixel_size_um: float
) -> tuple[np.ndarray, float]:
    """Resample the overview so its pixel size is the 40x size times a power of two.

    Readers (wsidicom, DMV) build the pyramid from pixel-spacing ratios and expect them to be powers
    of two; a real 10x/40x pair with one camera already is (ratio 4), a binned or odd overview is not.
    """
    ratio = overview_pixel_size_um / fov_pixel_size_um
    target = fov_pixel_size_um * 2 ** max(0, round(np.log2(ratio)))
    if abs(target - overview_pixel_size_um) / target < 0.005:
        return overview, overview_pixel_size_um
    import cv2

    scale = overview_pixel_size_um / target
    size = (max(1, round(overview.shape[1] * scale)), max(1, round(overview.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(overview, size, interpolation=interpolation), target


def _base(
    context: SlideContext, grid: PixelGrid, *, image_type: list[str], tile: int, objective_power: float, number: int
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = context.new_uid()
    ds.ImageType = image_type
    modules.patient_study_series(ds, context)
    modules.equipment(ds, context)
    when = context.acquired
    ds.InstanceNumber = number
    ds.ContentDate = when.date
    ds.ContentTime = when.time
    ds.AcquisitionDateTime = when.datetime
    ds.AcquisitionDuration = 0.0
    ds.AcquisitionContextSequence = []
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.Rows = ds.Columns = tile
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    modules.image_geometry(ds, grid)
    modules.specimen(ds, context)
    modules.optical_path(ds, objective_power=objective_power)
    organization = Dataset()
    organization.DimensionOrganizationUID = context.new_uid()
    ds.DimensionOrganizationSequence = [organization]
    indices = []
    for pointer, label in ((_COLUMN_POSITION, "Column Position"), (_ROW_POSITION, "Row Position")):
        index = Dataset()
        index.DimensionOrganizationUID = organization.DimensionOrganizationUID
        index.DimensionIndexPointer = pointer
        index.FunctionalGroupPointer = _PLANE_POSITION_SLIDE
        index.DimensionDescriptionLabel = label
        indices.append(index)
    ds.DimensionIndexSequence = indices
    return ds


def _pixels(ds: Dataset, frames: list[bytes], grid: PixelGrid, tile: int) -> None:
    ds.NumberOfFrames = len(frames)
    raw = len(frames) * tile * tile * 3
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = round(raw / max(1, sum(len(f) for f in frames)), 2)
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate_frames(frames)
    ds["PixelData"].VR = "OB"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    # Declare the encoding the datasets are built in (Explicit VR Little Endian, UTF-8) as their
    # original one: pydicom then writes the pre-encoded per-frame items as they are instead of parsing
    # thousands of them back to look for ambiguous VRs, of which these datasets have none.
    ds.set_original_encoding(False, True, ds._character_set)


_PER_FRAME = 0x52009230
_ITEM = struct.Struct("<HHI")


def encapsulate_frames(frames: Sequence[bytes]) -> bytes:
    """Encapsulated Pixel Data (PS3.5 A.4): the Basic Offset Table, then one fragment per frame.

    The bytes pydicom's ``encapsulate(frames)`` makes (the writer adds the Sequence Delimitation Item),
    joined in one go: one copy of the frames instead of three, a slide's worth of memory at the peak.
    """
    parts = [b""]
    offsets = []
    offset = 0
    for frame in frames:
        odd = len(frame) & 1
        offsets.append(offset)
        parts.append(_ITEM.pack(0xFFFE, 0xE000, len(frame) + odd))
        parts.append(frame)
        if odd:
            parts.append(b"\x00")
        offset += 8 + len(frame) + odd
    if offsets and offsets[-1] > 0xFFFFFFFF:
        raise ValueError("encapsulated frames exceed the 4 GiB a Basic Offset Table can address")
    parts[0] = _ITEM.pack(0xFFFE, 0xE000, 4 * len(offsets)) + struct.pack(f"<{len(offsets)}I", *offsets)
    return b"".join(parts)


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element with a defined length."""
    if vr in (b"SQ", b"OB", b"UN"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _item(value: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(value)) + value


def _ds(value: float) -> bytes:
    text = f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    raw = text.encode()[:16]
    return raw + b" " * (len(raw) % 2)


def per_frame_groups(tiles: Sequence[SparseTile], grid: PixelGrid, tile: int) -> RawDataElement:
    """The Per-Frame Functional Groups Sequence (Plane Position (Slide) + Frame Content), pre-encoded.

    A sparse level has thousands of frames and building each item as pydicom Datasets costs about a
    second per slide; the items are fixed in shape, so they are packed here and pydicom writes them
    as they are (Explicit VR Little Endian, as every JPEG transfer syntax is). Reading them back parses
    them like any other sequence.
    """
    items = []
    for entry in tiles:
        column, row = entry.tile_column * tile, entry.tile_row * tile
        point = grid.pixel_to_slide(column, row)
        position = (
            _element(0x0040072A, b"DS", _ds(point.x_mm))
            + _element(0x0040073A, b"DS", _ds(point.y_mm))
            + _element(0x0040074A, b"DS", _ds(0.0))
            + _element(0x0048021E, b"SL", struct.pack("<i", column + 1))
            + _element(0x0048021F, b"SL", struct.pack("<i", row + 1))
        )
        content = _element(0x00209157, b"UL", struct.pack("<II", entry.tile_column + 1, entry.tile_row + 1))
        group = _element(0x00209111, b"SQ", _item(content)) + _element(0x0048021A, b"SQ", _item(position))
        items.append(_item(group))
    value = b"".join(items)
    return RawDataElement(Tag(_PER_FRAME), "SQ", len(value), value, 0, False, True)


def _sparse_level(
    tiles: list[SparseTile], grid: PixelGrid, context: SlideContext, *, tile: int, objective_power: float, number: int
) -> Dataset:
    ds = _base(
        context,
        grid,
        image_type=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
        tile=tile,
        objective_power=objective_power,
        number=number,
    )
    ds.DimensionOrganizationType = "TILED_SPARSE"
    ds[_PER_FRAME] = per_frame_groups(tiles, grid, tile)
    _pixels(ds, [item.jpeg for item in tiles], grid, tile)
    return ds
