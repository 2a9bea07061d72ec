"""Temperature scaling: the fitted temperature undoes a known over-confidence, keeps every argmax, and
lowers the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from ai.calibration import calibrate, fit_temperature, margins, negative_log_likelihood
from ai.metrics import calibration


def overconfident(n: int = 4000, classes: int = 5, true_t: float = 2.5, seed: int = 3):  # type: ignore[no-untyped-def]
    """Cells whose labels follow softmax(z); the 'network' reports softmax(z * true_t) (over-confident)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.6, size=(n, classes))
    honest = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in honest])
    sharp = np.exp(logits * true_t)
    return sharp / sharp.sum(axis=1, keepdims=True), labels


def test_the_fitted_temperature_undoes_over_confidence() -> None:
    reported, labels = overconfident()
    temperature = fit_temperature(reported, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    calibrated = calibrate(reported, temperature)
    assert (calibrated.argmax(axis=1) == reported.argmax(axis=1)).all()
    assert np.allclose(calibrated.sum(axis=1), 1.0, atol=1e-5)
    assert negative_log_likelihood(calibrated, labels) < negative_log_likelihood(reported, labels)
    ece_before, _ = calibration(reported, labels)
    ece_after, _ = calibration(calibrated, labels)
    assert ece_after < 0.5 * ece_before


def test_margins_and_refusals() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    assert margins(probabilities) == pytest.approx([0.5, 0.05])
    assert calibrate(probabilities, 1.0) is probabilities
    with pytest.raises(ValueError, match="labelled validation cells"):
        fit_temperature(probabilities[:0], np.array([], dtype=int))
