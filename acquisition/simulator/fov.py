"""40x capture: render one FOV of a virtual slide, with instance and distractor ground truth.

Label conventions (the `ai` package and the seg data set rely on them):
- `instance_mask`: int32, 0 = background, k > 0 = nucleated cell k (1..K, consecutive); where cells
  overlap, the one on top (painted last) owns the pixel. The mask covers the whole cell (nucleus and
  cytoplasm), as visible within the FOV.
- `amodal_masks[i]`: cell i+1's whole outline within the FOV, including what lies under cells painted
  over it. Stain optical densities add where cells overlap (transmitted light), so an image does not show
  which of two overlapping cells is on top; the amodal masks are the part of the truth that an image does
  determine, and where two cells overlap, both masks hold the shared pixels.
- `distractor_mask`: int32 ids of non-nucleated objects (red cells, platelets, precipitate, debris,
  fibres), 1..M consecutive, only where no nucleated cell is: the two masks never share a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage

from acquisition.simulator.cells import paint_cell
from acquisition.simulator.distractors import Canvas, paint_particle, paint_platelet, paint_red_cell
from acquisition.simulator.morphology import RECIPES
from acquisition.simulator.objects import TYPICAL_RADIUS_UM, ObjectField
from acquisition.simulator.optics import FOV_HEIGHT_PX, FOV_HEIGHT_UM, FOV_PIXEL_UM, FOV_WIDTH_PX, FOV_WIDTH_UM
from acquisition.simulator.slide import SmearGeometry
from acquisition.simulator.stain import SlideStain, expose, vignette


@dataclass(frozen=True)
class CellRecord:
    """Ground truth of one nucleated cell in a FOV (pixel coordinates of the FOV image)."""

    id: int
    code: str
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive) of the visible mask
    centre: tuple[float, float]  # x, y: the painted centre (may lie outside the FOV for cut cells)
    area_px: int  # visible area
    full_area_px: int  # area had it not been cut by the FOV border or covered by other cells


@dataclass(frozen=True)
class AmodalMask:
    """A cell's whole outline (also under other cells), cropped to the FOV: `mask` starts at (x0, y0)."""

    x0: int
    y0: int
    mask: np.ndarray  # bool


@dataclass(frozen=True)
class DistractorRecord:
    id: int
    kind: str  # red_cell | platelet | precipitate | debris | fibre
    bbox: tuple[int, int, int, int]
    area_px: int


@dataclass
class Fov:
    """One 40x field of view with its ground truth (see module docstring for the label maps)."""

    image: np.ndarray  # (1496, 2048, 3) uint8 RGB
    pixel_size_um: float
    position_um: tuple[float, float]  # top-left corner in slide µm
    focus_um: float  # stage z of the capture
    defocus_um: float  # distance from best focus (truth)
    instance_mask: np.ndarray
    cells: list[CellRecord]
    distractor_mask: np.ndarray
    distractors: list[DistractorRecord]
    amodal_masks: list[AmodalMask]

    @property
    def focus(self) -> float:
        """Stage z of the capture (µm), as the manifest's `focus_um`."""
        return self.focus_um

    def shared_pixels(self) -> np.ndarray:
        """Pixels inside two or more cells' whole outlines (bool, FOV-sized): the image cannot show which of
        those cells lies on top there, so `instance_mask` gives them to one by its painting order alone."""
        count = np.zeros(self.instance_mask.shape, np.uint8)
        for m in self.amodal_masks:
            h, w = m.mask.shape
            count[m.y0 : m.y0 + h, m.x0 : m.x0 + w] += m.mask
        return count >= 2

    def outline_layers(self) -> np.ndarray:
        """Every cell's whole outline as (L, h, w) uint16 label images, cell k (the `instance_mask` id) in
        one of them: cells that overlap sit in different layers (greedy: the first layer with room), so the
        whole outlines survive resizing and flips like any label image."""
        shape = self.instance_mask.shape
        layers: list[np.ndarray] = []
        for k, m in enumerate(self.amodal_masks, start=1):
            h, w = m.mask.shape
            for layer in layers:
                if not layer[m.y0 : m.y0 + h, m.x0 : m.x0 + w][m.mask].any():
                    break
            else:
                layer = np.zeros(shape, np.uint16)
                layers.append(layer)
            layer[m.y0 : m.y0 + h, m.x0 : m.x0 + w][m.mask] = k
        return np.stack(layers) if layers else np.zeros((1, *shape), np.uint16)


