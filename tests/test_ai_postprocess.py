"""Cell-level post-processing on hand-made masks."""

from __future__ import annotations

import cv2
import numpy as np

from ai.postprocess import centre_targets, filter_instances, instances_from_maps, polygons


def _two_touching_discs_and_a_speck():
    fg = np.zeros((100, 150), np.float32)
    cv2.circle(fg, (45, 50), 20, 1.0, -1)
    cv2.circle(fg, (78, 50), 20, 1.0, -1)  # overlaps the first: one connected blob
    cv2.circle(fg, (130, 85), 2, 1.0, -1)  # a speck (platelet-sized)
    truth = np.zeros((100, 150), np.int32)
    cv2.circle(truth, (45, 50), 20, 1, -1)
    cv2.circle(truth, (78, 50), 20, 2, -1)
    return fg, truth


def test_distance_watershed_splits_touching_discs_and_drops_specks():
    fg, _ = _two_touching_discs_and_a_speck()
    from scipy import ndimage as ndi

    assert ndi.label(fg > 0.5)[1] == 2  # one merged blob + the speck
    labels = instances_from_maps(fg, None, min_area=100)
    assert labels.max() == 2
    left, right = labels[50, 35], labels[50, 90]
    assert left and right and left != right
    assert labels[85, 130] == 0


def test_centre_channel_seeds_the_split():
    fg, truth = _two_touching_discs_and_a_speck()
    centre = centre_targets(truth)
    assert centre[50, 45] > 0.5 and centre[50, 62] < 0.5  # the cores are apart where the discs touch
    labels = instances_from_maps(fg, centre, min_area=100)
    assert labels.max() == 2


def test_component_without_seed_still_becomes_a_cell():
    fg = np.zeros((60, 60), np.float32)
    cv2.circle(fg, (30, 30), 12, 1.0, -1)
    labels = instances_from_maps(fg, np.zeros_like(fg), min_area=50)
    assert labels.max() == 1


def test_filter_instances_renumbers():
    labels = np.zeros((10, 10), np.int32)
    labels[0:5, 0:5] = 3
    labels[8, 8] = 7
    out = filter_instances(labels, min_area=4)
    assert sorted(np.unique(out)) == [0, 1]


def test_polygons_are_open_rings_scaled_to_fov_pixels():
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:30] = 1
    ((poly, area),) = polygons(labels, scale=4.0)
    assert len(poly) >= 4 and not np.array_equal(poly[0], poly[-1])
    assert area == 200 * 16
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    assert (x0, y0) == (41.5, 41.5) and (x1, y1) == (117.5, 77.5)  # pixel centres 10..29 -> FOV px


def test_a_saturated_map_gives_one_seed_per_flat_top_and_fast():
    """An untrained network's centre map can saturate to a flat 1.0 over whole regions: one seed each,
    not seeds strewn over the plateau (skimage's peak_local_max took minutes thinning them to that)."""
    from ai.postprocess import local_peaks

    image = np.zeros((1200, 1600), np.float32)
    image[100:900, 100:700] = 1.0
    image[200:300, 1000:1500] = 1.0
    peaks = local_peaks(image, 3, 0.5)
    assert sorted(map(tuple, peaks.tolist())) == [(249, 1249), (499, 399)]
    labels = instances_from_maps(image, image, min_area=10)
    assert labels.max() == 2
