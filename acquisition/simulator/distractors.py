"""Painters for what is not a nucleated cell: red cells, platelets, stain precipitate, debris, fibres.

These are the objects a segmentation network must learn to ignore, so they are drawn with the
colours that fool a colour threshold: platelets and precipitate are as violet as nuclei, debris is
dark, and overlapping red cells add up to nucleus-like optical density.
"""

from __future__ import annotations

import cv2
import numpy as np

from acquisition.simulator.objects import Particle, Platelet, RedCell
from acquisition.simulator.stain import SlideStain
from acquisition.simulator.textures import dots, fill, outline, soft, value_noise


class Canvas:
    """A FOV being painted: OD image plus the two label maps, in canvas pixels."""

    def __init__(self, height: int, width: int, x_um: float, y_um: float, px_um: float) -> None:
        self.od = np.zeros((height, width, 3), np.float32)
        self.cells = np.zeros((height, width), np.int32)
        self.distractors = np.zeros((height, width), np.int32)
        self.x_um, self.y_um, self.px_um = x_um, y_um, px_um
        self.height, self.width = height, width

    def to_px(self, x_um: float, y_um: float) -> tuple[float, float]:
        return (x_um - self.x_um) / self.px_um, (y_um - self.y_um) / self.px_um

    def window(self, x0: int, y0: int, h: int, w: int) -> tuple[slice, slice, slice, slice] | None:
        """Canvas and patch slices of a patch at (x0, y0), or None when it misses the canvas."""
        cx0, cy0 = max(0, x0), max(0, y0)
        cx1, cy1 = min(self.width, x0 + w), min(self.height, y0 + h)
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        return slice(cy0, cy1), slice(cx0, cx1), slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)

    def add(self, od: np.ndarray, mask: np.ndarray | None, x0: int, y0: int, label: int, labels: np.ndarray) -> int:
        """Add an OD patch; label its mask (later objects win). Returns the visible mask area."""
        win = self.window(x0, y0, od.shape[0], od.shape[1])
        if win is None:
            return 0
        cy, cx, py, px = win
        self.od[cy, cx] += od[py, px]
        if mask is None or label <= 0:
            return 0
        m = mask[py, px]
        labels[cy, cx][m] = label
        return int(m.sum())


def paint_red_cell(cv: Canvas, rc: RedCell, stain: SlideStain, label: int) -> None:
    """A biconcave disc: salmon-pink rim, pale centre, crenated edge for echinocytes."""
    s = 1.0 / cv.px_um
    r = rc.radius * s
    cx, cy = cv.to_px(rc.x, rc.y)
    half = int(np.ceil(r * (1.15 + rc.crenation))) + 2
    x0, y0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
    if cv.window(x0, y0, 2 * half, 2 * half) is None:
        return
    yy, xx = np.mgrid[0 : 2 * half, 0 : 2 * half].astype(np.float32)
    dx, dy = xx - (cx - x0), yy - (cy - y0)
    ca, sa = np.cos(rc.angle), np.sin(rc.angle)
    u = (dx * ca + dy * sa) / r
    v = (-dx * sa + dy * ca) / (r * rc.ratio)
    rho = np.hypot(u, v)
    if rc.crenation > 0:
        theta = np.arctan2(v, u)
        k = 10 + rc.seed % 7
        rho = rho / (1.0 + rc.crenation * np.cos(k * theta + rc.seed % 13))
    else:
        # Red cells are never perfect circles: a gentle low-order wobble of the outline.
        theta = np.arctan2(v, u)
        ph = (rc.seed % 1000) / 1000.0 * 2 * np.pi
        rho = rho / (1.0 + 0.025 * np.cos(2 * theta + ph) + 0.02 * np.cos(3 * theta + 2 * ph))
    edge = np.clip((1.0 - rho) * r / 1.2, 0.0, 1.0)
    # Biconcave disc: a flat body, a slightly thicker rim and a soft-edged pale centre.
    pale = 1.0 / (1.0 + np.exp((rho - 0.42) / 0.08))
    amount = 0.9 + 0.2 * ((rc.seed >> 8) % 100) / 100.0
    if rc.form == "spherocyte":  # small, dense, no pallor: a red cell that mimics a small dark nucleus
        thick = edge * 1.0
        amount *= 1.3
    elif rc.form == "target":  # a stained centre inside the pale ring
        thick = edge * (0.86 + 0.12 * rho**4 - 0.6 * pale + 0.55 * np.exp(-((rho / 0.2) ** 2)))
    else:
        thick = edge * (0.86 + 0.12 * rho**4 - rc.pallor * 0.85 * pale)
    od = (thick * amount)[:, :, None] * stain.od("rbc")[None, None, :]
    cv.add(od, rho < 1.0, x0, y0, label, cv.distractors)


