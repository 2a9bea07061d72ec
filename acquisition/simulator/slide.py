"""Slide geometry: where the smear is thick, thin, feathered or absent, and where the artefacts lie.

Everything is an analytic function of slide µm, so the 10x overview, the quality labels of its grid
tiles and every 40x FOV sample the same slide wherever they look. A wedge smear is modelled along x:
thick head at x = 0 (left), monolayer further right, the feathered edge near `tail_x`, glass beyond,
with the smear's lateral borders near the top and bottom of the scan area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: RBC coverage (sum of red-cell areas / area) bounds of the quality classes.
DENSE_ABOVE = 1.3
OPTIMAL = (0.42, 0.9)
SPARSE_BELOW = 0.22
BACKGROUND_BELOW = 0.04
ARTEFACT_COVERAGE = 0.12


@dataclass(frozen=True)
class Artefact:
    """One slide artefact. Scratches are segments (x, y) → (x2, y2) of width `size`; others are discs."""

    kind: str  # precipitate | scratch | bubble | debris
    x: float
    y: float
    size: float  # radius (µm) of discs, width (µm) of scratches
    x2: float = 0.0
    y2: float = 0.0

    def footprint(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where this artefact spoils the smear (for quality labels)."""
        if self.kind == "scratch":
            return _segment_distance(x, y, self) < self.size / 2 + 15.0  # cells dragged beside the groove
        reach = self.size / 2 if self.kind == "debris" else self.size  # debris `size` is a diameter
        return np.hypot(x - self.x, y - self.y) < reach