@dataclass(frozen=True)
class FovContext:
    seed: int
    geometry: SmearGeometry
    objects: ObjectField
    stain: SlideStain
    vignette_strength: float
    focus_base_um: float


def render_fov(ctx: FovContext, x_um: float, y_um: float) -> Fov:
    """Paint the FOV whose top-left corner is at (x_um, y_um) of the slide."""
    cv = Canvas(FOV_HEIGHT_PX, FOV_WIDTH_PX, x_um, y_um, FOV_PIXEL_UM)
    content = ctx.objects.gather(x_um, y_um, x_um + FOV_WIDTH_UM, y_um + FOV_HEIGHT_UM)

    def near(x: float, y: float, reach: float) -> bool:
        # The gathered blocks reach far past the FOV; skip objects that cannot touch it.
        return x_um - reach < x < x_um + FOV_WIDTH_UM + reach and y_um - reach < y < y_um + FOV_HEIGHT_UM + reach

    content.red = [r for r in content.red if near(r.x, r.y, r.radius * 1.3)]
    content.platelets = [p for p in content.platelets if near(p.x, p.y, 6.0 * np.sqrt(p.clump))]
    content.particles = [q for q in content.particles if near(q.x, q.y, q.size * (8.0 if q.kind == "fibre" else 1.0))]
    content.cells = [c for c in content.cells if near(c.x, c.y, TYPICAL_RADIUS_UM[c.code] * c.scale * 1.6 + 5.0)]
    _plasma(cv, ctx)

    kinds: list[str] = []
    for rc in sorted(content.red, key=lambda r: r.seed):
        kinds.append("red_cell")
        paint_red_cell(cv, rc, ctx.stain, len(kinds))
    for p in content.platelets:
        kinds.append("platelet")
        paint_platelet(cv, p, ctx.stain, len(kinds))
    for q in content.particles:
        kinds.append(q.kind)
        paint_particle(cv, q, ctx.stain, len(kinds))
    _artefact_overlays(cv, ctx)

    codes: list[str] = []
    centres: list[tuple[float, float]] = []
    full: list[int] = []
    whole: list[AmodalMask | None] = []
    for c in sorted(content.cells, key=lambda c: c.z):
        rng = np.random.default_rng(c.seed)
        plan = RECIPES[c.code](rng)
        plan.radius_um *= c.scale
        cx, cy = cv.to_px(c.x, c.y)
        sprite = paint_cell(plan, rng, ctx.stain, FOV_PIXEL_UM, cx, cy)
        codes.append(c.code)
        centres.append((round(cx, 1), round(cy, 1)))
        full.append(int(sprite.mask.sum()))
        cv.add(sprite.od, sprite.mask, sprite.x0, sprite.y0, len(codes), cv.cells)
        whole.append(_inside(cv, sprite.mask, sprite.x0, sprite.y0))
    cv.distractors[cv.cells > 0] = 0

    rng = np.random.default_rng([ctx.seed, 7, round(x_um * 10), round(y_um * 10)])
    defocus = float(abs(rng.normal(0.0, 0.3)) + (rng.uniform(0.6, 1.4) if rng.random() < 0.06 else 0.0))
    illum = vignette((FOV_HEIGHT_PX, FOV_WIDTH_PX), ctx.vignette_strength, tuple(rng.uniform(0.4, 0.6, 2)))
    illum *= sensor_dust()
    image = expose(cv.od, ctx.stain, rng, blur_sigma_px=1.1 + 2.6 * defocus, illumination=illum)

    instance, cells, painted = _cell_records(cv.cells, codes, centres, full)
    distractor, distractors = _distractor_records(cv.distractors, kinds)
    return Fov(
        image=image,
        pixel_size_um=FOV_PIXEL_UM,
        position_um=(x_um, y_um),
        focus_um=round(ctx.focus_base_um + defocus * (1 if rng.random() < 0.5 else -1), 2),
        defocus_um=defocus,
        instance_mask=instance,
        cells=cells,
        distractor_mask=distractor,
        distractors=distractors,
        amodal_masks=[m for m in (whole[o - 1] for o in painted) if m is not None],  # all: each one is visible
    )


def _inside(cv: Canvas, mask: np.ndarray, x0: int, y0: int) -> AmodalMask | None:
    win = cv.window(x0, y0, mask.shape[0], mask.shape[1])
    if win is None:
        return None
    cy, cx, py, px = win
    return AmodalMask(cx.start, cy.start, mask[py, px].astype(bool))


