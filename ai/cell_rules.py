"""Detector rules applied to every detection result: one detection per cell, cells cut by the edge flagged.

Why (issue #19): on real stained smear photos the shipped star network found every nucleated cell, but
reported 168 outlines for 71 cells: 44 fragments of cells cut by the image edge, 20 second, larger outlines
around a cell already found plus its neighbouring red cells, ~20 duplicates inside a cell's own outline and
11 on red cells or background. A reviewer counts each cell once and skips cells cut by the field's edge;
these rules make the detector's output mean the same, so that counts built on it can be compared.

Two outlines *conflict* when one holds the other's centre or covers more than half of it. A conflict is not
always one cell seen twice: in a marrow smear cells lie on each other, and a cell partly under another is
still wholly outlined (ai.star). Measured on held-out simulator FOVs (seeds 1:21, 40 FOVs, the shipped
network): of 669 conflicting pairs, 426 were two different true cells, each found; keeping one outline of
every conflicting pair lost a tenth of the cells (whole-outline sensitivity 0.935 -> 0.835 keeping the
higher score, 0.800 keeping the smaller outline). So a conflict is resolved only where the network's own
output says that one side is not a cell of its own:

- a *sweep*: an outline at least half of whose pixels lie outside the detections it contains (their
  centre inside it, more than half of them covered), and where fewer than `SWEEP_EVIDENCE` of those
  outside pixels are cell in the network's map (star networks: centre >= `STAR_EVIDENCE`; label networks:
  foreground >= their threshold). That is an outline around a cell plus red cells or background: it is
  dropped, the cells it contains stay. A true large cell with a small one lying on it is cell all over.
- a *weak duplicate*: of two conflicting outlines, the one whose score (its centre-map peak) is at most
  `DUPLICATE_SCORE_RATIO` of the other's. The star target gives every cell, one lying on another too, its
  own peak of 1 (ai.star.star_targets), so a second peak inside a cell's outline that reaches under a
  third of that cell's is the same cell's texture. (Two different true cells in conflict: weaker/stronger
  score median 0.91, 10th percentile 0.66, at most 0.3 in 1 of 426.) Label networks score every cell 1
  and their cells cannot overlap: this never fires.

Anything else stays (recall first): a detection is only removed where another detection that stays
covers it. Both thresholds are the strictest tried on the simulator data above that lost no cell there
(12 outlines dropped; sensitivity 0.935 unchanged, precision 0.929 -> 0.933); the simulator has few
sweeps and duplicates, so a model card may set others (`duplicate_score_ratio`, `sweep_evidence` in its
thresholds) once real photos with truth are at hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ai.results import Cell, CellDetections
from ai.star import polygon_mask

DUPLICATE_SCORE_RATIO = 0.3
SWEEP_EVIDENCE = 0.4
SWEEP_OUTSIDE_SHARE = 0.5  # a sweep has at least this share of its pixels outside the cells it contains
STAR_EVIDENCE = 0.05  # centre map: 70 % of simulated nucleated-cell pixels reach it, 0.2 % of red-cell pixels
BORDER_MARGIN_PX = 2.0

Mask = tuple[int, int, np.ndarray]  # x0, y0, bool mask in its bounding box


def apply_cell_rules(
    detections: CellDetections,
    evidence: np.ndarray | None = None,
    working_scale: float = 1.0,
    *,
    duplicate_score_ratio: float = DUPLICATE_SCORE_RATIO,
    sweep_evidence: float = SWEEP_EVIDENCE,
) -> CellDetections:
    """The detections with one outline per cell (`one_detection_per_cell`) and the cells cut by the image
    edge flagged (`flag_border_cells`). `evidence`: where the network sees cell (bool, its working pixels),
    `working_scale`: FOV pixels per working pixel. An outline from a working-scale map cannot come closer to
    the edge than about one working pixel, so that is the border margin where it exceeds `BORDER_MARGIN_PX`."""
    keep = one_detection_per_cell(
        detections.cells,
        evidence,
        working_scale,
        duplicate_score_ratio=duplicate_score_ratio,
        sweep_evidence=sweep_evidence,
    )
    cells = [detections.cells[i] for i in keep]
    flag_border_cells(cells, detections.image_shape, max(BORDER_MARGIN_PX, working_scale))
    return CellDetections(cells=cells, image_shape=detections.image_shape, pixel_size_um=detections.pixel_size_um)


def flag_border_cells(cells: Sequence[Cell], image_shape: tuple[int, int], margin: float = BORDER_MARGIN_PX) -> None:
    """Set `border` on cells whose outline comes within `margin` px of the image edge: part of such a cell
    lies outside the image, so neither its class nor whether it was counted in a neighbouring field can be
    told; reviewers skip them, and `Differential.from_detections` leaves them out. They stay in the results
    (classified) so that a person sees them."""
    h, w = image_shape
    for cell in cells:
        poly = np.asarray(cell.polygon, np.float64)
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        cell.border = bool(x0 <= margin or y0 <= margin or x1 >= w - 1 - margin or y1 >= h - 1 - margin)


def one_detection_per_cell(
    cells: Sequence[Cell],
    evidence: np.ndarray | None = None,
    working_scale: float = 1.0,
    *,
    duplicate_score_ratio: float = DUPLICATE_SCORE_RATIO,
    sweep_evidence: float = SWEEP_EVIDENCE,
) -> list[int]:
    """Indices (in order) of the cells kept: sweeps dropped first (the cells inside them stay), then weak
    duplicates, strongest conflicts first, so that an outline already dropped never removes another. Without
    `evidence` no outline can be judged a sweep."""
    n = len(cells)
    if n < 2:
        return list(range(n))
    # judged on the network's own pixel grid where it is coarser than the image's: finer adds nothing to these
    # decisions and, at 0.05 µm/px, made them take half as long again as the network
    grid = max(1.0, working_scale)
    polys = [(np.asarray(c.polygon, np.float32) + 0.5) / grid - 0.5 for c in cells]
    masks = [polygon_mask(poly) for poly in polys]
    areas = np.array([int(m.sum()) for _, _, m in masks])
    centres = [_centre(poly) for poly in polys]
    scores = np.array([float(c.detection_score) for c in cells])
    dropped = np.zeros(n, bool)
    pairs = []  # (i, j) conflicting, i < j
    inside: dict[int, list[int]] = {}  # outline -> the detections it contains
    for i, j in _touching(masks):
        inter = _intersection(masks[i], masks[j])
        if not inter:
            continue
        j_in_i, i_in_j = _holds(masks[i], centres[j]), _holds(masks[j], centres[i])
        if not (j_in_i or i_in_j or inter > 0.5 * min(areas[i], areas[j])):
            continue
        pairs.append((i, j))
        big, small, holds = (i, j, j_in_i) if areas[i] > areas[j] else (j, i, i_in_j)
        if holds and areas[small] < areas[big] and inter > 0.5 * areas[small]:
            inside.setdefault(big, []).append(small)
    if evidence is not None:
        for big, smaller in inside.items():
            outside = _minus(masks[big], [masks[k] for k in smaller])
            swept = outside[2].sum() >= SWEEP_OUTSIDE_SHARE * areas[big]
            if swept and _evidence_share(evidence, working_scale / grid, outside) < sweep_evidence:
                dropped[big] = True
    for i, j in sorted(pairs, key=lambda p: (-max(scores[p[0]], scores[p[1]]), p)):
        if dropped[i] or dropped[j]:
            continue
        weak, strong = (i, j) if scores[i] < scores[j] else (j, i)
        if scores[weak] <= duplicate_score_ratio * scores[strong]:
            dropped[weak] = True
    return [k for k in range(n) if not dropped[k]]


def _centre(poly: np.ndarray) -> tuple[float, float]:
    """The outline's area centroid (x, y): for a star outline nearly its pole, for any outline inside it
    when convex."""
    m = cv2.moments(poly.reshape(-1, 1, 2))
    if m["m00"] == 0:
        x, y = poly.mean(axis=0)
        return float(x), float(y)
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def _touching(masks: Sequence[Mask]) -> list[tuple[int, int]]:
    """Pairs (i < j) whose bounding boxes meet: the only ones that can conflict."""
    b = np.array([(x0, y0, x0 + m.shape[1], y0 + m.shape[0]) for x0, y0, m in masks])
    meet = (b[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < b[:, None, 2])
    meet &= (b[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < b[:, None, 3])
    i, j = np.nonzero(np.triu(meet, 1))
    return list(zip(i.tolist(), j.tolist(), strict=True))


def _window(a: Mask, b: Mask) -> tuple[int, int, int, int] | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1 = min(a[0] + a[2].shape[1], b[0] + b[2].shape[1])
    y1 = min(a[1] + a[2].shape[0], b[1] + b[2].shape[0])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _intersection(a: Mask, b: Mask) -> int:
    w = _window(a, b)
    if w is None:
        return 0
    x0, y0, x1, y1 = w
    a_part = a[2][y0 - a[1] : y1 - a[1], x0 - a[0] : x1 - a[0]]
    return int((a_part & b[2][y0 - b[1] : y1 - b[1], x0 - b[0] : x1 - b[0]]).sum())


def _minus(a: Mask, others: Sequence[Mask]) -> Mask:
    out = a[2].copy()
    for b in others:
        w = _window(a, b)
        if w is not None:
            x0, y0, x1, y1 = w
            out[y0 - a[1] : y1 - a[1], x0 - a[0] : x1 - a[0]] &= ~b[2][y0 - b[1] : y1 - b[1], x0 - b[0] : x1 - b[0]]
    return a[0], a[1], out


def _holds(mask: Mask, point: tuple[float, float]) -> bool:
    x, y = round(point[0]) - mask[0], round(point[1]) - mask[1]
    return 0 <= y < mask[2].shape[0] and 0 <= x < mask[2].shape[1] and bool(mask[2][y, x])


def _evidence_share(evidence: np.ndarray, scale: float, mask: Mask) -> float:
    """Share of the mask's pixels that the evidence map calls cell; `scale`: mask pixels per evidence pixel."""
    ys, xs = np.nonzero(mask[2])
    if not len(ys):
        return 0.0
    h, w = evidence.shape
    wy = np.clip(np.rint((ys + mask[1] + 0.5) / scale - 0.5).astype(np.intp), 0, h - 1)
    wx = np.clip(np.rint((xs + mask[0] + 0.5) / scale - 0.5).astype(np.intp), 0, w - 1)
    return float(evidence[wy, wx].mean())
