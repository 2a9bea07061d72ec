"""Nucleated-cell masks as a BINARY Segmentation of the 40x level (PS3.3 A.51), TILED_SPARSE.

The SEG is a level of the slide's own pyramid: same Frame of Reference, same total pixel matrix
(size and origin) and the same 256-px tile grid as the WSI, so dicom-microscopy-viewer overlays it
(it rejects SEGs without TotalPixelMatrixRows/Columns or with another Frame of Reference). Only the
tiles that contain cells become frames, each with its Plane Position (Slide): the 40x matrix spans
the whole overview (tens of thousands of pixels square) and is never allocated. TILED_SPARSE with
per-frame positions is also what this dciodvfy build accepts (TILED_FULL gives 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy

import cv2
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from acquisition.wsi import LevelGeometry
from ai.dicom import codes
from ai.dicom.common import MANUFACTURER, MODEL_NAME, algorithm_identification, describe
from ai.dicom.regions import AlgorithmInfo, AnalysisRegion, SeriesSlot

SEGMENT_LABEL = "Nucleated cell"


def cell_masks(regions: Sequence[AnalysisRegion], geometry: LevelGeometry) -> dict[tuple[int, int], np.ndarray]:
    """Rasterise every cell into the level's tile grid: {(tile_row, tile_column): (rows, cols) uint8}.

    Regions are drawn one at a time (a FOV is ~3 MB), then cut into the tiles they touch; where
    regions overlap, masks are OR-ed. Tiles without a cell pixel are dropped.
    """
    th, tw = geometry.tile_rows, geometry.tile_columns
    tiles: dict[tuple[int, int], np.ndarray] = {}
    for region in regions:
        if not region.detections.cells:
            continue
        mask = np.zeros((region.height, region.width), dtype=np.uint8)
        for polygon in region.cell_polygons(geometry.pixel_size_um):
            # Back from corner-based image coordinates to pixel centres for the rasteriser.
            local = polygon - (region.column + 0.5, region.row + 0.5)
            cv2.fillPoly(mask, [np.round(local).astype(np.int32).reshape(-1, 1, 2)], 1)
        for tr in range(region.row // th, (region.row + region.height - 1) // th + 1):
            for tc in range(region.column // tw, (region.column + region.width - 1) // tw + 1):
                r0, c0 = max(tr * th, region.row), max(tc * tw, region.column)
                r1 = min((tr + 1) * th, region.row + region.height)
                c1 = min((tc + 1) * tw, region.column + region.width)
                block = mask[r0 - region.row : r1 - region.row, c0 - region.column : c1 - region.column]
                if not block.any():
                    continue
                tile = tiles.setdefault((tr, tc), np.zeros((th, tw), dtype=np.uint8))
                tile[r0 - tr * th : r1 - tr * th, c0 - tc * tw : c1 - tc * tw] |= block
    return {key: tiles[key] for key in sorted(tiles)}


def write_cell_segmentation(
    source: Dataset,
    regions: Sequence[AnalysisRegion],
    algorithm: AlgorithmInfo,
    *,
    series: SeriesSlot,
) -> hd.seg.Segmentation:
    """Write the nucleated-cell masks of the analysed regions as a BINARY, TILED_SPARSE SEG.

    Parameters
    ----------
    source: pydicom.Dataset
        The 40x TILED_SPARSE VL Whole Slide Microscopy instance the regions are in (pixel data need
        not be loaded).
    regions: Sequence[AnalysisRegion]
        The analysed rectangles with their cells.
    algorithm: AlgorithmInfo
        The segmentation algorithm (Segment Algorithm Name/Version, Algorithm Identification).
    series: SeriesSlot
        UID root, series and instance number of the new object.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG; raises ValueError when no region has a cell (a SEG needs at least one frame).
    """
    geometry = LevelGeometry.of(source)
    geometry.check_inside([(r.column, r.row, r.width, r.height) for r in regions], "region")
    tiles = cell_masks(regions, geometry)
    if not tiles:
        raise ValueError("no cell in any region: a Segmentation needs at least one non-empty frame")
    positions = [geometry.tile_position(tc * geometry.tile_columns, tr * geometry.tile_rows) for tr, tc in tiles]
    # Move the tiles into one array one by one, so that a 50-FOV slide holds one copy, not two.
    frames = np.empty((len(tiles), geometry.tile_rows, geometry.tile_columns), dtype=np.uint8)
    for index, key in enumerate(list(tiles)):
        frames[index] = tiles.pop(key)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.ANATOMICAL_STRUCTURE,
        segmented_property_type=codes.CELL,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(algorithm),
        tracking_uid=series.new_uid(),
        tracking_id="nucleated cells",
        primary_anatomic_structures=[codes.BONE_MARROW],
    )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        **series.identity(),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=f"{algorithm.name} {algorithm.version}"[:64],
        device_serial_number="none",
        plane_positions=positions,
        dimension_organization_type=hd.DimensionOrganizationTypeValues.TILED_SPARSE,
        content_label="CELLS",
        content_description=SEGMENT_LABEL,
        omit_empty_frames=False,
    )
    # highdicom sizes the matrix from the frames' extent and estimates its origin from them; the
    # SEG must be exactly a level of the slide's pyramid, so take both from the source.
    seg.TotalPixelMatrixRows = geometry.rows
    seg.TotalPixelMatrixColumns = geometry.columns
    seg.TotalPixelMatrixOriginSequence = deepcopy(source.TotalPixelMatrixOriginSequence)
    # General Image's Patient Orientation is Type 2C, required when there is no Image Orientation
    # (Patient); slide images have none, so it is present and empty (dciodvfy flags it missing).
    seg.PatientOrientation = ""
    describe(seg, "Nucleated cell segmentation", series)
    return seg
