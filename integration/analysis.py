"""Slide analysis: a stored scan in, AI results (AOI ANN, SEG, cell ANN, TID 1500 SR) stored back.

The steps follow the data: the Store gives the overview and the captured 40x regions
(`dicom_store.slides`), `ai` finds and classifies cells on numpy arrays, `ai.dicom` turns
typed results into DICOM, and everything is stored only when every object was built, so a failed run
leaves nothing behind. Each run is a new series (a new algorithm run), never an overwrite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import numpy as np

from ai.results import Cell, CellDetections, Differential
from dicom_store import Store
from dicom_store.slides import Region, StoredSlide

log = logging.getLogger(__name__)

#: A 40x FOV's footprint on the overview is the AOI grid tile.
FOV_SIZE_PX = (2048, 1496)
REGION_BATCH = 4


@dataclass
class AnalysisModels:
    """The three networks, loaded once per process (a worker keeps them)."""

    segmenter: object
    classifier: object
    aoi: object | None = None

    @classmethod
    def load(
        cls, seg: Path | str | None = None, cls_: Path | str | None = None, aoi: Path | str | None = None
    ) -> AnalysisModels:
        from ai import AoiModel, CellClassifier, CellSegmenter
        from ai.models import ModelError

        try:
            aoi_model = AoiModel.load(aoi)
        except ModelError as exc:
            log.warning("no AOI model, the AOI map is skipped: %s", exc)
            aoi_model = None
        return cls(CellSegmenter.load(seg), CellClassifier.load(cls_), aoi_model)

    @property
    def algorithm_version(self) -> str:
        cards = [m.card for m in (self.segmenter, self.classifier) if hasattr(m, "card")]
        return "+".join(f"{c.kind}:{c.arch}" for c in cards) or "unknown"


@dataclass
class RegionResult:
    region: Region
    detections: CellDetections


@dataclass
class SlideAnalysis:
    """What the networks found on one slide, before anything is written."""

    slide: StoredSlide
    pixel_size_um: float
    regions: list[RegionResult]
    differential: Differential
    aoi_tiles: list[tuple[int, int, int, int, str, float]] = field(default_factory=list)

    @property
    def cell_count(self) -> int:
        return sum(len(r.detections) for r in self.regions)


def pixel_size_um(header) -> float:  # type: ignore[no-untyped-def]
    """The 40x level's pixel size in µm from its shared Pixel Measures."""
    spacing = header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    return float(spacing[0]) * 1000.0


#: The largest window analysed at once, pixels a side. An island of adjacent FOVs (a scan list clusters
#: them) can span 12,000 x 32,000 px, mostly background between the FOVs: analysed whole it took 18 GiB
#: at its peak and 2.5 times the pixels that were captured. Windows of this size bound the memory and
#: skip what was not captured.
WINDOW_SIDE = 4096
#: How far windows reach past their core: more than the radius of the largest cell at 40x (~250 px
#: across), so a cell whose centre lies in a window's core lies whole in that window.
WINDOW_MARGIN = 256