@lru_cache(maxsize=1)
def sensor_dust() -> np.ndarray:
    """Faint out-of-focus dust on the camera window: the same soft rings in every FOV of the scanner,
    which a detector must learn to ignore (they do not move with the slide)."""
    rng = np.random.default_rng(0xD057)
    dust = np.ones((FOV_HEIGHT_PX, FOV_WIDTH_PX), np.float32)
    yy, xx = np.ogrid[0:FOV_HEIGHT_PX, 0:FOV_WIDTH_PX]
    for _ in range(5):
        cx, cy = rng.uniform(0, FOV_WIDTH_PX), rng.uniform(0, FOV_HEIGHT_PX)
        r, depth = rng.uniform(15, 45), rng.uniform(0.02, 0.05)
        d = np.hypot(xx - cx, yy - cy, dtype=np.float32) / np.float32(r)
        dust *= 1.0 - depth * (np.exp(-((d - 0.8) ** 2) / 0.08) + 0.4 * np.exp(-(d**2) / 0.3)).astype(np.float32)
    dust.setflags(write=False)
    return dust


def _plasma(cv: Canvas, ctx: FovContext) -> None:
    """Background: plasma proteins stain faintly, more where the smear is thick, and unevenly."""
    gy, gx = np.mgrid[0:48, 0:64].astype(np.float64)
    x, y = cv.x_um + gx * FOV_WIDTH_UM / 63, cv.y_um + gy * FOV_HEIGHT_UM / 47
    d = np.minimum(ctx.geometry.coverage(x, y), 2.5)
    amt = (0.25 + 0.45 * d) * (1.0 + ctx.geometry.film_strength * ctx.geometry.film(x, y))
    amt = cv2.resize(np.clip(amt, 0.0, None).astype(np.float32), (cv.width, cv.height), interpolation=cv2.INTER_CUBIC)
    cv.od += amt[:, :, None] * ctx.stain.od("plasma")[None, None, :]


def _artefact_overlays(cv: Canvas, ctx: FovContext) -> None:
    """Air-bubble rims and scratch grooves that cross this FOV."""
    s = 1.0 / cv.px_um
    layer = np.zeros((cv.height, cv.width), np.uint8)
    for a in ctx.geometry.artefacts:
        cx, cy = cv.to_px(a.x, a.y)
        if a.kind == "bubble":
            cv2.circle(layer, (int(cx), int(cy)), int(a.size * s), 255, max(2, int(3 * s)), cv2.LINE_AA)
        elif a.kind == "scratch":
            x2, y2 = cv.to_px(a.x2, a.y2)
            for off in (-a.size / 2, a.size / 2):
                nx, ny = -(y2 - cy), x2 - cx
                n = max(np.hypot(nx, ny), 1e-9)
                o = off * s / n
                cv2.line(
                    layer,
                    (int(cx + nx * o), int(cy + ny * o)),
                    (int(x2 + nx * o), int(y2 + ny * o)),
                    110,
                    max(1, int(0.4 * s)),
                    cv2.LINE_AA,
                )
    if layer.any():
        cv.od += (
            cv2.GaussianBlur(layer.astype(np.float32) / 255.0, (0, 0), 0.8 * s)[:, :, None]
            * ctx.stain.od("bubble")[None, None, :]
        )


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive ids 1..K for the labels present; returns the new map and the old id of each new one."""
    present = np.flatnonzero(np.bincount(labels.ravel()))
    present = present[present > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[labels], present


def _bboxes(labels: np.ndarray, n: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    slices = ndimage.find_objects(labels, max_label=n)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    boxes = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop) if sl else (0, 0, 0, 0) for sl in slices]
    return boxes, areas


def _cell_records(
    labels: np.ndarray, codes: list[str], centres: list[tuple[float, float]], full: list[int]
) -> tuple[np.ndarray, list[CellRecord], np.ndarray]:
    """Records of the cells with a visible pixel, their consecutive ids, and each one's painting index."""
    new, old = _relabel(labels)
    boxes, areas = _bboxes(new, len(old))
    records = [
        CellRecord(i + 1, codes[o - 1], boxes[i], centres[o - 1], int(areas[i + 1]), full[o - 1])
        for i, o in enumerate(old)
    ]
    return new, records, old


def _distractor_records(labels: np.ndarray, kinds: list[str]) -> tuple[np.ndarray, list[DistractorRecord]]:
    new, old = _relabel(labels)
    boxes, areas = _bboxes(new, len(old))
    return new, [DistractorRecord(i + 1, kinds[o - 1], boxes[i], int(areas[i + 1])) for i, o in enumerate(old)]
