"""Metric code on hand-made cases with known answers, and the Differential arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from ai.catalogue import UNIDENTIFIED
from ai.metrics import (
    calibration,
    classification_report,
    confusion_matrix,
    detection_counts,
    f_beta,
    per_class_recall,
    top_n_good_share,
)
from ai.results import Differential


def _squares(shape, boxes):
    out = np.zeros(shape, np.int32)
    for i, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        out[y0:y1, x0:x1] = i
    return out


def test_detection_counts_known_case():
    truth = _squares((50, 50), [(0, 0, 10, 10), (20, 20, 30, 30), (40, 40, 50, 50)])
    # cell 1 exactly, cell 2 shifted by 2 px (IoU 64/136 < 0.5: missed), one false positive on a distractor.
    pred = _squares((50, 50), [(0, 0, 10, 10), (22, 22, 32, 32), (0, 40, 6, 46)])
    distractors = _squares((50, 50), [(0, 40, 8, 48), (10, 30, 14, 34)])
    c = detection_counts(truth, pred, distractors)
    assert (c.true_cells, c.found, c.predicted, c.matched_predictions) == (3, 1, 3, 1)
    # distractor 1 is 36/64 covered by an unmatched prediction -> reported; distractor 2 untouched
    assert (c.distractors, c.distractors_reported) == (2, 1)
    assert c.sensitivity == pytest.approx(1 / 3)
    assert c.specificity == pytest.approx(0.5)
    assert c.precision == pytest.approx(1 / 3)


def test_found_cell_on_top_of_a_red_cell_is_not_a_false_report():
    truth = _squares((30, 30), [(5, 5, 20, 20)])
    distractor = _squares((30, 30), [(8, 8, 12, 12)])  # fully under the true cell
    c = detection_counts(truth, truth.copy(), distractor)
    assert c.found == 1 and c.distractors_reported == 0


def test_pixels_under_two_cells_can_be_left_out_of_the_iou():
    """Two cells overlapping by 240 px: the truth gives the overlap to the top cell, a prediction that takes
    the other one as top misses both strictly (IoU 160/400) and finds both with the overlap left out; a
    small cell lying wholly on a larger one keeps its strict IoU (it has no pixel outside)."""
    top, bottom = np.zeros((30, 50), bool), np.zeros((30, 50), bool)
    top[0:20, 0:20] = True
    bottom[0:20, 8:28] = True
    small = np.zeros((30, 50), bool)
    small[22:28, 40:46] = True
    truth = np.zeros((30, 50), np.int32)
    truth[bottom] = 2
    truth[top] = 1
    truth[small] = 3
    pred = np.zeros_like(truth)
    pred[top] = 1
    pred[bottom] = 2  # the other cell on top
    pred[small] = 3
    ambiguous = (top & bottom) | small  # as if the small cell lay on a cell whose outline passes under it
    strict = detection_counts(truth, pred)
    loose = detection_counts(truth, pred, ambiguous=ambiguous)
    assert (strict.true_cells, strict.found) == (3, 1)
    assert (loose.true_cells, loose.found, loose.predicted) == (3, 3, 3)
    with pytest.raises(ValueError, match="ambiguous mask"):
        detection_counts(truth, pred, ambiguous=ambiguous[:10])


def test_one_to_one_matching():
    truth = _squares((20, 40), [(0, 0, 10, 10)])
    pred = _squares((20, 40), [(0, 0, 10, 10), (0, 0, 10, 9)])  # second overwrites most of the first
    c = detection_counts(truth, pred)
    assert c.found == 1 and c.predicted == 2


def test_f_beta_weights_recall_five_to_one():
    assert f_beta(1.0, 1.0) == pytest.approx(1.0)
    # beta^2 = 5: (1+5) * 0.5 * 1 / (5*0.5 + 1) = 3 / 3.5
    assert f_beta(0.5, 1.0) == pytest.approx(6 * 0.5 / 3.5)
    assert f_beta(0.5, 1.0) > f_beta(1.0, 0.5)


def test_classification_report_known_numbers():
    classes = ["BLA", "NGS", "EBO"]
    y = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 1, 0, 2, 2])
    probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
    cm = confusion_matrix(y, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [1, 3, 0], [0, 0, 2]]
    np.testing.assert_allclose(per_class_recall(cm), [0.5, 0.75, 1.0])
    rep = classification_report(probs, y, classes, critical=["BLA"])
    assert rep["median_recall"] == pytest.approx(0.75)
    assert rep["critical_median_recall"] == pytest.approx(0.5)
    assert rep["accuracy"] == pytest.approx(6 / 8)


def test_calibration_perfect_and_overconfident():
    probs = np.array([[1.0, 0.0]] * 4)
    ece, _ = calibration(probs, np.array([0, 0, 0, 0]))
    assert ece == pytest.approx(0.0)
    ece, curve = calibration(probs, np.array([0, 0, 1, 1]))
    assert ece == pytest.approx(0.5) and curve[-1]["count"] == 4


def test_top_n_good_share():
    score = np.array([0.9, 0.8, 0.7, 0.1])
    labels = ["optimal", "artefact", "acceptable", "optimal"]
    assert top_n_good_share(score, labels, 2, ("optimal", "acceptable")) == pytest.approx(0.5)
    assert top_n_good_share(score, labels, 3, ("optimal", "acceptable")) == pytest.approx(2 / 3)


def test_differential_percent_me_ratio_and_flags():
    labels = ["NGS"] * 6 + ["EBO"] * 3 + ["BLA"] + ["KSC", UNIDENTIFIED, None]
    d = Differential.from_classes(labels)
    assert d.total == 13 and d.total_classed == 10
    assert d.percent["NGS"] == pytest.approx(60.0)
    assert d.percent["KSC"] == 0.0 and d.counts["KSC"] == 1
    assert d.counts[UNIDENTIFIED] == 2
    assert d.me_ratio == pytest.approx(2.0)  # 6 granulocytic / 3 erythroid; the blast is excluded
    assert d.critical["BLA"] == 1 and d.has_critical
    assert Differential.from_classes(["NGS"]).me_ratio is None


def test_slivers_are_ignore_regions():
    truth = _squares((40, 40), [(0, 0, 10, 10), (30, 30, 32, 32)])  # a cell and a 4-px sliver
    pred = _squares((40, 40), [(0, 0, 10, 10), (30, 30, 32, 32)])
    c = detection_counts(truth, pred, min_true_area=10)
    assert (c.true_cells, c.found, c.predicted, c.small_true_cells, c.small_found) == (1, 1, 1, 1, 1)
    assert c.sensitivity == 1.0 and c.sensitivity_all == 1.0
    c = detection_counts(truth, _squares((40, 40), [(0, 0, 10, 10)]), min_true_area=10)
    assert c.sensitivity == 1.0 and c.sensitivity_all == 0.5
