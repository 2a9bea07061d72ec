"""The class names `ai` works with, taken from the one catalogue (acquisition/catalogue.py).

The 23 cell classes, the critical forms, the M:E series and the quality classes are defined once, as
data, in `acquisition.catalogue` (no numpy, no simulator import). `ai` adds only what is its own: the
review bin for low-confidence cells and the quality classes that count as good for the scan list.
Trained models carry their own `classes` in the model card; the inference API answers with those.
"""

from __future__ import annotations

from acquisition import catalogue as _catalogue

#: Codes in the classifier's output order.
CELL_CLASSES: tuple[str, ...] = _catalogue.CLASS_CODES
#: The seven critical forms (cell_classes.md: six from the seed plus atypical plasma cells).
CRITICAL_CLASSES: tuple[str, ...] = _catalogue.CRITICAL_CODES
#: M:E ratio default: granulocytic series / erythroid series; blasts and monocytes excluded (a lab setting).
GRANULOCYTIC_CLASSES: tuple[str, ...] = _catalogue.GRANULOCYTIC_CODES
ERYTHROID_CLASSES: tuple[str, ...] = _catalogue.ERYTHROID_CODES
#: Shown but excluded from the percentage denominator by default (like CellaVision's "not classed").
NOT_CLASSED: tuple[str, ...] = tuple(c.code for c in _catalogue.CELL_CLASSES if c.excluded_from_percent)

#: Review bin for cells whose top probability is below the model card's confidence threshold.
UNIDENTIFIED = "UNIDENTIFIED"

QUALITY_CLASSES: tuple[str, ...] = _catalogue.QUALITY_CLASSES
GOOD_QUALITY: tuple[str, ...] = ("optimal", "acceptable")
