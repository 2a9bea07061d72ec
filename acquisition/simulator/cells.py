"""The generic nucleated-cell painter: a `CellPlan` (what a class looks like) → OD patch + mask.

The class recipes live in `morphology.py`; this module knows how to draw bodies, nuclei of every
shape, chromatin patterns, nucleoli, granules, vacuoles, hofs, hairy projections and Auer rods.
All lengths in a plan are in µm and converted with the FOV pixel size here, so the same plan can be
drawn at the 40x scale or smaller.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

from acquisition.simulator.stain import SlideStain
from acquisition.simulator.textures import dots, fill, fractal_noise, outline, soft, value_noise


@dataclass
class Granules:
    """A population of granules: colour name, count per 100 µm² of region, radius range (µm)."""

    colour: str
    density: float
    radius_um: tuple[float, float]
    amount: float = 1.0
    over_nucleus: bool = False  # basophil granules lie on top of the nucleus too


@dataclass
class CellPlan:
    """Everything that decides how one nucleated cell looks (sizes in µm, amounts in stain units)."""

    radius_um: float
    elongation: float = 1.0
    roughness: float = 0.04
    cytoplasm: dict[str, float] = field(default_factory=dict)
    cyto_texture: float = 0.1
    nucleus_shape: str = "round"
    nucleus_rel: float = 0.6  # nucleus radius / cell radius
    nucleus_offset: float = 0.0  # eccentricity (0 central … 1 at the membrane)
    nucleus_elongation: float = 1.0
    nucleus_roughness: float = 0.04
    chromatin: str = "fine"  # fine | lacy | coarse | clumped | clockface | pyknotic
    nucleus_amount: float = 1.0
    nucleoli: int = 0
    nucleolus_um: float = 1.0
    granules: list[Granules] = field(default_factory=list)
    fine_granularity: float = 0.0  # neutrophil-type dust
    vacuoles: int = 0
    vacuole_um: tuple[float, float] = (0.4, 1.2)
    hof: float = 0.0  # 0..1 strength of the perinuclear pale zone (plasma cells, Golgi zone)
    hairy: int = 0  # number of hair-like projections
    auer_rods: int = 0
    faggot: bool = False
    blebs: int = 0  # cytoplasmic tufts (proerythroblasts)
    cleft: float = 0.0  # depth of a nuclear cleft/notch (0..1)
    lobes: int = 1
    inclusions: int = 0  # phagocytosed debris (macrophages)
    platelet_budding: bool = False
    fade: float = 1.0  # < 1 washes the whole cell out (degenerated, not identifiable)
    smudge: bool = False


@dataclass
class CellSprite:
    """A painted cell: OD patch, cell mask, and where the patch's (0, 0) lies in canvas pixels."""

    od: np.ndarray  # (h, w, 3) float32
    mask: np.ndarray  # (h, w) bool: the cell's extent (nucleus ∪ cytoplasm)
    x0: int
    y0: int