def paint_platelet(cv: Canvas, p: Platelet, stain: SlideStain, label: int) -> None:
    """A platelet or clump: pale hyalomere halo around a granular violet centre."""
    rng = np.random.default_rng(p.seed)
    s = 1.0 / cv.px_um
    cx, cy = cv.to_px(p.x, p.y)
    spread = p.radius * s * (1.0 + 0.9 * np.sqrt(p.clump - 1))
    half = int(np.ceil(spread + 3 * p.radius * s)) + 2
    x0, y0 = int(cx) - half, int(cy) - half
    if cv.window(x0, y0, 2 * half, 2 * half) is None:
        return
    shape = (2 * half, 2 * half)
    halo, core = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for _ in range(p.clump):
        off = rng.normal(0, spread * 0.45, 2) if p.clump > 1 else np.zeros(2)
        c = (half + off[0], half + off[1])
        rr = p.radius * s * rng.uniform(0.7, 1.2)
        fill(halo, outline(rng, c, (rr * 1.35, rr * 1.1), rng.uniform(0, np.pi), 0.2))
        fill(core, outline(rng, c, (rr * 0.75, rr * 0.6), rng.uniform(0, np.pi), 0.3))
    gran = dots(rng, shape, soft(core, 1.0), int(8 * p.clump), (0.12 * s, 0.22 * s))
    od = soft(halo, 0.1 * s)[:, :, None] * stain.od("platelet_halo")[None, None, :]
    od += (soft(core, 0.15 * s) * 0.6 + soft(gran, 0.05 * s) * 1.0)[:, :, None] * stain.od("platelet")[None, None, :]
    cv.add(od, halo > 127, x0, y0, label, cv.distractors)


def paint_particle(cv: Canvas, p: Particle, stain: SlideStain, label: int) -> None:
    """Stain precipitate (dark violet crystals), debris (grey-brown blobs) or a fibre."""
    rng = np.random.default_rng(p.seed)
    s = 1.0 / cv.px_um
    cx, cy = cv.to_px(p.x, p.y)
    size = p.size * s
    reach = size * (1.0 if p.kind != "fibre" else 5.0) * 1.6
    half = int(np.ceil(reach)) + 3
    x0, y0 = int(cx) - half, int(cy) - half
    if cv.window(x0, y0, 2 * half, 2 * half) is None:
        return
    shape = (2 * half, 2 * half)
    m = np.zeros(shape, np.uint8)
    c = (cx - x0, cy - y0)
    if p.kind == "precipitate":
        fill(m, outline(rng, c, (size / 2, size / 2 * rng.uniform(0.5, 1.0)), rng.uniform(0, np.pi), 0.35, 24))
        od = (soft(m, 0.6) * rng.uniform(1.0, 2.2))[:, :, None] * stain.od("precipitate")[None, None, :]
    elif p.kind == "fibre":
        a = rng.uniform(0, 2 * np.pi)
        pts = [c]
        for _ in range(12):
            a += rng.normal(0, 0.3)
            pts.append((pts[-1][0] + np.cos(a) * size * 0.7, pts[-1][1] + np.sin(a) * size * 0.7))
        arr = np.round(np.array(pts) * 4).astype(np.int32)
        cv2.polylines(m, [arr], False, 255, max(2, int(rng.uniform(0.4, 1.2) * s)), cv2.LINE_AA, shift=2)
        od = (soft(m, 0.8) * 0.8)[:, :, None] * stain.od("debris")[None, None, :]
    else:
        fill(m, outline(rng, c, (size / 2, size / 2 * rng.uniform(0.4, 0.9)), rng.uniform(0, np.pi), 0.3, 48, 8))
        tex = 1.0 + 0.5 * value_noise(rng, shape, max(2.0, size / 6))
        od = (soft(m, 1.0) * np.clip(tex, 0.2, None) * rng.uniform(0.7, 1.6))[:, :, None] * stain.od("debris")[
            None, None, :
        ]
    cv.add(od, m > 127, x0, y0, label, cv.distractors)
