"""Star-convex cells (ai.star): whole-outline targets, their exact augmentation, the cells they decode to,
and counting cells that overlap against visible and whole-outline truth."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from ai.augment import star_crop, turn
from ai.metrics import found_cells, overlap_tables, overlapping_counts, stack_intersections
from ai.star import (
    RAYS,
    cell_masks,
    mask_iou,
    move_poles,
    pole_maps,
    polygon_mask,
    star_instances,
    star_targets,
)


def _ellipse(shape, centre, axes, angle=0.0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, centre, axes, angle, 0, 360, 1, -1)
    return m.astype(bool)


def _layers(shape, masks) -> np.ndarray:
    """Outline layers by hand: overlapping cells in different layers (as Fov.outline_layers makes them)."""
    layers = np.zeros((len(masks), *shape), np.uint16)
    for k, m in enumerate(masks):
        layers[k][m] = k + 1
    return layers


SHAPE = (120, 140)
CELLS = [
    _ellipse(SHAPE, (50, 60), (25, 15), 20),
    _ellipse(SHAPE, (78, 55), (18, 18)),
    _ellipse(SHAPE, (60, 88), (12, 20), 70),
]


def test_targets_put_each_pole_at_its_cell_centre_with_its_radius():
    layers = _layers(SHAPE, CELLS)
    centre, poles = star_targets(layers)
    assert poles.shape[1] == 2 + RAYS
    # the circle of radius 18 around (x=78, y=55): its pole disc sits on the centre, rays all about 18 px
    near = poles[(np.abs(poles[:, 0] - 55) <= 2) & (np.abs(poles[:, 1] - 78) <= 2)]
    at = near[(near[:, 0] == 55) & (near[:, 1] == 78)]
    assert len(at) == 1 and np.allclose(np.exp(at[0, 2:]), 18.5, atol=1.5)
    # every cell's centre map peaks (1.0) at its own pole, also where it lies on another cell
    for x0, y0, m in cell_masks(layers).values():
        own = poles[m[np.clip(poles[:, 0].astype(int) - y0, 0, m.shape[0] - 1),
                      np.clip(poles[:, 1].astype(int) - x0, 0, m.shape[1] - 1)]]  # fmt: skip
        assert (centre[own[:, 0].astype(int), own[:, 1].astype(int)] == 1.0).any()
    assert len(cell_masks(layers)) == 3


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_moving_poles_equals_targets_of_the_turned_outlines(k, flip):
    """Flips and 90° turns permute the ray channels exactly: no approximation in the augmentation."""
    layers = _layers((120, 120), [m[:120, :120] for m in CELLS])
    centre, poles = star_targets(layers)
    turned = np.stack([turn(la, k=k, flip=flip)[0] for la in layers])
    centre2, poles2 = star_targets(turned)
    moved = pole_maps(move_poles(poles, size=120, k=k, flip=flip), (120, 120))
    direct = pole_maps(poles2, (120, 120))
    assert np.array_equal(moved[..., 0], direct[..., 0])
    np.testing.assert_allclose(moved[..., 1:], direct[..., 1:], atol=1e-5)
    np.testing.assert_allclose(turn(centre, k=k, flip=flip)[0], centre2, atol=1e-6)


def test_star_crop_shapes_and_pole_weights():
    layers = _layers(SHAPE, CELLS)
    centre, poles = star_targets(layers)
    image = np.full((*SHAPE, 3), 200, np.uint8)
    x, y = star_crop(np.random.default_rng(0), image, centre, poles, 64)
    assert x.shape == (64, 64, 3) and x.dtype == np.uint8
    assert y.shape == (64, 64, 2 + RAYS) and y.dtype == np.float32
    assert set(np.unique(y[..., 1])) <= {0.0, 1.0}
    x, y = star_crop(np.random.default_rng(0), image, centre, poles, 160, augment=False)  # padded
    assert y.shape == (160, 160, 2 + RAYS) and y[..., 1].sum() == len(poles)


def test_perfect_maps_give_every_overlapping_cell_its_whole_outline():
    layers = _layers(SHAPE, CELLS)
    centre, poles = star_targets(layers)
    maps = np.concatenate([centre[..., None], pole_maps(poles, SHAPE)[..., 1:]], axis=-1)
    found = star_instances(maps, centre_threshold=0.5, seed_distance=2, min_area=20)
    assert len(found) == 3  # the poles' neighbours propose the same cells again: NMS keeps one each
    masks = [polygon_mask(p) for p, _ in found]
    for cell in CELLS:
        assert max(mask_iou((0, 0, cell), m) for m in masks) > 0.85
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)


def test_overlapping_counts_against_visible_and_whole_outline_truth():
    """Two discs, the small one lying 77 % under the large one (painted first): whole-outline predictions
    find both cells against whole outlines; against the visible masks the covered one is lost."""
    shape = (80, 120)
    big, small = _ellipse(shape, (50, 40), (22, 22)), _ellipse(shape, (66, 40), (12, 12))
    visible = np.zeros(shape, np.int32)
    visible[small] = 1
    visible[big] = 2  # painted on top
    outlines = _layers(shape, [small, big])
    preds = [(0, 0, small), (0, 0, big)]
    whole = overlapping_counts(outlines, preds, min_true_area=10, visible=visible)
    strict = overlapping_counts(visible, preds, min_true_area=10)
    assert (whole.true_cells, whole.found, whole.predicted) == (2, 2, 2)
    assert (strict.true_cells, strict.found) == (2, 1)
    # a sliver (visible area below the minimum) is decided on the visible mask in both truths
    assert overlapping_counts(outlines, preds, min_true_area=small.sum(), visible=visible).true_cells == 1
    inter, area = stack_intersections(outlines, preds)
    assert inter[0, 0] == area[0] == small.sum() and inter[1, 0] == (small & big).sum()
    # found cells from the tables are the truth's ids, also where an id has no pixels (3 here, not 2)
    gapped = np.where(outlines == 2, 3, outlines)
    assert overlap_tables(gapped, preds).found() == found_cells(gapped, preds) == {1, 3}
    assert overlap_tables(np.where(visible == 2, 3, visible), preds).found() == {3}  # strictly, as above
    assert overlap_tables(outlines, preds[1:]).found() == {2}


def test_distractors_count_against_overlapping_predictions():
    shape = (60, 60)
    red = _ellipse(shape, (30, 30), (10, 10))
    distractors = red.astype(np.int32)
    cell = _ellipse(shape, (15, 15), (8, 8))
    truth = cell.astype(np.int32)
    on_red = overlapping_counts(truth, [(0, 0, cell), (0, 0, red)], distractors)
    assert (on_red.distractors, on_red.distractors_reported, on_red.found) == (1, 1, 1)
    clean = overlapping_counts(truth, [(0, 0, cell)], distractors)
    assert clean.distractors_reported == 0 and clean.specificity == 1.0


def _noisy_fov(rng: np.random.Generator, scale: int = 2):
    """A field of overlapping ellipses at full resolution (truth, outline layers, red-cell distractors) and
    imperfect star maps at 1/`scale` (noisy centre peaks, noisy rays), so that thresholds change the cells."""
    h, w = 200, 240
    cells = [
        _ellipse((h, w), (int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20))),
                 (int(rng.integers(8, 20)), int(rng.integers(8, 20))), float(rng.uniform(0, 180)))
        for _ in range(14)
    ]  # fmt: skip
    layers = _layers((h, w), cells)
    visible = np.zeros((h, w), np.int32)
    for k, m in enumerate(cells, start=1):
        visible[m] = k  # later cells on top
    reds = np.zeros((h, w), np.int32)
    for k in range(1, 6):
        red = _ellipse((h, w), (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))), (10, 10))
        reds[red & (visible == 0)] = k
    small = np.stack([cv2.resize(la, (w // scale, h // scale), interpolation=cv2.INTER_NEAREST) for la in layers])
    centre, poles = star_targets(small)
    centre = np.clip(centre + cv2.GaussianBlur(rng.normal(0, 1.2, centre.shape).astype(np.float32), (0, 0), 1.5), 0, 1)
    rays = pole_maps(poles, centre.shape)[..., 1:]
    rays = cv2.dilate(rays, np.ones((5, 5), np.uint8)) + rng.normal(0, 0.15, rays.shape).astype(np.float32)
    rays[rays.sum(-1) == 0] = 2.0
    return np.concatenate([centre[..., None], rays], -1).astype(np.float32), (h, w), visible, reds, layers


def test_threshold_selection_counts_what_evaluation_counts():
    """The fast selection (proposals and overlaps once per FOV) must score every grid point exactly as
    evaluating `star_cells` at those thresholds does, and pick the best of them."""
    from ai.evaluation import STAR_GRID, evaluate_detections, select_star_thresholds
    from ai.inference import CellSegmenter
    from ai.metrics import f_beta
    from ai.models import ModelCard

    card = ModelCard(kind="seg", arch="compact_star", classes=["cell"], input_size=64, pixel_size_um=0.5)
    segmenter = CellSegmenter(model=None, card=card)
    rng = np.random.default_rng(3)
    fovs = [_noisy_fov(rng) for _ in range(3)]
    maps, shapes, truth, dis, outlines = (list(x) for x in zip(*fovs, strict=True))
    grid = {**STAR_GRID, "seed_distance_um": (1.0, 2.0), "min_area_um2": (4.0, 20.0, 60.0)}
    chosen, summary = select_star_thresholds(segmenter, maps, shapes, 0.25, truth, dis, outlines, grid=grid)
    scores = {}
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        dets = [segmenter.star_cells(m, s, 0.25, **point) for m, s in zip(maps, shapes, strict=True)]
        counts = evaluate_detections(dets, truth, dis, outlines)
        scores[values] = (f_beta(counts.precision, counts.sensitivity), counts.summary())
        alone = {k: (v,) for k, v in point.items()}
        assert select_star_thresholds(segmenter, maps, shapes, 0.25, truth, dis, outlines, grid=alone) == (
            point,
            counts.summary(),
        )
    assert len({s for s, _ in scores.values()}) > 3  # the thresholds matter in this field
    best = max(s for s, _ in scores.values())
    np.testing.assert_equal(scores[tuple(chosen[k] for k in grid)], (best, summary))
