"""10x pre-scan: the overview of the scan area and its grid of FOV-sized tiles with quality labels.

At 1.38 µm/px a red cell is 5 px across, so the overview is rendered statistically rather than
object by object: per-pixel Poisson counts of red cells, nucleated cells and precipitate drawn from
the same `SmearGeometry` fields the FOVs use, convolved with each object's footprint (red cells add
up in thick areas exactly as their OD does), plus the slide's artefacts drawn where they lie.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from acquisition.simulator.objects import RBC_AREA_UM2
from acquisition.simulator.optics import (
    OVERVIEW_FIELD_UM,
    OVERVIEW_PIXEL_UM,
    TILE_HEIGHT_PX,
    TILE_HEIGHT_UM,
    TILE_WIDTH_PX,
    TILE_WIDTH_UM,
)
from acquisition.simulator.slide import SmearGeometry, quality_label
from acquisition.simulator.stain import SlideStain, expose


@dataclass(frozen=True)
class GridTile:
    """One grid tile: a 40x FOV footprint on the overview (µm in slide coordinates, px in the overview)."""

    row: int
    col: int
    x_um: float
    y_um: float
    width_um: float
    height_um: float
    x_px: int
    y_px: int
    width_px: int
    height_px: int
    label: str  # ground-truth quality class
    coverage: float  # mean red-cell coverage (truth; 1 ≈ closed monolayer)


@dataclass
class Overview:
    """The 10x overview of the scan area; `quality` is the ground-truth label of each grid tile."""

    image: np.ndarray  # (rows * 94, cols * 128, 3) uint8 RGB
    pixel_size_um: float
    origin_um: tuple[float, float]  # slide µm of the image's top-left corner
    quality: np.ndarray  # (rows, cols) str labels
    tiles: list[GridTile]

    def grid_tiles(self) -> list[GridTile]:
        return list(self.tiles)

    def tile_image(self, tile: GridTile) -> np.ndarray:
        return self.image[tile.y_px : tile.y_px + tile.height_px, tile.x_px : tile.x_px + tile.width_px]


def grid(geometry: SmearGeometry, rows: int, cols: int) -> list[GridTile]:
    """Tiles with their ground-truth labels, from the fields alone (no rendering needed)."""
    sy, sx = np.mgrid[0:6, 0:8].astype(np.float64)
    fx, fy = (sx + 0.5) / 8 * TILE_WIDTH_UM, (sy + 0.5) / 6 * TILE_HEIGHT_UM
    tiles = []
    for r in range(rows):
        for c in range(cols):
            x, y = c * TILE_WIDTH_UM, r * TILE_HEIGHT_UM
            cov = float(geometry.coverage(x + fx, y + fy).mean())
            art = float(geometry.artefact_coverage(x + fx, y + fy).mean())
            tiles.append(
                GridTile(r, c, round(x, 3), round(y, 3), TILE_WIDTH_UM, TILE_HEIGHT_UM, c * TILE_WIDTH_PX,
                         r * TILE_HEIGHT_PX, TILE_WIDTH_PX, TILE_HEIGHT_PX, quality_label(cov, art), round(cov, 4))
            )  # fmt: skip
    return tiles


def _kernel(radius_px: float, pallor: float = 0.0) -> np.ndarray:
    """Footprint of one object, normalised so that its integral is its area in px (OD per object)."""
    n = int(np.ceil(radius_px * 1.5)) * 2 + 1
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) - n // 2
    rho = np.hypot(xx, yy) / radius_px
    k = np.clip((1.0 - rho) * radius_px, 0, 1) * (1.0 - pallor * np.exp(-((rho / 0.5) ** 2)))
    return k.astype(np.float32)


def render_overview(
    seed: int, geometry: SmearGeometry, stain: SlideStain, rows: int, cols: int, cellularity: float
) -> Overview:
    """Render the overview (see module docstring)."""
    rng = np.random.default_rng([seed, 11])
    h, w = rows * TILE_HEIGHT_PX, cols * TILE_WIDTH_PX
    px = OVERVIEW_PIXEL_UM
    # Fields on a coarse grid (every 4 px), bilinearly enlarged: they vary over tens of µm at least.
    gy, gx = np.mgrid[0 : h // 4 + 2, 0 : w // 4 + 2].astype(np.float64) * 4 * px
    cov = cv2.resize(geometry.coverage(gx, gy).astype(np.float32), None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
    prec = cv2.resize(geometry.precipitate_density(gx, gy).astype(np.float32), None, fx=4, fy=4)
    cov, prec = cov[:h, :w], prec[:h, :w]

    pix_area = px * px
    od = np.zeros((h, w, 3), np.float32)
    od += (0.25 + 0.45 * np.minimum(cov, 2.5))[:, :, None] * stain.od("plasma")
    red = rng.poisson(np.minimum(cov, 2.0) * pix_area / RBC_AREA_UM2).astype(np.float32)
    od += cv2.filter2D(red, -1, _kernel(3.75 / px, 0.45))[:, :, None] * stain.od("rbc")
    nuc = rng.poisson(np.minimum(cov, 2.0) * cellularity / 1e4 * pix_area).astype(np.float32)
    od += cv2.filter2D(nuc, -1, _kernel(3.2 / px))[:, :, None] * (stain.od("nucleus") * 1.3)
    od += cv2.filter2D(nuc, -1, _kernel(6.0 / px) * 0.5)[:, :, None] * stain.od("cyto_grey")
    pre = rng.poisson(prec / 100.0 * pix_area * 0.5).astype(np.float32)
    od += cv2.GaussianBlur(pre, (0, 0), 0.6)[:, :, None] * (stain.od("precipitate") * 3.0)
    _artefacts(od, geometry, stain, rng)

    # The overview is a mosaic of 10x camera fields, each with its own vignetting.
    fw, fh = OVERVIEW_FIELD_UM[0] / px, OVERVIEW_FIELD_UM[1] / px
    xs = (np.arange(w, dtype=np.float32) % fw) / fw - 0.5
    ys = (np.arange(h, dtype=np.float32) % fh) / fh - 0.5
    illum = 1.0 - 0.08 * (xs[None, :] ** 2 + ys[:, None] ** 2) / 0.5
    image = expose(od, stain, rng, blur_sigma_px=0.7, illumination=illum.astype(np.float32), full_well=8000.0)

    tiles = grid(geometry, rows, cols)
    quality = np.array([t.label for t in tiles]).reshape(rows, cols)
    return Overview(image, px, (0.0, 0.0), quality, tiles)


def _artefacts(od: np.ndarray, geometry: SmearGeometry, stain: SlideStain, rng: np.random.Generator) -> None:
    px = OVERVIEW_PIXEL_UM
    layer = np.zeros(od.shape[:2], np.float32)
    debris = np.zeros(od.shape[:2], np.float32)
    for a in geometry.artefacts:
        x, y = a.x / px, a.y / px
        if a.kind == "bubble":
            cv2.circle(layer, (int(x), int(y)), int(a.size / px), 1.0, max(1, int(4 / px)), cv2.LINE_AA)
        elif a.kind == "debris":
            n = 24
            t = np.linspace(0, 2 * np.pi, n, endpoint=False)
            rr = a.size / px * (1 + 0.25 * np.cos(2 * t + rng.uniform(0, 6)) + 0.1 * np.cos(3 * t)) * 0.5
            pts = np.stack([x + rr * np.cos(t), y + rr * np.sin(t) * 0.7], axis=1).astype(np.int32)
            cv2.fillPoly(debris, [pts], float(rng.uniform(0.7, 1.5)), cv2.LINE_AA)
        elif a.kind == "scratch":
            cv2.line(layer, (int(x), int(y)), (int(a.x2 / px), int(a.y2 / px)), 0.25, 1, cv2.LINE_AA)
    od += cv2.GaussianBlur(layer, (0, 0), 0.8)[:, :, None] * stain.od("bubble")
    od += cv2.GaussianBlur(debris, (0, 0), 1.0)[:, :, None] * stain.od("debris") * 1.5
