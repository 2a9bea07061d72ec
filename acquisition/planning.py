"""AOI scan planning: rank the overview's grid tiles and pick the 40x positions.

The scorer is pluggable: any callable that takes a list of tile images (RGB uint8 at overview
resolution) and returns one score per tile, higher = better place for a 40x FOV. The AOI network in
`ai` plugs in here; until then (and for ground-truth experiments) `oracle_scorer` scores tiles from
the overview's ground-truth quality labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from acquisition.simulator.overview import GridTile, Overview

Scorer = Callable[[list[np.ndarray]], Sequence[float]]

#: Oracle scores per quality class: a Metafer operator's preference order.
ORACLE_SCORES: dict[str, float] = {
    "optimal": 1.0,
    "acceptable": 0.6,
    "too_sparse": 0.2,
    "too_dense": 0.15,
    "artefact": 0.05,
    "background": 0.0,
}


@dataclass(frozen=True)
class ScanPosition:
    """One planned 40x capture: its grid tile and the FOV's top-left corner in slide µm."""

    rank: int
    row: int
    col: int
    x_um: float
    y_um: float
    score: float
    label: str | None  # ground-truth quality of the tile where known


def oracle_scores(tiles: Sequence[GridTile]) -> list[float]:
    """Scores from the ground truth: class preference, then closeness to the ideal monolayer density.

    The density term breaks the many ties between optimal tiles in favour of the best-spread areas,
    as an experienced operator would.
    """
    return [ORACLE_SCORES[t.label] + 0.1 * max(0.0, 1.0 - abs(t.coverage - 0.65) / 0.65) for t in tiles]


def rank_tiles(tiles: Sequence[GridTile], scores: Sequence[float], n: int) -> list[ScanPosition]:
    """The top-`n` tiles by score as positions; ties broken by (row, col) for determinism."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(scores) != len(tiles):
        raise ValueError(f"{len(scores)} scores for {len(tiles)} tiles")
    order = sorted(range(len(tiles)), key=lambda i: (-scores[i], tiles[i].row, tiles[i].col))
    return [
        ScanPosition(
            rank, tiles[i].row, tiles[i].col, tiles[i].x_um, tiles[i].y_um, round(float(scores[i]), 4), tiles[i].label
        )
        for rank, i in enumerate(order[:n])
    ]


def plan_scan(overview: Overview, scorer: Scorer | None = None, n: int = 50) -> list[ScanPosition]:
    """The top-`n` grid tiles of the overview as non-overlapping 40x positions, best first.

    `scorer=None` uses the ground-truth oracle (`oracle_scores`). Grid tiles are at least one FOV
    apart (the tile is the FOV footprint rounded up), so distinct tiles never give overlapping FOVs.
    """
    tiles = overview.grid_tiles()
    if scorer is None:
        scores = oracle_scores(tiles)
    else:
        scores = [float(s) for s in scorer([overview.tile_image(t) for t in tiles])]
    return rank_tiles(tiles, scores, n)