def _nucleus_mask(
    plan: CellPlan, rng: np.random.Generator, shape: tuple[int, int], c: tuple[float, float], rn: float, angle: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw the nucleus for the plan's shape: a uint8 mask, and for lobed nuclei the lobes' outlines."""
    m = np.zeros(shape, np.uint8)
    kind = plan.nucleus_shape
    seams = np.zeros(shape, np.uint8) if kind in ("multilobed", "segmented", "bilobed") else None
    ca, sa = np.cos(angle), np.sin(angle)

    def along(t: float, bend: float, length: float) -> tuple[float, float]:
        # A point on a bent centre line (for bands and lobes), in patch pixels.
        x = length * t
        y = bend * length * (t * t - 0.25) * 1.2
        return c[0] + ca * x - sa * y, c[1] + sa * x + ca * y

    if kind in ("round", "oval"):
        fill(m, outline(rng, c, (rn, rn * plan.nucleus_elongation), angle, plan.nucleus_roughness))
    elif kind == "kidney":
        fill(m, outline(rng, c, (rn, rn * 0.85), angle, plan.nucleus_roughness))
        depth = rng.uniform(0.35, 0.6) if plan.cleft == 0 else plan.cleft
        cx, cy = c[0] + ca * rn * (1.45 - depth), c[1] + sa * rn * (1.45 - depth)
        cv2.circle(m, (int(cx * 4), int(cy * 4)), int(rn * 0.75 * 4), 0, -1, cv2.LINE_AA, shift=2)
    elif kind == "band":
        width = rn * rng.uniform(0.38, 0.5)
        length = rn * rng.uniform(2.2, 2.8)
        bend = rng.uniform(0.8, 1.6) * rng.choice([-1, 1])
        for t in np.linspace(-0.5, 0.5, 40):
            x, y = along(float(t), bend, length)
            w = width * (0.85 + 0.15 * np.cos(np.pi * t * 3) * rng.uniform(0.5, 1))
            cv2.circle(m, (int(x * 4), int(y * 4)), int(w * 4), 255, -1, cv2.LINE_AA, shift=2)
    elif kind in ("segmented", "bilobed", "multilobed"):
        n = plan.lobes
        length = rn * (1.1 if n == 2 else 2.0 if kind == "segmented" else 1.4)
        bend = rng.uniform(0.6, 1.8) * rng.choice([-1, 1])
        lobe_r = rn * (0.62 if n == 2 else 0.5 if kind == "segmented" else 0.55)
        centres = []
        for i in range(n):
            if kind == "multilobed":
                a = rng.uniform(0, 2 * np.pi)
                d = rn * rng.uniform(0.0, 0.75)
                centres.append((c[0] + d * np.cos(a), c[1] + d * np.sin(a)))
            else:
                t = (i / max(n - 1, 1) - 0.5) + rng.normal(0, 0.05)
                x, y = along(t, bend, length)
                centres.append((x + rng.normal(0, rn * 0.12), y + rng.normal(0, rn * 0.12)))
        for x, y in centres:
            r = lobe_r * rng.uniform(0.8, 1.15)
            poly = outline(rng, (x, y), (r, r * rng.uniform(0.7, 1.0)), rng.uniform(0, np.pi), 0.06)
            fill(m, poly)
            if seams is not None:
                # Each lobe's own membrane stays visible where lobes overlap (lobulation of megakaryocytes).
                cv2.polylines(seams, [poly], True, 255, max(1, int(rn * 0.04)), cv2.LINE_AA, shift=2)
        if kind != "multilobed":
            thick = max(1, int(rn * 0.08))
            for (x1, y1), (x2, y2) in itertools.pairwise(centres):
                cv2.line(m, (int(x1 * 4), int(y1 * 4)), (int(x2 * 4), int(y2 * 4)), 255, thick, cv2.LINE_AA, shift=2)
    elif kind == "folded":
        for _ in range(3):
            off = rng.normal(0, rn * 0.25, 2)
            fill(m, outline(rng, (c[0] + off[0], c[1] + off[1]), (rn * 0.8, rn * 0.62), rng.uniform(0, np.pi), 0.1))
        cx, cy = c[0] + ca * rn * 1.0, c[1] + sa * rn * 1.0
        cv2.circle(m, (int(cx * 4), int(cy * 4)), int(rn * 0.5 * 4), 0, -1, cv2.LINE_AA, shift=2)
    elif kind == "binucleate":
        for s in (-1, 1):
            x, y = c[0] + s * ca * rn * 0.55, c[1] + s * sa * rn * 0.55
            fill(m, outline(rng, (x, y), (rn * 0.55, rn * 0.6), angle, plan.nucleus_roughness))
    elif kind == "fragments":
        for _ in range(int(rng.integers(2, 6))):
            off = rng.normal(0, rn * 0.45, 2)
            r = rn * rng.uniform(0.18, 0.35)
            cv2.circle(
                m, (int((c[0] + off[0]) * 4), int((c[1] + off[1]) * 4)), int(r * 4), 255, -1, cv2.LINE_AA, shift=2
            )
    else:
        raise ValueError(f"unknown nucleus shape {kind!r}")
    if plan.cleft > 0 and kind in ("round", "oval"):
        # A cleft: a narrow wedge cut from the rim towards the centre (lymphoma "buttock" cells).
        a = rng.uniform(0, 2 * np.pi)
        tip = (c[0] + np.cos(a) * rn * (1 - plan.cleft), c[1] + np.sin(a) * rn * (1 - plan.cleft))
        rim = (c[0] + np.cos(a) * rn * 1.3, c[1] + np.sin(a) * rn * 1.3)
        w = max(2.0, rn * 0.12)
        cv2.line(
            m, (int(tip[0] * 4), int(tip[1] * 4)), (int(rim[0] * 4), int(rim[1] * 4)), 0, int(w), cv2.LINE_AA, shift=2
        )
    return m, seams


def _chromatin(
    plan: CellPlan, rng: np.random.Generator, nuc: np.ndarray, px_um: float, c: tuple[float, float], rn: float
) -> np.ndarray:
    """Stain amount inside the nucleus: the chromatin pattern that tells blasts from mature cells."""
    shape = nuc.shape
    s = 1.0 / px_um  # px per µm
    kind = plan.chromatin
    if kind == "fine":
        amt = 0.95 + 0.14 * fractal_noise(rng, shape, 0.5 * s, 2) + 0.1 * value_noise(rng, shape, 0.22 * s)
    elif kind == "lacy":
        n = fractal_noise(rng, shape, 0.9 * s, 2)
        amt = 0.85 + 0.25 * np.abs(n)
    elif kind == "coarse":
        n = fractal_noise(rng, shape, 0.8 * s, 2)
        amt = 0.9 + 0.45 * np.clip(n, 0, None)
    elif kind in ("clumped", "clockface"):
        n = fractal_noise(rng, shape, 0.9 * s, 2)
        if kind == "clockface":
            yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
            ang = np.arctan2(yy - c[1], xx - c[0])
            r = np.hypot(xx - c[0], yy - c[1]) / max(rn, 1.0)
            n = n + 0.9 * np.cos(ang * rng.integers(5, 8)) * np.clip(r, 0, 1)
        clumps = cv2.GaussianBlur((n > 0.15).astype(np.float32), (0, 0), 0.35 * s)
        amt = 0.85 + 0.95 * clumps
    elif kind == "pyknotic":
        amt = 1.9 + 0.15 * value_noise(rng, shape, 0.6 * s)
    else:
        raise ValueError(f"unknown chromatin {kind!r}")
    # Chromatin condenses along the nuclear membrane: a darker rim.
    f = soft(nuc, 0.6)
    rim = np.clip(f - soft(cv2.erode(nuc, np.ones((5, 5), np.uint8), iterations=max(1, int(0.25 * s / 2))), 1.0), 0, 1)
    return (amt * plan.nucleus_amount + 0.35 * rim).astype(np.float32)


def paint_cell(
    plan: CellPlan, rng: np.random.Generator, stain: SlideStain, px_um: float, cx_px: float, cy_px: float
) -> CellSprite:
    """Paint one nucleated cell centred at (cx_px, cy_px) of the canvas."""
    s = 1.0 / px_um
    r = plan.radius_um * s
    extra = 4.5 * s if plan.hairy else 1.0 * s
    reach = max(1.0, plan.elongation, plan.nucleus_rel / max(plan.nucleus_elongation, 0.1))
    half = int(np.ceil(r * reach * (1 + 1.8 * plan.roughness) + extra + 4))
    shape = (2 * half, 2 * half)
    x0, y0 = round(cx_px) - half, round(cy_px) - half
    c = (cx_px - x0, cy_px - y0)
    angle = rng.uniform(0, np.pi)

    body = np.zeros(shape, np.uint8)
    fill(body, outline(rng, c, (r, r * plan.elongation), angle, plan.roughness, harmonics=6))
    if plan.hairy:
        _hairs(body, rng, c, r, plan.hairy, s)

    ecc_a = rng.uniform(0, 2 * np.pi)
    rn = r * plan.nucleus_rel
    shift = plan.nucleus_offset * max(r - rn, 0.0)
    nc = (c[0] + np.cos(ecc_a) * shift, c[1] + np.sin(ecc_a) * shift)
    nuc, seams = _nucleus_mask(plan, rng, shape, nc, rn, rng.uniform(0, 2 * np.pi))
    nuc = cv2.bitwise_and(nuc, body) if not plan.smudge else nuc

    layers: dict[str, np.ndarray] = {}

    def add(name: str, amount: np.ndarray) -> None:
        # One amount map per colour; turned into OD by a single matrix product at the end.
        if name in layers:
            layers[name] += amount
        else:
            layers[name] = amount.astype(np.float32, copy=True)

    fbody = soft(body, 0.5 * s * 0.5)
    fnuc = soft(nuc, 0.25 * s)
    cyto_region = np.clip(fbody - fnuc, 0.0, 1.0)

    # Cytoplasm: thicker in the middle, with a faint texture.
    yy = np.arange(shape[0], dtype=np.float32)[:, None]
    xx = np.arange(shape[1], dtype=np.float32)[None, :]
    dome = 1.0 - 0.35 * np.clip(np.hypot(xx - c[0], yy - c[1]) / max(r, 1.0), 0, 1) ** 2
    camt = cyto_region * dome * (1.0 + plan.cyto_texture * fractal_noise(rng, shape, 1.2 * s, 2))
    if plan.hof > 0:
        # Perinuclear hof / Golgi zone: pale crescent on the side of the nucleus facing the cell centre.
        hx = nc[0] - np.cos(ecc_a) * rn * 0.9
        hy = nc[1] - np.sin(ecc_a) * rn * 0.9
        hof = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (rn * 0.45) ** 2))
        camt *= 1.0 - plan.hof * hof
    if plan.vacuoles:
        vac = dots(rng, shape, cyto_region, plan.vacuoles, (plan.vacuole_um[0] * s, plan.vacuole_um[1] * s))
        camt *= 1.0 - 0.8 * soft(vac, 0.8)
    for name, amount in plan.cytoplasm.items():
        add(name, camt * np.float32(amount))

    if plan.smudge:
        add("smudge", _smudge(rng, nuc, s))
    else:
        namt = _chromatin(plan, rng, nuc, px_um, nc, rn) * fnuc
        if seams is not None:
            namt = namt + 0.35 * soft(cv2.bitwise_and(seams, nuc), 0.15 * s)
        if plan.nucleoli:
            nmask = np.zeros(shape, np.uint8)
            for _ in range(plan.nucleoli):
                a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.5) * rn
                rr = plan.nucleolus_um * s * rng.uniform(0.7, 1.2) / 2
                cv2.circle(
                    nmask,
                    (int((nc[0] + d * np.cos(a)) * 4), int((nc[1] + d * np.sin(a)) * 4)),
                    int(rr * 4),
                    255,
                    -1,
                    cv2.LINE_AA,
                    shift=2,
                )
            fnl = soft(cv2.bitwise_and(nmask, nuc), 0.12 * s)
            namt = namt * (1.0 - 0.55 * fnl)
            add("nucleolus", fnl * 0.6)
        add("nucleus", namt)
        add("chromatin", np.clip(namt - 1.0, 0, None) * fnuc)

    if plan.fine_granularity > 0:
        speck = np.clip(value_noise(rng, shape, 0.15 * s), 0, None) * cyto_region * plan.fine_granularity
        add("gran_fine", speck)
    area100 = np.pi * plan.radius_um**2 * plan.elongation / 100.0
    for g in plan.granules:
        region = fbody if g.over_nucleus else cyto_region
        count = int(rng.poisson(g.density * area100))
        gm = dots(rng, shape, region, count, (g.radius_um[0] * s, g.radius_um[1] * s))
        add(g.colour, soft(gm, 0.1 * s) * g.amount)
    if plan.auer_rods or plan.faggot:
        add("auer", _auer(rng, cyto_region if not plan.faggot else fbody, s, plan.auer_rods, plan.faggot))
    if plan.inclusions:
        inc = dots(rng, shape, cyto_region, plan.inclusions, (0.4 * s, 1.3 * s))
        add("precipitate", soft(inc, 0.2 * s) * 1.2)
    if plan.platelet_budding:
        rim = np.clip(fbody - soft(cv2.erode(body, np.ones((3, 3), np.uint8), iterations=int(1.5 * s)), 1), 0, 1)
        pm = dots(rng, shape, rim * 2, int(rng.integers(6, 18)), (0.4 * s, 0.8 * s))
        add("platelet", soft(pm, 0.2 * s))
    # Cell-to-cell staining differences (thickness, dye uptake): within-class variation a classifier must absorb.
    jitter = np.float32(rng.uniform(0.88, 1.12)) * (1.0 + rng.normal(0.0, 0.035, 3)).astype(np.float32)
    colours = np.stack([stain.od(n) for n in layers]) * np.float32(plan.fade) * jitter
    od = (np.stack(list(layers.values()), axis=-1) @ colours).astype(np.float32)
    mask = (fbody > 0.5) | (fnuc > 0.5)
    return CellSprite(od, mask, x0, y0)


def _hairs(body: np.ndarray, rng: np.random.Generator, c: tuple[float, float], r: float, n: int, s: float) -> None:
    """Hair-like cytoplasmic projections: thin, wavy, 1.5–4 µm long (hairy cell leukaemia)."""
    for a in rng.uniform(0, 2 * np.pi, n):
        length = rng.uniform(1.5, 4.0) * s
        x, y = c[0] + np.cos(a) * r * 0.95, c[1] + np.sin(a) * r * 0.95
        pts = [(x, y)]
        for _ in range(4):
            a += rng.normal(0, 0.35)
            x, y = x + np.cos(a) * length / 4, y + np.sin(a) * length / 4
            pts.append((x, y))
        arr = np.round(np.array(pts) * 4).astype(np.int32)
        cv2.polylines(body, [arr], False, 255, max(1, int(rng.uniform(0.15, 0.35) * s)), cv2.LINE_AA, shift=2)


def _auer(rng: np.random.Generator, region: np.ndarray, s: float, n: int, faggot: bool) -> np.ndarray:
    """Auer rods: red-purple needles; a faggot cell carries a bundle of them."""
    m = np.zeros(region.shape, np.uint8)
    ys, xs = np.nonzero(region > 0.6)
    if len(xs) == 0:
        return np.zeros(region.shape, np.float32)
    bundles = 1 if faggot else n
    for _ in range(bundles):
        i = int(rng.integers(0, len(xs)))
        a = rng.uniform(0, np.pi)
        for _ in range(int(rng.integers(6, 16)) if faggot else 1):
            aa = a + rng.normal(0, 0.25 if faggot else 0)
            length = rng.uniform(3.0, 6.0) * s * (1.3 if faggot else 1.0)
            ox, oy = rng.normal(0, 0.8 * s, 2) if faggot else (0.0, 0.0)
            x1, y1 = xs[i] + ox - np.cos(aa) * length / 2, ys[i] + oy - np.sin(aa) * length / 2
            x2, y2 = xs[i] + ox + np.cos(aa) * length / 2, ys[i] + oy + np.sin(aa) * length / 2
            cv2.line(
                m,
                (int(x1 * 4), int(y1 * 4)),
                (int(x2 * 4), int(y2 * 4)),
                255,
                max(1, int(0.22 * s)),
                cv2.LINE_AA,
                shift=2,
            )
    return soft(m, 0.1 * s) * 1.3


def _smudge(rng: np.random.Generator, nuc: np.ndarray, s: float) -> np.ndarray:
    """A smudge cell: chromatin smeared into a streaky, net-like pale-violet patch without cytoplasm."""
    shape = nuc.shape
    grid = rng.standard_normal((max(2, int(shape[0] / (0.7 * s))), max(2, int(shape[1] / (1.8 * s)))))
    streak = cv2.resize(grid.astype(np.float32), shape[::-1], interpolation=cv2.INTER_CUBIC)
    angle = rng.uniform(0, 180)
    rot = cv2.getRotationMatrix2D((shape[1] / 2, shape[0] / 2), angle, 1.0)
    streak = cv2.warpAffine(streak, rot, shape[::-1], borderMode=cv2.BORDER_REFLECT)
    f = soft(nuc, 1.2 * s)
    amt = f * (0.55 + 0.25 * np.abs(streak) + 0.3 * np.abs(fractal_noise(rng, shape, 0.6 * s, 2)))
    return np.clip(amt, 0, None)
