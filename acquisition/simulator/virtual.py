"""The virtual slide: one smear generated once from a seed, then imaged at 10x and at 40x.

`simulate_slide` fixes everything that belongs to the physical slide (smear geometry, artefacts,
object populations, stain batch, illumination) from generators seeded by (seed, purpose); rendering
an overview or a FOV only reads that state, so the same seed gives byte-identical images in any
order, and FOVs agree with the overview about where the smear is thick, thin or spoiled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from acquisition.catalogue import CLASS_CODES
from acquisition.simulator import optics
from acquisition.simulator.fov import Fov, FovContext, render_fov
from acquisition.simulator.objects import ObjectField, SlideComposition
from acquisition.simulator.overview import GridTile, Overview, grid, render_overview
from acquisition.simulator.profiles import CELLULARITY, CLUSTER_FRACTION, class_weights
from acquisition.simulator.slide import SmearGeometry
from acquisition.simulator.stain import SlideStain, random_stain

#: Bumped whenever a change alters the pixels a seed produces (recorded in data sets and manifests).
GENERATOR_VERSION = "1.2.0"

#: Default scan area (µm): large enough for a few hundred optimal tiles, small enough for a quick overview.
DEFAULT_SCAN_AREA_UM = (7000.0, 3500.0)

_PURPOSE = {"geometry": 1, "stain": 2, "composition": 3, "optics": 4}


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, 0x4D4C, _PURPOSE[purpose]])


@dataclass
class VirtualSlide:
    """A simulated MGG bone-marrow smear (see module docstring). Coordinates: slide µm, top-left."""

    seed: int
    profile: str
    barcode: str
    scan_area_um: tuple[float, float]
    rows: int
    cols: int
    geometry: SmearGeometry = field(repr=False)
    stain: SlideStain = field(repr=False)
    composition: SlideComposition = field(repr=False)
    objects: ObjectField = field(repr=False)
    vignette_strength: float = 0.1
    focus_base_um: float = 0.0

    def grid_tiles(self) -> list[GridTile]:
        """Grid tiles with ground-truth quality labels, without rendering the overview."""
        return grid(self.geometry, self.rows, self.cols)

    def render_overview(self) -> Overview:
        return render_overview(self.seed, self.geometry, self.stain, self.rows, self.cols, self.composition.cellularity)

    def render_fov(self, x_um: float, y_um: float) -> Fov:
        """The 40x FOV whose top-left corner lies at slide (x_um, y_um)."""
        ctx = FovContext(self.seed, self.geometry, self.objects, self.stain, self.vignette_strength, self.focus_base_um)
        return render_fov(ctx, float(x_um), float(y_um))


def simulate_slide(
    seed: int,
    profile: str = "normal",
    *,
    scan_area_um: tuple[float, float] = DEFAULT_SCAN_AREA_UM,
    scan_area_mm: tuple[float, float] | None = None,
    class_weights_override: Mapping[str, float] | None = None,
) -> VirtualSlide:
    """Generate the slide for `seed`; the scan area is snapped down to whole grid tiles.

    `scan_area_mm`, if given, overrides `scan_area_um` (the same area in mm).
    `class_weights_override` replaces the profile's class frequencies (any subset of class codes;
    missing classes get 0) while keeping the profile's cellularity.
    """
    if scan_area_mm is not None:
        scan_area_um = (scan_area_mm[0] * 1000.0, scan_area_mm[1] * 1000.0)
    if min(scan_area_um) <= 0:
        raise ValueError(f"scan area must be positive, got {scan_area_um} µm")
    weights = dict(class_weights(profile))
    if class_weights_override is not None:
        unknown = set(class_weights_override) - set(CLASS_CODES)
        if unknown:
            raise ValueError(f"unknown class codes in class weights: {sorted(unknown)}")
        weights = {c: float(class_weights_override.get(c, 0.0)) for c in CLASS_CODES}
        if sum(weights.values()) <= 0:
            raise ValueError("class weights must not all be zero")
    cols = max(1, math.floor(scan_area_um[0] / optics.TILE_WIDTH_UM))
    rows = max(1, math.floor(scan_area_um[1] / optics.TILE_HEIGHT_UM))
    area = (cols * optics.TILE_WIDTH_UM, rows * optics.TILE_HEIGHT_UM)

    geometry = SmearGeometry(_rng(seed, "geometry"), area)
    stain = random_stain(_rng(seed, "stain"))
    r = _rng(seed, "composition")
    # Slide-to-slide variation of the differential around the profile (a Dirichlet draw).
    alpha = np.array([weights[c] for c in CLASS_CODES]) * 300.0
    drawn = np.where(alpha > 0, r.gamma(np.maximum(alpha, 1e-9)), 0.0)
    composition = SlideComposition(
        class_weights=tuple(float(v) for v in drawn / drawn.sum()),
        cellularity=CELLULARITY.get(profile, 22.0) * float(r.uniform(0.75, 1.25)),
        cluster_fraction=dict(CLUSTER_FRACTION),
        rbc_radius_um=float(r.uniform(3.5, 4.0)),
        crenated_fraction=float(r.uniform(0.0, 0.2)),
        rouleaux=float(r.uniform(0.25, 0.5) if profile == "myeloma" else r.uniform(0.0, 0.08)),
        platelets_per_rbc=float(r.uniform(0.04, 0.1)),
        touching_pairs=float(r.uniform(0.1, 0.25)),
    )
    o = _rng(seed, "optics")
    return VirtualSlide(
        seed=seed,
        profile=profile,
        barcode=f"VM{seed:08d}",
        scan_area_um=area,
        rows=rows,
        cols=cols,
        geometry=geometry,
        stain=stain,
        composition=composition,
        objects=ObjectField(seed, geometry, composition),
        vignette_strength=float(o.uniform(0.05, 0.16)),
        focus_base_um=round(float(o.uniform(1500.0, 2500.0)), 2),
    )
