"""Star-convex cells: each cell as a centre and its distances to its own whole outline along fixed rays.

Why: stain densities add where cells overlap (transmitted light), so a cell partly under another is
still wholly visible and a person outlines all of it; a label image, which gives each pixel to one cell,
cannot hold two overlapping outlines, and a watershed on one foreground merges cells whose cores touch.
Predicting, at each cell's centre, its distances to its own outline along `rays` directions (StarDist,
Schmidt et al. 2018, in its simplest form) gives each cell its whole outline, overlaps included.

Truth: cells' whole masks kept in `layers` (cells that overlap sit in different layers). The rays are
supervised on a small disc around each cell's centre only, kept as a sparse list of poles that the
augmentation moves exactly (`move_poles`). Distances are in working pixels; the network predicts their
logarithm (relative error matters).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

RAYS = 32
POLE_RADIUS = 2  # px around each centre where the rays are supervised (exact per pixel)
MAX_RAY = 400.0  # px; longer than any cell at working scale

Proposal = tuple[np.ndarray, float, tuple[int, int, np.ndarray]]  # polygon x/y, score, (x0, y0, pixels)


def is_star_arch(arch: str) -> bool:
    """Whether a seg architecture has the star-convex cell head (`compact_star`) rather than label maps."""
    return arch.endswith("star")


def ray_directions(rays: int = RAYS) -> np.ndarray:
    """(rays, 2) unit vectors (dy, dx) from +x towards +y (clockwise on screen, y down), as the network's ray
    channels."""
    a = 2 * np.pi * np.arange(rays) / rays
    return np.stack([np.sin(a), np.cos(a)], axis=1)


def cell_masks(layers: np.ndarray) -> dict[int, tuple[int, int, np.ndarray]]:
    """Each cell's whole mask from outline layers (`Fov.outline_layers`, a seg dataset's `outlines/`):
    id -> (x0, y0, bool mask in its bounding box)."""
    out: dict[int, tuple[int, int, np.ndarray]] = {}
    for layer in layers:
        for i, sl in enumerate(ndi.find_objects(layer.astype(np.int32)), start=1):
            if sl is not None:
                out[i] = (sl[1].start, sl[0].start, layer[sl] == i)
    return out


def ray_lengths(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray, rays: int = RAYS, step: float = 0.5) -> np.ndarray:
    """Distance from each point (ys, xs) inside `mask` to the mask's edge along each ray, (n, rays)."""
    d = ray_directions(rays)
    steps = np.arange(step, MAX_RAY, step, dtype=np.float32)
    h, w = mask.shape
    out = np.zeros((len(ys), rays), np.float32)
    for n, (y, x) in enumerate(zip(ys, xs, strict=True)):
        py = np.rint(y + steps[:, None] * d[None, :, 0]).astype(np.int32)
        px = np.rint(x + steps[:, None] * d[None, :, 1]).astype(np.int32)
        inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        inside[inside] = mask[py[inside], px[inside]]
        first_out = np.argmin(inside, axis=0)  # rows are steps; every ray leaves within MAX_RAY
        out[n] = steps[first_out]
    return out