@dataclass(frozen=True)
class Window:
    """A rectangle analysed at once: `region` is what is read (core + margin, within the island); cells
    count in this window when their centre lies in `core` (region-local x0, y0, x1, y1) on a captured tile."""

    region: Region
    core: tuple[int, int, int, int]

    def owns(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.core
        return x0 <= x < x1 and y0 <= y < y1 and self.region.covers(x, y)


def analysis_windows(regions: list[Region], side: int = WINDOW_SIDE, margin: int = WINDOW_MARGIN) -> list[Window]:
    """The windows that cover the captured tiles of every region, cores tiling each region without overlap.

    A region that fits in one window is one window. Cores are whole tiles; a window whose core holds no
    captured tile is left out (its margins belong to neighbours that are analysed).
    """
    windows = []
    for region in regions:
        if region.width <= side and region.height <= side:
            windows.append(Window(region, (0, 0, region.width, region.height)))
            continue
        size = region.tile_size
        step = max(size, (side - 2 * margin) // size * size)
        for top in range(0, region.height, step):
            for left in range(0, region.width, step):
                core = (left, top, min(left + step, region.width), min(top + step, region.height))
                x0, y0 = max(0, core[0] - margin), max(0, core[1] - margin)
                x1, y1 = min(region.width, core[2] + margin), min(region.height, core[3] + margin)
                column, row = region.column + x0, region.row + y0
                inside = frozenset(
                    (r, c) for r, c in region.tiles
                    if column <= c * size < region.column + x1 and row <= r * size < region.row + y1
                )  # fmt: skip
                in_core = any(
                    region.column + core[0] <= c * size < region.column + core[2]
                    and region.row + core[1] <= r * size < region.row + core[3]
                    for r, c in inside
                )
                if not in_core:
                    continue
                window = Region(column=column, row=row, width=x1 - x0, height=y1 - y0, tiles=inside, tile_size=size)
                windows.append(Window(window, (core[0] - x0, core[1] - y0, core[2] - x0, core[3] - y0)))
    return windows


def find_cells(
    slide: StoredSlide,
    models: AnalysisModels,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[RegionResult], float]:
    """Segment and classify every captured window (`analysis_windows`); each tile decoded once per window
    that reads it, windows batched. `progress` is told each batch's number of windows."""
    header = slide.header()
    px = pixel_size_um(header)
    positions = slide.tile_positions()
    windows = analysis_windows(slide.regions())
    results: list[RegionResult] = []
    for start in range(0, len(windows), REGION_BATCH):
        batch = windows[start : start + REGION_BATCH]
        images = [slide.read_region(window.region, positions) for window in batch]
        detections = models.segmenter.segment(images, px)  # type: ignore[attr-defined]
        for window, found in zip(batch, detections, strict=True):
            found.cells = [cell for cell in found.cells if window.owns(*_centre(cell))]
        models.classifier.classify_cells(images, detections)  # type: ignore[attr-defined]
        results.extend(RegionResult(w.region, found) for w, found in zip(batch, detections, strict=True))
        if progress:
            progress(len(batch))
    return results, px


def _centre(cell: Cell) -> tuple[float, float]:
    x0, y0, x1, y1 = cell.bbox
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def score_overview(slide: StoredSlide, models: AnalysisModels, fov_pixel_size_um: float):  # type: ignore[no-untyped-def]
    """AOI quality of every grid tile of the overview: (column, row, width, height, class, score)."""
    if models.aoi is None or slide.overview is None:
        return []
    from ai.inference import grid_tiles

    overview = slide.overview_image()
    header = slide.header(slide.overview)
    overview_px = pixel_size_um(header)
    tile_w = max(1, round(FOV_SIZE_PX[0] * fov_pixel_size_um / overview_px))
    tile_h = max(1, round(FOV_SIZE_PX[1] * fov_pixel_size_um / overview_px))
    tiles, where = grid_tiles(overview, tile_h, tile_w)
    if not tiles:
        return []
    probabilities = models.aoi.score_tiles(tiles)  # type: ignore[attr-defined]
    classes = list(models.aoi.card.classes)  # type: ignore[attr-defined]
    good = models.aoi.good_score(probabilities)  # type: ignore[attr-defined]
    out = []
    for (row, column), probs, score in zip(where, probabilities, good, strict=True):
        out.append((column * tile_w, row * tile_h, tile_w, tile_h, classes[int(np.argmax(probs))], float(score)))
    return out


def analyze_slide(
    store: Store,
    study_instance_uid: str,
    models: AnalysisModels,
    *,
    progress: Callable[[int], None] | None = None,
) -> SlideAnalysis:
    slide = StoredSlide.find(store, study_instance_uid)
    regions, px = find_cells(slide, models, progress=progress)
    differential = Differential.from_detections(r.detections for r in regions)
    aoi = score_overview(slide, models, px)
    return SlideAnalysis(slide=slide, pixel_size_um=px, regions=regions, differential=differential, aoi_tiles=aoi)


# ---- writing the results --------------------------------------------------------------------------------

ALGORITHM_NAME = "marrowlink BM differential"


def algorithm_info(models: AnalysisModels):  # type: ignore[no-untyped-def]
    """One Algorithm Identification for the segmentation + classification pair.

    DICOM identifies one algorithm by one version and weights hash; the pair's hash is the SHA-256 of
    both models' weight hashes, and each model's own hash is kept as a parameter.
    """
    import hashlib
    from importlib.metadata import version

    from ai.dicom import AlgorithmInfo

    seg_card, cls_card = models.segmenter.card, models.classifier.card  # type: ignore[attr-defined]
    combined = hashlib.sha256(f"{seg_card.weights_sha256}:{cls_card.weights_sha256}".encode()).hexdigest()
    return AlgorithmInfo(
        name=ALGORITHM_NAME,
        version=f"{version('marrowlink')} ({models.algorithm_version})",
        weights_sha256=combined,
        parameters={
            "segmentation_weights_sha256": seg_card.weights_sha256,
            "classification_weights_sha256": cls_card.weights_sha256,
            "confidence_threshold": models.classifier.confidence_threshold,  # type: ignore[attr-defined]
            **{f"seg_{k}": v for k, v in seg_card.thresholds.items()},
        },
    )


@dataclass(frozen=True)
class RunUids:
    """The series and instance UIDs of one run, derived from a job's key: a retry of the job makes the
    same objects, so what a killed attempt stored can be recognised (and is never stored twice)."""

    seg_series: str
    seg: str
    ann_series: str
    ann: str
    aoi: str
    sr_series: str
    sr: str

    @classmethod
    def derive(cls, uid_root: str, run_key: str) -> RunUids:
        from pydicom.uid import generate_uid

        def uid(part: str) -> str:
            return generate_uid(uid_root, entropy_srcs=["marrowlink-run", run_key, part])

        return cls(*(uid(name) for name in ("seg-series", "seg", "ann-series", "ann", "aoi", "sr-series", "sr")))

    @property
    def series(self) -> tuple[str, ...]:
        return (self.seg_series, self.ann_series, self.sr_series)


def next_series_number(store: Store, study_instance_uid: str, *, ignore: tuple[str, ...] = ()) -> int:
    numbers = []
    for ds in store.search("SERIES", [("StudyInstanceUID", study_instance_uid)]):
        if str(ds.get("SeriesInstanceUID", "")) in ignore:
            continue
        try:
            numbers.append(int(ds.get("SeriesNumber", 0) or 0))
        except (TypeError, ValueError):
            continue
    return max(numbers, default=0) + 1


def result_objects(  # type: ignore[no-untyped-def]
    store: Store, analysis: SlideAnalysis, algorithm, *, uid_root: str, zone: tzinfo = UTC, uids: RunUids | None = None
) -> list:
    """SEG, cell ANN (+ AOI ANN in the same series) and the preliminary SR, built in memory.

    All of one run carry the same content date/time, on the site's clock (`zone`); with `uids` their
    UIDs are the run's derived ones, else new.
    """
    from ai.dicom import (
        AnalysisRegion,
        AoiTile,
        SeriesSlot,
        write_aoi_annotations,
        write_cell_annotations,
        write_cell_segmentation,
        write_differential_report,
    )

    source = analysis.slide.header()
    made = datetime.now(UTC)

    def slot(number: int, series_uid: str | None = None, instance: int = 1, sop_uid: str | None = None) -> SeriesSlot:
        return SeriesSlot(uid_root, number, series_uid, sop_uid, instance_number=instance, zone=zone, created=made)

    first = next_series_number(store, str(source.StudyInstanceUID), ignore=uids.series if uids else ())
    regions = [
        AnalysisRegion(r.region.column, r.region.row, r.region.width, r.region.height, r.detections)
        for r in analysis.regions
    ]
    objects = []
    seg = ann = aoi = None
    if analysis.cell_count:
        # SEG and ANN need at least one cell; a slide without cells still gets its (empty) SR.
        seg = write_cell_segmentation(
            source, regions, algorithm, series=slot(first, *((uids.seg_series, 1, uids.seg) if uids else ()))
        )
        ann = write_cell_annotations(
            source, regions, algorithm, series=slot(first + 1, *((uids.ann_series, 1, uids.ann) if uids else ()))
        )
        objects += [seg, ann]
    if analysis.aoi_tiles and analysis.slide.overview is not None:
        tiles = [AoiTile(*tile) for tile in analysis.aoi_tiles]
        overview = analysis.slide.header(analysis.slide.overview)
        aoi = write_aoi_annotations(
            overview,
            tiles,
            algorithm,
            series=slot(
                first + 1,
                str(ann.SeriesInstanceUID) if ann is not None else (uids.ann_series if uids else None),
                instance=2,
                sop_uid=uids.aoi if uids else None,
            ),
        )
        objects.append(aoi)
    sr = write_differential_report(
        source=source,
        seg=seg,
        ann=ann,
        differential=analysis.differential,
        algorithm=algorithm,
        regions=regions,
        series=slot(first + 2, *((uids.sr_series, 1, uids.sr) if uids else ())),
        status="preliminary",
        evidence=[aoi] if aoi is not None else (),
    )
    objects.append(sr)
    return objects


@dataclass
class AnalysisRun:
    study_instance_uid: str
    accession_number: str
    container_identifier: str
    stored: list[str]
    sr_instance_uid: str
    differential: Differential
    cells: int
    regions: int
    algorithm_name: str
    algorithm_version: str
    #: What the networks found, kept for the review (integration.workflow records the cells).
    analysis: SlideAnalysis | None = None
    algorithm: object | None = None  # ai.dicom.AlgorithmInfo
    seg_instance_uid: str = ""
    ann_instance_uid: str = ""
    aoi_instance_uid: str = ""
    outbox_id: int | None = None  # the preliminary ORU, once queued
    #: The classifier's classes, in the order of each cell's `probabilities`.
    classes: list[str] = field(default_factory=list)


def run_analysis(
    store: Store,
    study_instance_uid: str,
    models: AnalysisModels,
    *,
    uid_root: str,
    zone: tzinfo = UTC,
    progress: Callable[[int], None] | None = None,
    uids: RunUids | None = None,
) -> AnalysisRun:
    """Analyse a stored slide and store its results (a new series set per run, all or nothing)."""
    analysis = analyze_slide(store, study_instance_uid, models, progress=progress)
    algorithm = algorithm_info(models)
    objects = result_objects(store, analysis, algorithm, uid_root=uid_root, zone=zone, uids=uids)
    stored = [item.sop_instance_uid for item in store.store_datasets(objects)]
    header = analysis.slide.header()
    by_kind = _uids_by_kind(objects)
    return AnalysisRun(
        study_instance_uid=study_instance_uid,
        accession_number=str(header.get("AccessionNumber", "")),
        container_identifier=str(header.get("ContainerIdentifier", "")),
        stored=stored,
        sr_instance_uid=str(objects[-1].SOPInstanceUID),
        differential=analysis.differential,
        cells=analysis.cell_count,
        regions=len(analysis.regions),
        algorithm_name=algorithm.name,
        algorithm_version=algorithm.version,
        analysis=analysis,
        algorithm=algorithm,
        seg_instance_uid=by_kind.get("SEG", ""),
        ann_instance_uid=by_kind.get("CELLS", ""),
        aoi_instance_uid=by_kind.get("AOI", ""),
        classes=list(getattr(getattr(models.classifier, "card", None), "classes", []) or []),
    )


def _uids_by_kind(objects: list) -> dict[str, str]:  # type: ignore[type-arg]
    """SOP Instance UIDs of a run's SEG, cell ANN and AOI ANN (told apart by Modality and Content Label)."""
    out = {}
    for ds in objects:
        if ds.Modality == "SEG":
            out["SEG"] = str(ds.SOPInstanceUID)
        elif ds.Modality == "ANN":
            out[str(ds.get("ContentLabel", ""))] = str(ds.SOPInstanceUID)
    return out
