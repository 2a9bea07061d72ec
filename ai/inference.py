"""Batched inference on numpy arrays, the API the pipeline uses (one loaded model per worker process).

seg = CellSegmenter.load()            # ai/weights/seg, or a folder
detections = seg.segment(fovs, pixel_size_um=0.086)
analyze_fovs(fovs, 0.086)             # segmentation + classification, class codes from the card
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ai.catalogue import GOOD_QUALITY, UNIDENTIFIED
from ai.cell_rules import DUPLICATE_SCORE_RATIO, STAR_EVIDENCE, SWEEP_EVIDENCE, apply_cell_rules
from ai.models import ModelCard, load_model
from ai.postprocess import instances_from_maps, polygons
from ai.results import Cell, CellDetections

#: Pixel sizes (µm per pixel) that images may have: each network resamples them to its own card's scale.
#: Measured with the shipped models on 20 held-out simulator FOVs resampled to 0.05, 0.086 and 0.25 µm/px:
#: whole-outline F-beta 0.946 / 0.948 / 0.948, class agreement with the truth 0.569 / 0.570 / 0.570. Coarser
#: images would have to be enlarged for the classifier (its crops are at 0.23 µm/px), inventing detail;
#: finer ones are beyond what a light microscope resolves and only cost time.
SUPPORTED_PIXEL_SIZE_UM: tuple[float, float] = (0.05, 0.25)


def _predict(model, batch: np.ndarray, batch_size: int) -> np.ndarray:
    out = []
    for i in range(0, len(batch), batch_size):
        out.append(np.asarray(model(batch[i : i + batch_size].astype(np.float32), training=False)))
    return np.concatenate(out) if out else np.zeros((0, *model.output_shape[1:]), np.float32)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def predict_maps(model, images: Sequence[np.ndarray], tile: int, overlap: int, multiple: int, batch_size: int = 4):
    """Per-pixel outputs for images of any size: padded to `multiple`, tiled with overlap, averaged."""
    jobs, tiles = [], []
    padded_shapes = []
    for n, image in enumerate(images):
        h, w = image.shape[:2]
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        pad = cv2.copyMakeBorder(image, 0, ph - h, 0, pw - w, cv2.BORDER_REFLECT_101)
        padded_shapes.append((ph, pw))
        th, tw = min(tile, ph), min(tile, pw)
        for y in tile_origins(ph, th, overlap):
            for x in tile_origins(pw, tw, overlap):
                jobs.append((n, y, x, th, tw))
                tiles.append(pad[y : y + th, x : x + tw])
    outputs: list[np.ndarray] = [None] * len(tiles)  # type: ignore[list-item]
    by_shape: dict[tuple[int, int], list[int]] = {}
    for k, t in enumerate(tiles):
        by_shape.setdefault(t.shape[:2], []).append(k)
    for idx in by_shape.values():
        pred = _predict(model, np.stack([tiles[k] for k in idx]), batch_size)
        for k, p in zip(idx, pred, strict=True):
            outputs[k] = p
    channels = outputs[0].shape[-1] if outputs else 1
    sums = [np.zeros((*s, channels), np.float32) for s in padded_shapes]
    weights = [np.zeros(s, np.float32) for s in padded_shapes]
    for (n, y, x, th, tw), p in zip(jobs, outputs, strict=True):
        sums[n][y : y + th, x : x + tw] += p
        weights[n][y : y + th, x : x + tw] += 1
    return [(s / w[..., None])[: im.shape[0], : im.shape[1]] for s, w, im in zip(sums, weights, images, strict=True)]


@dataclass
class CellSegmenter:
    """Nucleated-cell segmentation: FOV -> one polygon per cell (cell-level post-processing)."""

    model: object
    card: ModelCard
    tile: int = 512
    overlap: int = 48

    @classmethod
    def load(cls, folder: Path | str | None = None) -> CellSegmenter:
        model, card = load_model(folder, "seg")
        return cls(model, card, tile=int(card.thresholds.get("tile", 512)))

    @property
    def source_pixel_size_um(self) -> float:
        return float(self.card.training.get("source_pixel_size_um", self.card.pixel_size_um))

    def working_images(self, fovs: Sequence[np.ndarray], pixel_size_um: float) -> tuple[list[np.ndarray], float]:
        scale = pixel_size_um / self.card.pixel_size_um
        out = []
        for fov in fovs:
            h, w = fov.shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            out.append(cv2.resize(np.ascontiguousarray(fov[..., :3]), size, interpolation=interp))
        return out, scale

    def probability_maps(self, fovs: Sequence[np.ndarray], pixel_size_um: float | None = None) -> list[np.ndarray]:
        small, _ = self.working_images(fovs, pixel_size_um or self.source_pixel_size_um)
        return predict_maps(self.model, small, self.tile, self.overlap, multiple=32)

    def instances(self, maps: np.ndarray, **overrides: float) -> np.ndarray:
        """Instance ids at working scale from one FOV's (h, w, 2) map, with the card's thresholds."""
        t = {**self.card.thresholds, **overrides}
        area = self.card.pixel_size_um**2
        return instances_from_maps(
            maps[..., 0],
            maps[..., 1] if maps.shape[-1] > 1 else None,
            threshold=float(t.get("foreground", 0.5)),
            centre_threshold=float(t.get("centre", 0.3)),
            seed_distance=max(2, round(float(t.get("seed_distance_um", 2.0)) / self.card.pixel_size_um)),
            min_area=float(t.get("min_area_um2", 10.0)) / area,
            max_area=float(t["max_area_um2"]) / area if t.get("max_area_um2") else None,
        )

    def detections(self, labels: np.ndarray, fov_shape: tuple[int, int], pixel_size_um: float) -> CellDetections:
        scale = self.card.pixel_size_um / pixel_size_um
        return self._cells([(p, a, 1.0) for p, a in polygons(labels, scale=scale)], fov_shape, pixel_size_um)

    @property
    def overlapping(self) -> bool:
        """Star-convex cell networks (`ai.star`) give every cell its whole outline: cells may overlap."""
        from ai.star import is_star_arch

        return is_star_arch(self.card.arch)

    def star_cells(self, maps: np.ndarray, fov_shape: tuple[int, int], pixel_size_um: float,
                   **overrides: float) -> CellDetections:  # fmt: skip
        """Cells from one FOV's star-network maps (`ai.star.star_instances`), with the card's thresholds."""
        from ai.star import star_instances

        return self.star_detections(star_instances(maps, **self.star_parameters(**overrides)), fov_shape, pixel_size_um)

    def star_parameters(self, **overrides: float) -> dict:
        """The card's star thresholds (with `overrides`) in working pixels: `ai.star.star_instances`' keywords."""
        t = {**self.card.thresholds, **overrides}
        area = self.card.pixel_size_um**2
        return {
            "centre_threshold": float(t.get("centre", 0.5)),
            "seed_distance": max(1, round(float(t.get("seed_distance_um", 1.0)) / self.card.pixel_size_um)),
            "nms_iou": float(t.get("nms_iou", 0.5)),
            "min_area": float(t.get("min_area_um2", 10.0)) / area,
            "max_area": float(t["max_area_um2"]) / area if t.get("max_area_um2") else None,
        }

    def star_detections(self, proposals, fov_shape: tuple[int, int], pixel_size_um: float) -> CellDetections:
        """Star cells or proposals (`ai.star`: polygon and score first, working pixels) as cells in the FOV's
        own pixels."""
        scale = self.card.pixel_size_um / pixel_size_um
        return self._cells([((p + 0.5) * scale - 0.5, float(_polygon_area(p)) * scale * scale, s)
                            for p, s, *_ in proposals], fov_shape, pixel_size_um)  # fmt: skip

    def _cells(self, found, fov_shape: tuple[int, int], pixel_size_um: float) -> CellDetections:
        h, w = fov_shape
        cells = []
        for poly, area, score in found:
            poly[:, 0] = np.clip(poly[:, 0], 0, w - 1)
            poly[:, 1] = np.clip(poly[:, 1], 0, h - 1)
            x0, y0 = np.floor(poly.min(axis=0)).astype(int)
            x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
            cells.append(Cell(polygon=poly, bbox=(int(x0), int(y0), int(x1), int(y1)), area_px=area,
                              detection_score=score))  # fmt: skip
        return CellDetections(cells=cells, image_shape=(h, w), pixel_size_um=pixel_size_um)

    def segment(self, fovs: Sequence[np.ndarray], pixel_size_um: float | None = None) -> list[CellDetections]:
        px = pixel_size_um or self.source_pixel_size_um
        maps = self.probability_maps(fovs, px)
        return [self.cells(m, f.shape[:2], px) for m, f in zip(maps, fovs, strict=True)]

    def cells(self, maps: np.ndarray, fov_shape: tuple[int, int], pixel_size_um: float) -> CellDetections:
        """One FOV's cells from its maps, as `segment` returns them: decoded with the card's thresholds, then
        the detector rules (`ai.cell_rules`: one detection per cell, cells cut by the edge flagged), so that
        `detect`, the slide analysis and `evaluate` count the same cells. The rules judge outlines by where
        the network itself sees cell: a star network's centre map, a label network's foreground."""
        t = self.card.thresholds
        if self.overlapping:
            found = self.star_cells(maps, fov_shape, pixel_size_um)
            evidence = maps[..., 0] >= STAR_EVIDENCE
        else:
            found = self.detections(self.instances(maps), fov_shape, pixel_size_um)
            evidence = maps[..., 0] >= float(t.get("foreground", 0.5))
        return apply_cell_rules(
            found,
            evidence,
            self.card.pixel_size_um / pixel_size_um,
            duplicate_score_ratio=float(t.get("duplicate_score_ratio", DUPLICATE_SCORE_RATIO)),
            sweep_evidence=float(t.get("sweep_evidence", SWEEP_EVIDENCE)),
        )


def _polygon_area(poly: np.ndarray) -> float:
    return float(abs(cv2.contourArea(poly.astype(np.float32))))


def extract_crops(fov: np.ndarray, cells: Sequence[Cell], side_px: int, out_size: int) -> np.ndarray:
    """Square crops centred on each cell's bbox centre, `side_px` FOV pixels wide, resized to `out_size`."""
    pad = side_px
    padded = cv2.copyMakeBorder(np.ascontiguousarray(fov[..., :3]), pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    crops = np.zeros((len(cells), out_size, out_size, 3), np.uint8)
    for i, cell in enumerate(cells):
        x0, y0, x1, y1 = cell.bbox
        cx, cy = (x0 + x1) // 2 + pad, (y0 + y1) // 2 + pad
        half = side_px // 2
        crop = padded[cy - half : cy - half + side_px, cx - half : cx - half + side_px]
        interp = cv2.INTER_AREA if side_px > out_size else cv2.INTER_LINEAR
        crops[i] = cv2.resize(crop, (out_size, out_size), interpolation=interp)
    return crops


@dataclass
class CellClassifier:
    """23-class cell classification of crops; codes come from the model card."""

    model: object
    card: ModelCard

    @classmethod
    def load(cls, folder: Path | str | None = None) -> CellClassifier:
        model, card = load_model(folder, "cls")
        return cls(model, card)

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def confidence_threshold(self) -> float:
        return float(self.card.thresholds.get("confidence", 0.0))

    def classify(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Softmax probabilities (n, classes) for uint8 crops of any square size (resized to the input)."""
        s = self.card.input_size
        if len(crops) and crops.shape[1:3] != (s, s):
            crops = np.stack([cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA) for c in crops])
        return _predict(self.model, np.asarray(crops), batch_size)

    def labels(self, probabilities: np.ndarray) -> list[str]:
        """Class codes, UNIDENTIFIED where the top probability is below the card's confidence threshold."""
        top = probabilities.argmax(axis=1)
        conf = probabilities.max(axis=1)
        return [
            self.classes[k] if c >= self.confidence_threshold else UNIDENTIFIED for k, c in zip(top, conf, strict=False)
        ]

    def classify_cells(self, fovs: Sequence[np.ndarray], detections: Sequence[CellDetections]) -> None:
        """Fill class, probability and probabilities into every cell, batching crops across FOVs."""
        crops = []
        for fov, det in zip(fovs, detections, strict=True):
            side = max(8, round(self.card.input_size * self.card.pixel_size_um / det.pixel_size_um))
            crops.append(extract_crops(fov, det.cells, side, self.card.input_size))
        if not crops or not sum(len(c) for c in crops):
            return
        probs = self.classify(np.concatenate(crops))
        codes = self.labels(probs)
        k = 0
        for det in detections:
            for cell in det.cells:
                cell.probabilities = probs[k]
                cell.probability = float(probs[k].max())
                cell.cell_class = codes[k]
                k += 1


@dataclass
class AoiModel:
    """Quality of overview grid tiles and the ranked top-N 40x positions."""

    model: object
    card: ModelCard

    @classmethod
    def load(cls, folder: Path | str | None = None) -> AoiModel:
        model, card = load_model(folder, "aoi")
        return cls(model, card)

    def score_tiles(self, tiles: Sequence[np.ndarray], batch_size: int = 128) -> np.ndarray:
        s = self.card.input_size
        batch = np.stack([cv2.resize(np.ascontiguousarray(t[..., :3]), (s, s), interpolation=cv2.INTER_AREA)
                          for t in tiles]) if len(tiles) else np.zeros((0, s, s, 3), np.uint8)  # fmt: skip
        return _predict(self.model, batch, batch_size)

    def good_score(self, probabilities: np.ndarray) -> np.ndarray:
        """Ranking score: P(optimal) + 0.5 P(acceptable), so optimal tiles come first among good ones."""
        idx = {c: i for i, c in enumerate(self.card.classes)}
        w = float(self.card.thresholds.get("acceptable_weight", 0.5))
        return probabilities[:, idx[GOOD_QUALITY[0]]] + w * probabilities[:, idx[GOOD_QUALITY[1]]]

    def top_positions(self, tiles: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the n best tiles (grid tiles never overlap) and all tiles' probabilities."""
        probs = self.score_tiles(tiles)
        return np.argsort(-self.good_score(probs), kind="stable")[:n], probs


def grid_tiles(overview: np.ndarray, tile_h: int, tile_w: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Cut an overview into whole grid tiles (row-major); returns tiles and their (row, col)."""
    tiles, where = [], []
    for r in range(overview.shape[0] // tile_h):
        for c in range(overview.shape[1] // tile_w):
            tiles.append(overview[r * tile_h : (r + 1) * tile_h, c * tile_w : (c + 1) * tile_w])
            where.append((r, c))
    return tiles, where


def analyze_fovs(
    fovs: Sequence[np.ndarray],
    pixel_size_um: float,
    segmenter: CellSegmenter | None = None,
    classifier: CellClassifier | None = None,
) -> list[CellDetections]:
    """Segmentation then classification of FOVs (uint8 RGB) at `pixel_size_um`; default shipped models."""
    segmenter = segmenter or CellSegmenter.load()
    classifier = classifier or CellClassifier.load()
    detections = segmenter.segment(fovs, pixel_size_um)
    classifier.classify_cells(fovs, detections)
    return detections