def star_targets(layers: np.ndarray, rays: int = RAYS) -> tuple[np.ndarray, np.ndarray]:
    """Targets from overlap layers: the centre map (h, w) float32, each cell's (distance to its own outline
    / its maximum) squared, the larger where cells overlap, so every cell peaks at its centre even on top
    of another; and the poles (n, 2 + rays) float32: y, x and the log ray lengths of each pixel on a disc
    of `POLE_RADIUS` around each cell's centre (the peak of its ramp), where the rays are supervised.
    Poles stay a sparse list so that scale, crops, flips and rotations can move them exactly."""
    h, w = layers.shape[1:]
    centre = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[-POLE_RADIUS : POLE_RADIUS + 1, -POLE_RADIUS : POLE_RADIUS + 1]
    disc = yy**2 + xx**2 <= POLE_RADIUS**2
    poles = []
    for x0, y0, m in cell_masks(layers).values():
        dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        peak = float(dist.max())
        if peak <= 0:
            continue
        view = centre[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
        np.maximum(view, np.where(m, (dist / peak) ** 2, 0), out=view)
        cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
        ys, xs = cy + yy[disc], cx + xx[disc]
        ok = (ys >= 0) & (ys < m.shape[0]) & (xs >= 0) & (xs < m.shape[1])
        ys, xs = ys[ok], xs[ok]
        ok = m[ys, xs]
        ys, xs = ys[ok], xs[ok]
        lengths = ray_lengths(m, ys, xs, rays)
        poles.append(np.concatenate([np.stack([y0 + ys, x0 + xs], 1).astype(np.float32), np.log(lengths)], 1))
    return centre, (np.concatenate(poles) if poles else np.zeros((0, 2 + rays), np.float32))


def move_poles(
    poles: np.ndarray,
    *,
    scale: float = 1.0,
    offset: tuple[int, int] = (0, 0),
    size: int | None = None,
    k: int = 0,
    flip: bool = False,
) -> np.ndarray:
    """Poles after the image was resized by `scale` (pixel centres: (p + 0.5)·s − 0.5, lengths × s), cut at
    `offset` (y, x) to a `size`×`size` window (poles outside dropped), then `np.rot90(·, k)` and a left-right
    flip, as `ai.augment.geometric` does; the ray channels are permuted so that channel j keeps pointing at
    angle 2πj/R (R must be a multiple of 4 for 90° turns)."""
    p = poles.copy()
    rays = p.shape[1] - 2
    if scale != 1.0:
        p[:, :2] = np.rint((p[:, :2] + 0.5) * scale - 0.5)
        p[:, 2:] += np.float32(np.log(scale))
    p[:, 0] -= offset[0]
    p[:, 1] -= offset[1]
    if size is not None:
        p = p[(p[:, 0] >= 0) & (p[:, 0] < size) & (p[:, 1] >= 0) & (p[:, 1] < size)]
    j = np.arange(rays)
    for _ in range(k % 4):  # np.rot90: (y, x) -> (size-1-x, y); a ray at angle a turns to a - 90°
        p[:, 0], p[:, 1] = size - 1 - p[:, 1], p[:, 0].copy()
        p[:, 2:] = p[:, 2 + (j + rays // 4) % rays]
    if flip:  # x -> size-1-x; a ray at angle a goes to 180° - a
        p[:, 1] = size - 1 - p[:, 1]
        p[:, 2:] = p[:, 2 + (rays // 2 - j) % rays]
    return p


def pole_maps(poles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w, 1 + rays) float32: ray weight (1 at the poles) and the poles' log ray lengths."""
    out = np.zeros((*shape, poles.shape[1] - 1), np.float32)
    y, x = poles[:, 0].astype(np.int32), poles[:, 1].astype(np.int32)
    ok = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
    out[y[ok], x[ok], 0] = 1.0
    out[y[ok], x[ok], 1:] = poles[ok, 2:]
    return out


def star_polygon(y: float, x: float, log_lengths: np.ndarray) -> np.ndarray:
    """(rays, 2) x/y polygon of a cell centred at (y, x) from its predicted log ray lengths."""
    d = ray_directions(len(log_lengths))
    r = np.exp(np.clip(log_lengths, -2.0, np.log(MAX_RAY)))
    return np.stack([x + r * d[:, 1], y + r * d[:, 0]], axis=1).astype(np.float32)


def polygon_mask(poly: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(x0, y0, bool mask) of a polygon's pixels (pixel centres inside), in its bounding box."""
    x0, y0 = np.floor(poly.min(axis=0)).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
    m = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(m, [np.round(poly - [x0, y0]).astype(np.int32).reshape(-1, 1, 2)], 1)
    return int(x0), int(y0), m.astype(bool)


def mask_iou(a: tuple[int, int, np.ndarray], b: tuple[int, int, np.ndarray]) -> float:
    """IoU of two (x0, y0, mask) pixel sets."""
    ax, ay, am = a
    bx, by, bm = b
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + am.shape[1], bx + bm.shape[1]), min(ay + am.shape[0], by + bm.shape[0])
    if x0 >= x1 or y0 >= y1:
        return 0.0
    inter = int((am[y0 - ay : y1 - ay, x0 - ax : x1 - ax] & bm[y0 - by : y1 - by, x0 - bx : x1 - bx]).sum())
    union = int(am.sum()) + int(bm.sum()) - inter
    return inter / union if union else 0.0


def star_proposals(maps: np.ndarray, centre_threshold: float, seed_distance: int) -> list[Proposal]:
    """Every cell the maps propose, best first: (polygon x/y in working pixels, score, its pixels), one per
    local maximum of the centre map at or above `centre_threshold`. A higher threshold proposes exactly the
    proposals above it (a local maximum does not depend on the threshold, and `local_peaks` thins close
    maxima in falling order), so threshold selection proposes once at the lowest threshold."""
    from ai.postprocess import local_peaks

    centre = maps[..., 0].astype(np.float32)  # unsmoothed: smoothing flattens a small cell's peak on a large one
    peaks = local_peaks(centre, seed_distance, centre_threshold)
    h, w = centre.shape
    out: list[Proposal] = []
    for score, y, x in sorted(((float(centre[y, x]), int(y), int(x)) for y, x in peaks), reverse=True):
        poly = star_polygon(y, x, maps[y, x, 1:])
        poly[:, 0] = np.clip(poly[:, 0], 0, w - 1)
        poly[:, 1] = np.clip(poly[:, 1], 0, h - 1)
        out.append((poly, score, polygon_mask(poly)))
    return out


def keep_cells(
    proposals: list[Proposal],
    nms_iou: float,
    min_area: float,
    max_area: float | None = None,
    overlaps: dict[tuple[int, int], float] | None = None,
) -> list[int]:
    """Indices of the proposals (best first) kept as cells: those within [min_area, max_area] pixels that
    overlap no better proposal already kept by IoU > `nms_iou` (the same cell seen twice), so that
    overlapping cells both stay. `overlaps` ({(i, j): IoU} for i < j, pairs absent are 0) spares recomputing
    the IoUs when the same proposals are kept at many thresholds."""
    kept: list[int] = []
    for j, (_, _, pix) in enumerate(proposals):
        area = int(pix[2].sum())
        if area < min_area or (max_area is not None and area > max_area):
            continue
        if overlaps is None:
            clash = any(mask_iou(pix, proposals[i][2]) > nms_iou for i in kept)
        else:
            clash = any(overlaps.get((i, j), 0.0) > nms_iou for i in kept)
        if not clash:
            kept.append(j)
    return kept


def proposal_overlaps(proposals: list[Proposal]) -> dict[tuple[int, int], float]:
    """{(i, j): IoU} of the proposals whose bounding boxes meet, i < j."""
    boxes = np.array([(x0, y0, x0 + m.shape[1], y0 + m.shape[0]) for _, _, (x0, y0, m) in proposals]).reshape(-1, 4)
    out: dict[tuple[int, int], float] = {}
    for j in range(len(proposals)):
        meet = (boxes[:j, 0] < boxes[j, 2]) & (boxes[j, 0] < boxes[:j, 2])
        meet &= (boxes[:j, 1] < boxes[j, 3]) & (boxes[j, 1] < boxes[:j, 3])
        for i in np.flatnonzero(meet):
            iou = mask_iou(proposals[int(i)][2], proposals[j][2])
            if iou > 0:
                out[(int(i), j)] = iou
    return out


def star_instances(
    maps: np.ndarray,
    centre_threshold: float = 0.5,
    seed_distance: int = 3,
    nms_iou: float = 0.5,
    min_area: float = 30.0,
    max_area: float | None = None,
) -> list[tuple[np.ndarray, float]]:
    """Cells from one FOV's (h, w, 1 + rays) maps (centre probability, log ray lengths):
    (polygon x/y in working pixels, score) per cell, best first (`star_proposals`, then `keep_cells`)."""
    proposals = star_proposals(maps, centre_threshold, seed_distance)
    return [proposals[i][:2] for i in keep_cells(proposals, nms_iou, min_area, max_area)]
