"""Lazy, deterministic placement of every object on the slide, block by block.

The slide is cut into 50 µm blocks; the objects whose centres lie in a block are drawn from a
generator seeded by (slide seed, purpose, block x, block y). A FOV gathers the blocks it touches, so
two overlapping FOVs see the same cells in the same places, in any order, and nothing is stored.
Densities come from `SmearGeometry`, the same fields that shape the overview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from acquisition.catalogue import CLASS_CODES
from acquisition.simulator.slide import SmearGeometry

BLOCK_UM = 50.0
#: Largest reach of an object beyond its centre (megakaryocytes, clusters) that a FOV must gather.
MARGIN_UM = 40.0
RBC_AREA_UM2 = np.pi * 3.75**2
_MAX_COVERAGE = 6.0
#: A smear is at most about two cells thick: coverage beyond 1 + this adds no more red cells.
_EXTRA_LAYERS = 1.0
_OFFSET = 1 << 20  # block indices made non-negative for SeedSequence
#: Two spread cells' centres stay at least this times the sum of their typical radii apart: they may
#: touch and their rims may meet, as cytoplasm gives way, but one does not lie over the other.
_SPREAD = 0.95
#: Extra candidates where cells spread, so that the thinning keeps about the slide's cellularity.
_SPREAD_EXCESS = 2.0

#: Typical radius (µm) of each class, for spacing clustered and touching cells.
TYPICAL_RADIUS_UM: dict[str, float] = {
    "BLA": 7.5, "APL": 9.0, "HAC": 7.0, "LYM": 7.0, "TUM": 12.0, "ABE": 7.5, "APC": 9.5, "PMO": 9.0,
    "MYB": 7.2, "MMZ": 6.5, "NGB": 6.5, "NGS": 6.5, "EOS": 7.0, "BAS": 6.2, "MON": 8.5, "LYT": 4.6,
    "PLM": 6.2, "PEB": 8.5, "EBO": 4.8, "MKC": 24.0, "MAC": 14.0, "KSC": 7.5, "NIF": 6.5,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RedCell:
    x: float
    y: float
    radius: float
    ratio: float
    angle: float
    pallor: float
    crenation: float
    seed: int
    form: str = "disc"  # disc | target | spherocyte (poikilocytes seen in most marrows)


@dataclass(frozen=True, slots=True)
class Platelet:
    x: float
    y: float
    radius: float
    clump: int
    seed: int


@dataclass(frozen=True, slots=True)
class Particle:
    """A non-cellular object: stain precipitate, dust/debris, a fibre."""

    kind: str
    x: float
    y: float
    size: float
    seed: int


@dataclass(frozen=True, slots=True)
class NucleatedCell:
    x: float
    y: float
    code: str
    scale: float
    z: float
    seed: int


@dataclass
class Content:
    red: list[RedCell] = field(default_factory=list)
    platelets: list[Platelet] = field(default_factory=list)
    particles: list[Particle] = field(default_factory=list)
    cells: list[NucleatedCell] = field(default_factory=list)

    def extend(self, other: Content) -> None:
        self.red += other.red
        self.platelets += other.platelets
        self.particles += other.particles
        self.cells += other.cells


@dataclass(frozen=True)
class SlideComposition:
    """Per-slide parameters of the object populations."""

    class_weights: tuple[float, ...]  # aligned with CLASS_CODES
    cellularity: float  # nucleated cells per 10 000 µm² at coverage 1
    cluster_fraction: dict[str, float]
    rbc_radius_um: float
    crenated_fraction: float
    rouleaux: float
    platelets_per_rbc: float
    touching_pairs: float


class ObjectField:
    """All objects of one slide, generated on demand per block (see module docstring)."""

    def __init__(self, seed: int, geometry: SmearGeometry, composition: SlideComposition) -> None:
        self.seed = seed
        self.geometry = geometry
        self.comp = composition
        w = np.asarray(composition.class_weights, np.float64)
        self._p = w / w.sum()
        self.block = lru_cache(maxsize=512)(self._block)
        self.cell_block = lru_cache(maxsize=1024)(self._cell_block)
        self.cell_candidates = lru_cache(maxsize=2048)(self._cell_candidates)
        self._spacing = 2.0 * composition.rbc_radius_um * 1.02
        rng = np.random.default_rng([seed, 5])
        a = rng.uniform(0, np.pi / 3)
        self._basis = np.array([[np.cos(a), np.sin(a)], [np.cos(a + np.pi / 3), np.sin(a + np.pi / 3)]]) * self._spacing

    def _lattice(self, bx: int, by: int) -> tuple[np.ndarray, np.ndarray]:
        """Hexagonal lattice points whose positions fall inside block (bx, by)."""
        corners = np.array([[bx, by], [bx + 1, by], [bx, by + 1], [bx + 1, by + 1]], np.float64) * BLOCK_UM
        ij = corners @ np.linalg.inv(self._basis)
        lo, hi = np.floor(ij.min(axis=0)) - 1, np.ceil(ij.max(axis=0)) + 1
        ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        pts = np.stack([ii.ravel(), jj.ravel()], axis=1) @ self._basis
        inside = (
            (pts[:, 0] >= bx * BLOCK_UM) & (pts[:, 0] < (bx + 1) * BLOCK_UM)
            & (pts[:, 1] >= by * BLOCK_UM) & (pts[:, 1] < (by + 1) * BLOCK_UM)
        )  # fmt: skip
        return pts[inside, 0], pts[inside, 1]

    def _cells_near(self, bx: int, by: int) -> np.ndarray:
        """(x, y, exclusion radius) of nucleated cells in this block and its 8 neighbours."""
        rows = [
            (n.x, n.y, TYPICAL_RADIUS_UM[n.code] * n.scale * 1.05 + 1.5)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            for n in self.cell_block(bx + dx, by + dy)
        ]
        return np.array(rows, np.float64).reshape(-1, 3)

    def _cell_block(self, bx: int, by: int) -> tuple[NucleatedCell, ...]:
        """Nucleated cells of one block, some in clusters, some as touching pairs.

        Where the smear is one cell thick, cells spread side by side and do not lie on one another
        (Matérn type II thinning: of two candidates closer than `_SPREAD` x the sum of their radii, the
        later-marked one is dropped); where it is thicker, they pile up. Independent Poisson positions
        had nucleated cells overlapping everywhere: in the fields the AOI picks, 38 % of cells were more
        than a tenth and 14 % more than half covered by another nucleated cell (now 16 % and 3 %, from
        clusters and touching pairs), which no well-spread marrow smear shows; and since stain densities
        add, which of two such cells lies on top cannot be seen at all.
        """
        c = Content()
        mine = self.cell_candidates(bx, by)
        others = np.concatenate([self.cell_candidates(bx + dx, by + dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        rng = self._rng(6, bx, by)
        for x, y, d, mark, radius, code in mine:
            reach = _spread(d) * (radius + others[:, 4])
            close = np.hypot(others[:, 0] - x, others[:, 1] - y) < reach
            if np.any(close & (others[:, 3] < mark)):
                continue
            self._nucleated(c, rng, float(x), float(y), float(d), CLASS_CODES[int(code)])
        return tuple(c.cells)

    def _cell_candidates(self, bx: int, by: int) -> np.ndarray:
        """Candidate cells of one block as rows (x, y, coverage, mark, typical radius, class index); they
        depend on this block's generator alone, so a block's thinning can see its neighbours' candidates."""
        rng = self._rng(2, bx, by)
        # thinned below by min(d, 2) / 3, and raised where spreading will thin them again
        lam = self.comp.cellularity / 1e4 * BLOCK_UM * BLOCK_UM * 3.0 * _SPREAD_EXCESS
        xs, ys = self._points(rng, bx, by, lam)
        d = self.geometry.coverage(xs, ys) if len(xs) else np.zeros(0)
        codes = rng.choice(len(CLASS_CODES), size=len(xs), p=self._p)
        marks = rng.random(len(xs))
        excess = 1.0 + (_SPREAD_EXCESS - 1.0) * _spread(d) / _SPREAD
        keep = rng.random(len(xs)) * _SPREAD_EXCESS < np.minimum(d, 2.0) / 3.0 * excess
        radius = np.array([TYPICAL_RADIUS_UM[CLASS_CODES[k]] for k in codes], np.float64) * _cell_scale(d)
        rows = np.stack([xs, ys, d, marks, radius, codes.astype(np.float64)], axis=1)
        return rows[keep]

    def gather(self, x0: float, y0: float, x1: float, y1: float) -> Content:
        """Every object whose centre lies within the rectangle grown by `MARGIN_UM`."""
        out = Content()
        bx0, bx1 = int(np.floor((x0 - MARGIN_UM) / BLOCK_UM)), int(np.floor((x1 + MARGIN_UM) / BLOCK_UM))
        by0, by1 = int(np.floor((y0 - MARGIN_UM) / BLOCK_UM)), int(np.floor((y1 + MARGIN_UM) / BLOCK_UM))
        for by in range(by0, by1 + 1):
            for bx in range(bx0, bx1 + 1):
                out.extend(self.block(bx, by))
        return out

    def _rng(self, purpose: int, bx: int, by: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, purpose, bx + _OFFSET, by + _OFFSET])

    def _points(self, rng: np.random.Generator, bx: int, by: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
        n = int(rng.poisson(lam))
        return bx * BLOCK_UM + rng.uniform(0, BLOCK_UM, n), by * BLOCK_UM + rng.uniform(0, BLOCK_UM, n)

    def _block(self, bx: int, by: int) -> Content:
        c = Content()
        g, comp = self.geometry, self.comp
        area = BLOCK_UM * BLOCK_UM

        # Red cells: a jittered, thinned hexagonal lattice (a monolayer's cells barely overlap), plus a
        # Poisson excess where the smear is thicker than one layer (there they pile up).
        rng = self._rng(1, bx, by)
        xs, ys = self._lattice(bx, by)
        xs = xs + rng.uniform(-0.22, 0.22, len(xs)) * self._spacing
        ys = ys + rng.uniform(-0.22, 0.22, len(ys)) * self._spacing
        d = g.coverage(xs, ys) if len(xs) else np.zeros(0)
        keep = rng.random(len(xs)) < d
        ex, ey = self._points(rng, bx, by, _MAX_COVERAGE * area / RBC_AREA_UM2)
        ed = g.coverage(ex, ey) if len(ex) else np.zeros(0)
        ekeep = rng.random(len(ex)) < np.clip(ed - 1.0, 0.0, _EXTRA_LAYERS) / _MAX_COVERAGE
        near = self._cells_near(bx, by)
        for x, y, dd in zip(np.r_[xs[keep], ex[ekeep]], np.r_[ys[keep], ey[ekeep]], np.r_[d[keep], ed[ekeep]],
                            strict=True):  # fmt: skip
            # Nucleated cells push red cells aside in a monolayer; in thick areas they lie on top.
            if dd < 1.1 and near.size and np.any(np.hypot(near[:, 0] - x, near[:, 1] - y) < near[:, 2]):
                continue
            self._red_cell(c, rng, float(x), float(y), float(dd))

        c.cells = list(self.cell_block(bx, by))

        # Platelets scale with the red cells (both come with the plasma).
        rng = self._rng(3, bx, by)
        xs, ys = self._points(rng, bx, by, _MAX_COVERAGE * area / RBC_AREA_UM2 * comp.platelets_per_rbc)
        d = g.coverage(xs, ys) if len(xs) else np.zeros(0)
        keep = rng.random(len(xs)) < d / _MAX_COVERAGE
        for x, y in zip(xs[keep], ys[keep], strict=True):
            clump = int(rng.integers(3, 12)) if rng.random() < 0.12 else 1
            c.platelets.append(Platelet(float(x), float(y), float(rng.uniform(0.9, 1.6)), clump, _s(rng)))

        # Stain precipitate and small dust.
        rng = self._rng(4, bx, by)
        cx, cy = (bx + 0.5) * BLOCK_UM, (by + 0.5) * BLOCK_UM
        lam = float(g.precipitate_density(np.array([cx]), np.array([cy]))[0]) / 100.0 * area
        xs, ys = self._points(rng, bx, by, lam)
        for x, y in zip(xs, ys, strict=True):
            size = float(np.exp(rng.uniform(np.log(0.3), np.log(2.2))))
            c.particles.append(Particle("precipitate", float(x), float(y), size, _s(rng)))
        if rng.random() < 0.05:
            kind = "fibre" if rng.random() < 0.3 else "debris"
            x, y = self._points(rng, bx, by, 1.0)
            if len(x):
                c.particles.append(Particle(kind, float(x[0]), float(y[0]), float(rng.uniform(2, 9)), _s(rng)))
        for a in g.artefacts:
            if a.kind == "debris" and bx == int(np.floor(a.x / BLOCK_UM)) and by == int(np.floor(a.y / BLOCK_UM)):
                c.particles.append(Particle("debris", a.x, a.y, a.size, _s(rng)))
        return c

    def _red_cell(self, c: Content, rng: np.random.Generator, x: float, y: float, d: float) -> None:
        comp = self.comp
        # Central pallor shows in a monolayer; thick areas and the flattened tail lose it.
        pallor = float(np.clip(0.7 - 0.35 * max(d - 0.9, 0.0), 0.1, 0.7) * (0.45 if d < 0.18 else 1.0))
        # Rouleaux: a few lattice cells become stacks of coins (rarer per cell since a stack is several cells).
        stack = d > 0.9 and rng.random() < comp.rouleaux * min(d, 2.5) / 2.5 / 5.0
        n = int(rng.integers(3, 9)) if stack else 1
        a = rng.uniform(0, np.pi)
        step = rng.uniform(0.45, 0.7) * 2 * comp.rbc_radius_um
        for i in range(n):
            r = comp.rbc_radius_um * float(np.clip(rng.normal(1.0, 0.09), 0.7, 1.35)) * (1.0 + 0.08 * (d < 0.2))
            cren = float(rng.uniform(0.04, 0.1)) if rng.random() < comp.crenated_fraction else 0.0
            u = rng.random()
            form = "target" if u < 0.03 else "spherocyte" if u < 0.06 else "disc"
            if form == "spherocyte":
                r *= 0.8
            c.red.append(
                RedCell(
                    x + i * step * np.cos(a),
                    y + i * step * np.sin(a),
                    r,
                    float(rng.uniform(0.82, 1.0)),
                    float(rng.uniform(0, np.pi)),
                    pallor * (0.5 if n > 1 else 1.0),
                    cren,
                    _s(rng),
                    form,
                )
            )

    def _nucleated(self, c: Content, rng: np.random.Generator, x: float, y: float, d: float, code: str) -> None:
        comp = self.comp
        scale = float(_cell_scale(np.float64(d)))
        members = [(x, y, code)]
        if rng.random() < comp.cluster_fraction.get(code, 0.0):
            for _ in range(int(rng.integers(2, 7))):
                px, py, pcode = members[int(rng.integers(0, len(members)))]
                dist = (TYPICAL_RADIUS_UM[pcode] + TYPICAL_RADIUS_UM[code]) * rng.uniform(0.7, 0.95) * scale
                a = rng.uniform(0, 2 * np.pi)
                members.append((px + dist * np.cos(a), py + dist * np.sin(a), code))
        elif rng.random() < comp.touching_pairs:
            other = CLASS_CODES[int(rng.choice(len(CLASS_CODES), p=self._p))]
            dist = (TYPICAL_RADIUS_UM[code] + TYPICAL_RADIUS_UM[other]) * rng.uniform(0.75, 1.02) * scale
            a = rng.uniform(0, 2 * np.pi)
            members.append((x + dist * np.cos(a), y + dist * np.sin(a), other))
        for mx, my, mcode in members:
            c.cells.append(NucleatedCell(float(mx), float(my), mcode, scale, float(rng.random()), _s(rng)))


def _cell_scale(d: np.ndarray) -> np.ndarray:
    """Thick areas: cells do not spread and look smaller; the thin tail flattens them."""
    return 1.0 / (1.0 + 0.12 * np.maximum(d - 1.0, 0.0)) * np.where(d < 0.25, 1.06, 1.0)


def _spread(d: np.ndarray) -> np.ndarray:
    """How far apart (x the sum of their radii) two cells stay at coverage d: `_SPREAD` in a monolayer,
    falling to 0 (free to overlap) where the smear is 1.5 cells thick."""
    return _SPREAD * np.clip((1.5 - d) / 0.4, 0.0, 1.0)


def _s(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**62))
