"""Cell outlines and the AOI grid as Microscopy Bulk Simple Annotations (PS3.3 A.87), in 3D.

Coordinates are SCOORD3D in the slide's Frame of Reference (mm): dciodvfy accepts highdicom's 3D
output with no error (2D gives one) and Slim/DMV place 3D annotations on every pyramid level.
POLYGON vertices are an open ring (DMV rejects a repeated first point). One annotation group per
class; the class is the group's Annotated Property Type (see codes.py for why, and which codes).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from acquisition import CLASS_CODES, QUALITY_CLASSES
from acquisition.wsi import LevelGeometry
from ai.catalogue import UNIDENTIFIED
from ai.dicom import codes
from ai.dicom.common import MANUFACTURER, MODEL_NAME, algorithm_identification, describe
from ai.dicom.regions import AlgorithmInfo, AnalysisRegion, AoiTile, SeriesSlot

#: Group colours by lineage family, critical forms in warm saturated colours so they stand out.
_CLASS_COLOURS = {
    "BLA": "red", "APL": "orangered", "HAC": "magenta", "LYM": "deeppink", "TUM": "darkred",
    "ABE": "orange", "APC": "gold", "PMO": "lightskyblue", "MYB": "deepskyblue", "MMZ": "dodgerblue",
    "NGB": "royalblue", "NGS": "blue", "EOS": "sandybrown", "BAS": "purple", "MON": "slategray",
    "LYT": "limegreen", "PLM": "seagreen", "PEB": "darkcyan", "EBO": "teal", "MKC": "sienna",
    "MAC": "olive", "KSC": "silver", "NIF": "gray", UNIDENTIFIED: "yellow",
}  # fmt: skip
_QUALITY_COLOURS = {
    "optimal": "green", "acceptable": "yellowgreen", "too_dense": "orange", "too_sparse": "lightblue",
    "artefact": "red", "background": "lightgray",
}  # fmt: skip
_CELLS_WHAT = "Cell classes"
_AOI_WHAT = "AOI quality map"


def _class_key(code: str | None) -> str:
    return UNIDENTIFIED if code is None else code


def _group_order(present: set[str]) -> list[str]:
    """Catalogue order, then unknown codes, then the unidentified bin: stable group numbers."""
    known = [c for c in CLASS_CODES if c in present]
    others = sorted(present - set(CLASS_CODES) - {UNIDENTIFIED})
    return known + others + ([UNIDENTIFIED] if UNIDENTIFIED in present else [])


def write_cell_annotations(
    source: Dataset,
    regions: Sequence[AnalysisRegion],
    algorithm: AlgorithmInfo,
    *,
    series: SeriesSlot,
) -> hd.ann.MicroscopyBulkSimpleAnnotations:
    """Write every cell as a POLYGON in slide coordinates, one annotation group per class.

    Parameters
    ----------
    source: pydicom.Dataset
        The 40x VL Whole Slide Microscopy instance the regions are in.
    regions: Sequence[AnalysisRegion]
        The analysed rectangles with their cells (cells with class None go to the unidentified bin).
    algorithm: AlgorithmInfo
        The classification algorithm (it decides the groups).
    series: SeriesSlot
        UID root, series and instance number of the new object.

    Returns
    -------
    highdicom.ann.MicroscopyBulkSimpleAnnotations
        Measurements per cell: area (µm², SCT 42798000 Area) and class probability (UCUM 1).
    """
    geometry = LevelGeometry.of(source)
    geometry.check_inside([(r.column, r.row, r.width, r.height) for r in regions], "region")
    area_scale = geometry.pixel_size_um**2
    by_class: dict[str, tuple[list[np.ndarray], list[float], list[float]]] = {}
    for region in regions:
        scale = (region.detections.pixel_size_um / geometry.pixel_size_um) ** 2
        polygons = region.cell_polygons(geometry.pixel_size_um)
        for cell, polygon in zip(region.detections.cells, polygons, strict=True):
            graphics, areas, probabilities = by_class.setdefault(_class_key(cell.cell_class), ([], [], []))
            graphics.append(geometry.image_to_slide(polygon))
            areas.append(cell.area_px * scale * area_scale)
            probabilities.append(np.nan if cell.probability is None else float(cell.probability))
    if not by_class:
        raise ValueError("no cell in any region: an annotation object needs at least one annotation")
    identification = algorithm_identification(algorithm)
    groups = []
    for number, code in enumerate(_group_order(set(by_class)), start=1):
        graphics, areas, probabilities = by_class[code]
        groups.append(
            hd.ann.AnnotationGroup(
                number=number,
                uid=series.new_uid(),
                label=code,
                annotated_property_category=codes.ANATOMICAL_STRUCTURE,
                annotated_property_type=codes.cell_class(code),
                graphic_type=hd.ann.GraphicTypeValues.POLYGON,
                graphic_data=graphics,
                algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
                algorithm_identification=identification,
                measurements=[
                    hd.ann.Measurements(codes.AREA, np.array(areas, np.float32), codes.SQUARE_MICROMETER),
                    hd.ann.Measurements(codes.CLASS_PROBABILITY, np.array(probabilities, np.float32), codes.NO_UNITS),
                ],
                description=f"{codes.class_name(code)} - {len(graphics)} cells"[:64],
                display_color=hd.color.CIELabColor.from_string(_CLASS_COLOURS.get(code, "white")),
            )
        )
    return _annotations(source, groups, algorithm, _CELLS_WHAT, series)


def write_aoi_annotations(
    overview_source: Dataset,
    tiles: Sequence[AoiTile],
    algorithm: AlgorithmInfo,
    *,
    series: SeriesSlot,
) -> hd.ann.MicroscopyBulkSimpleAnnotations:
    """Write the AOI grid: each tile a 4-point POLYGON, one group per quality class, with its score.

    Parameters
    ----------
    overview_source: pydicom.Dataset
        The overview's base level (VL WSI, TILED_FULL) the tiles were cut from.
    tiles: Sequence[AoiTile]
        Grid tiles in overview pixels with quality class and score.
    algorithm: AlgorithmInfo
        The AOI classifier.
    series: SeriesSlot
        UID root, series and instance number of the new object.
    """
    geometry = LevelGeometry.of(overview_source)
    geometry.check_inside([(t.column, t.row, t.width, t.height) for t in tiles], "AOI tile")
    groups = []
    for name in QUALITY_CLASSES:
        members = [t for t in tiles if t.quality_class == name]
        if not members:
            continue
        groups.append(
            hd.ann.AnnotationGroup(
                number=len(groups) + 1,
                uid=series.new_uid(),
                label=name,
                annotated_property_category=codes.SPATIAL_AND_RELATIONAL_CONCEPT,
                annotated_property_type=codes.quality_class(name),
                graphic_type=hd.ann.GraphicTypeValues.POLYGON,
                graphic_data=[geometry.image_to_slide(t.corners()) for t in members],
                algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_identification(algorithm),
                measurements=[
                    hd.ann.Measurements(
                        codes.QUALITY_SCORE, np.array([t.score for t in members], np.float32), codes.NO_UNITS
                    )
                ],
                description=f"AOI grid tiles: {name}",
                display_color=hd.color.CIELabColor.from_string(_QUALITY_COLOURS[name]),
            )
        )
    if not groups:
        raise ValueError("no AOI tiles: an annotation object needs at least one annotation")
    return _annotations(overview_source, groups, algorithm, _AOI_WHAT, series)


def _annotations(
    source: Dataset,
    groups: list[hd.ann.AnnotationGroup],
    algorithm: AlgorithmInfo,
    what: str,
    series: SeriesSlot,
) -> hd.ann.MicroscopyBulkSimpleAnnotations:
    ann = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source],
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD3D,
        annotation_groups=groups,
        **series.identity(),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=f"{algorithm.name} {algorithm.version}"[:64],
        device_serial_number="none",
        content_label="AOI" if what == _AOI_WHAT else "CELLS",
        content_description=what,
    )
    describe(ann, what, series)
    codes.declare_scheme(ann)
    return ann
