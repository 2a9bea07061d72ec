"""Calibrated class probabilities: temperature scaling, fitted on simulated validation cells.

A network trained with cross-entropy on clean simulated cells is over-confident on cells that look
unlike its training data (a real photo, another stain): a top probability of 0.99 says little there.
One temperature T, fitted by minimising the negative log-likelihood on held-out simulated cells,
softens (T > 1) or sharpens (T < 1) every prediction without changing which class is on top (Guo et
al. 2017, "On Calibration of Modern Neural Networks"). The classifier keeps emitting softmax outputs;
since log-softmax differs from the logits only by a per-cell constant, ``softmax(log(p) / T)`` is the
same as scaling the logits, so the shipped models need no change to be calibrated.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

#: The temperatures searched (log-spaced bounds); outside them the fit is a sign of broken inputs.
TEMPERATURE_RANGE = (0.05, 20.0)
_EPS = 1e-7


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities at `temperature` (1.0: unchanged), each row summing to 1."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, _EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.log(np.clip(picked, _EPS, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` (class indices)."""
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs labelled validation cells")
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(calibrate(probabilities, float(np.exp(log_t))), labels),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return float(np.exp(found.x))


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top probability minus the runner-up's, per cell: how clearly the classifier chose."""
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities), np.float32)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return (top_two[:, 1] - top_two[:, 0]).astype(np.float32)