def _segment_distance(x: np.ndarray, y: np.ndarray, a: Artefact) -> np.ndarray:
    dx, dy = a.x2 - a.x, a.y2 - a.y
    t = np.clip(((x - a.x) * dx + (y - a.y) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(x - (a.x + t * dx), y - (a.y + t * dy))


class SmearGeometry:
    """The smear's RBC coverage field and artefacts for one slide (see module docstring)."""

    def __init__(self, rng: np.random.Generator, scan_area_um: tuple[float, float]) -> None:
        w, h = scan_area_um
        self.width, self.height = float(w), float(h)
        self.tail_x = w * rng.uniform(0.74, 0.9)
        self.tail_recede = w * rng.uniform(0.08, 0.2)  # the feathered edge is convex (bullet shaped)
        self.top = h * rng.uniform(0.05, 0.14)
        self.bottom = h * (1 - rng.uniform(0.05, 0.14))
        self.d0 = rng.uniform(2.3, 3.2)
        self.power = rng.uniform(1.2, 1.6)
        n = 14
        wavelength = rng.uniform(250.0, 2200.0, n)
        direction = rng.uniform(0, 2 * np.pi, n)
        self._kx = 2 * np.pi / wavelength * np.cos(direction)
        self._ky = 2 * np.pi / wavelength * np.sin(direction)
        self._phase = rng.uniform(0, 2 * np.pi, n)
        # Long waves carry the patchiness; short ones only a little (a FOV should be roughly uniform).
        self._amp = rng.uniform(0.08, 0.2, n) * (wavelength / 2200.0) ** 1.2
        self._edge_k = 2 * np.pi / rng.uniform(60.0, 500.0, 10)
        self._edge_phase = rng.uniform(0, 2 * np.pi, 10)
        self._edge_amp = rng.uniform(10.0, 70.0, 10)
        # Mottling of the plasma film (protein and stain lie unevenly at the 10-60 µm scale).
        wl = rng.uniform(8.0, 60.0, 10)
        dirn = rng.uniform(0, 2 * np.pi, 10)
        self._film = (2 * np.pi / wl * np.cos(dirn), 2 * np.pi / wl * np.sin(dirn), rng.uniform(0, 2 * np.pi, 10))
        self.film_strength = float(rng.uniform(0.1, 0.35))
        self.artefacts = _random_artefacts(rng, self)

    def film(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Plasma-film mottling, about zero mean and unit amplitude."""
        kx, ky, ph = self._film
        out = np.zeros(np.broadcast(x, y).shape)
        for a, b, c in zip(kx, ky, ph, strict=True):
            out += np.sin(a * x + b * y + c)
        return out / np.sqrt(len(kx) / 2)

    def tail_at(self, y: np.ndarray) -> np.ndarray:
        """x of the feathered edge at height y: receding at the sides, with irregular tongues."""
        mid, half = (self.top + self.bottom) / 2, (self.bottom - self.top) / 2
        t = self.tail_x - self.tail_recede * ((y - mid) / half) ** 2
        for k, ph, a in zip(self._edge_k, self._edge_phase, self._edge_amp, strict=True):
            t = t + a * np.sin(k * y + ph)
        return t

    def coverage(self, x: np.ndarray, y: np.ndarray, scratches: bool = True) -> np.ndarray:
        """RBC coverage (red-cell area per area; 1 ≈ a closed monolayer) at slide points (µm)."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        u = x / self.tail_at(y)
        base = self.d0 * np.clip(1.0 - u, 0.0, 1.0) ** self.power
        base = base + 0.05 * np.exp(-np.clip(u - 1.0, 0.0, None) * 40.0) * (u > 0.9)  # straggling cells
        wav = 40.0 * np.sin(x / 310.0 + 1.3) + 25.0 * np.sin(x / 97.0)
        lateral = _sigmoid((y - self.top - wav) / 40.0) * _sigmoid((self.bottom + wav - y) / 40.0)
        mod = np.zeros_like(x)
        for kx, ky, ph, a in zip(self._kx, self._ky, self._phase, self._amp, strict=True):
            mod += a * np.sin(kx * x + ky * y + ph)
        d = base * lateral * np.exp(mod)
        for a in self.artefacts if scratches else ():
            if a.kind == "scratch":
                d = d * np.clip((_segment_distance(x, y, a) - a.size / 2) / 6.0, 0.0, 1.0)
        return d

    def artefact_coverage(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Where an artefact spoils the view; a scratch only counts where it crosses the smear (on bare
        glass it removes nothing and is hardly visible)."""
        hit = np.zeros(np.shape(x), bool)
        on_smear = None
        for a in self.artefacts:
            fp = a.footprint(x, y)
            if a.kind == "scratch" and fp.any():
                if on_smear is None:
                    on_smear = self.coverage(x, y, scratches=False) >= BACKGROUND_BELOW
                fp &= on_smear
            hit |= fp
        return hit

    def precipitate_density(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Stain precipitate particles per 100 µm²: dense in patches, a light sprinkle everywhere."""
        dens = np.full(np.shape(x), 0.04)
        for a in self.artefacts:
            if a.kind == "precipitate":
                r = np.hypot(x - a.x, y - a.y) / a.size
                dens = dens + 6.0 * np.exp(-(r**4))
        return dens


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _random_artefacts(rng: np.random.Generator, g: SmearGeometry) -> list[Artefact]:
    """Precipitate patches, scratches, air bubbles and debris; counts scale with the scan area."""
    area_mm2 = g.width * g.height / 1e6
    out: list[Artefact] = []

    def pos() -> tuple[float, float]:
        return float(rng.uniform(0, g.width)), float(rng.uniform(0, g.height))

    for _ in range(int(rng.poisson(0.2 * area_mm2)) + 1):
        out.append(Artefact("precipitate", *pos(), size=float(rng.uniform(80, 300))))
    for _ in range(int(rng.poisson(0.05 * area_mm2)) + int(rng.random() < 0.7)):
        x, y = pos()
        a, length = rng.uniform(0, np.pi), rng.uniform(0.2, 0.6) * g.width
        out.append(Artefact("scratch", x, y, float(rng.uniform(4, 14)), x + length * np.cos(a), y + length * np.sin(a)))
    for _ in range(int(rng.poisson(0.06 * area_mm2))):
        out.append(Artefact("bubble", *pos(), size=float(rng.uniform(60, 260))))
    for _ in range(int(rng.poisson(0.8 * area_mm2)) + 2):
        out.append(Artefact("debris", *pos(), size=float(rng.choice([rng.uniform(5, 25), rng.uniform(40, 110)]))))
    return out


def quality_label(coverage: float, artefact_fraction: float) -> str:
    """The ground-truth quality class of a grid tile from its mean coverage and artefact fraction."""
    if artefact_fraction >= ARTEFACT_COVERAGE:
        return "artefact"
    if coverage < BACKGROUND_BELOW:
        return "background"
    if coverage < SPARSE_BELOW:
        return "too_sparse"
    if coverage > DENSE_ABOVE:
        return "too_dense"
    if OPTIMAL[0] <= coverage <= OPTIMAL[1]:
        return "optimal"
    return "acceptable"
