"""The cell and quality class catalogue that `ai` falls back on when a model card does not say otherwise.

`ai` never imports `acquisition` (data flows one way, ../shared/DESIGN.md §2), so the default order is
written here once; trained models carry their own `classes` in the model card and the inference API
always answers with the card's codes. The order below is the simulator's classifier output order.
"""

from __future__ import annotations

CELL_CLASSES: tuple[str, ...] = (
    "BLA", "APL", "HAC", "LYM", "TUM", "ABE", "APC", "PMO", "MYB", "MMZ", "NGB", "NGS",
    "EOS", "BAS", "MON", "LYT", "PLM", "PEB", "EBO", "MKC", "MAC", "KSC", "NIF",
)  # fmt: skip

# The seven critical forms (cell_classes.md: six from the seed plus atypical plasma cells).
CRITICAL_CLASSES: tuple[str, ...] = ("BLA", "APL", "HAC", "LYM", "TUM", "ABE", "APC")

# M:E ratio default: granulocytic series / erythroid series; blasts and monocytes excluded (a lab setting).
GRANULOCYTIC_CLASSES: tuple[str, ...] = ("PMO", "APL", "MYB", "MMZ", "NGB", "NGS", "EOS", "ABE", "BAS")
ERYTHROID_CLASSES: tuple[str, ...] = ("PEB", "EBO")

# Shown but excluded from the percentage denominator by default (like CellaVision's "not classed").
NOT_CLASSED: tuple[str, ...] = ("KSC", "NIF")

# Review bin for cells whose top probability is below the model card's confidence threshold.
UNIDENTIFIED = "UNIDENTIFIED"

QUALITY_CLASSES: tuple[str, ...] = ("optimal", "acceptable", "too_dense", "too_sparse", "artefact", "background")
GOOD_QUALITY: tuple[str, ...] = ("optimal", "acceptable")
