"""The 23 bone-marrow cell classes and the 6 overview quality classes, in one place.

Data only (no numpy, no cv2) so that `ai`, `dicom_store`, `hl7` and `api` can import it cheaply and
without pulling the simulator in. The order of `CLASS_CODES` is the classifier's output index order:
changing it invalidates every trained classifier, so append new classes at the end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CellClass:
    """One cell class of the differential (docs/architecture.md §5 lists them)."""

    code: str
    name: str
    lineage: str
    critical: bool
    #: Counted in the myeloid (granulocytic) numerator of the M:E ratio.
    granulocytic: bool = False
    #: Counted in the erythroid denominator of the M:E ratio.
    erythroid: bool = False
    #: Excluded from the percentage denominator by default (like CellaVision's "not classed" bin).
    excluded_from_percent: bool = False


CELL_CLASSES: tuple[CellClass, ...] = (
    CellClass("BLA", "Blast", "immature", True),
    CellClass("APL", "APL cell (abnormal promyelocyte, incl. faggot cells)", "myeloid", True, granulocytic=True),
    CellClass("HAC", "Hairy cell", "lymphoid", True),
    CellClass("LYM", "Lymphoma cell", "lymphoid", True),
    CellClass("TUM", "Tumour cell (non-haematopoietic)", "other", True),
    CellClass("ABE", "Abnormal eosinophil, inv(16)", "myeloid", True, granulocytic=True),
    CellClass("APC", "Atypical plasma cell (myeloma)", "lymphoid", True),
    CellClass("PMO", "Promyelocyte", "myeloid", False, granulocytic=True),
    CellClass("MYB", "Myelocyte", "myeloid", False, granulocytic=True),
    CellClass("MMZ", "Metamyelocyte", "myeloid", False, granulocytic=True),
    CellClass("NGB", "Band neutrophil", "myeloid", False, granulocytic=True),
    CellClass("NGS", "Segmented neutrophil", "myeloid", False, granulocytic=True),
    CellClass("EOS", "Eosinophil", "myeloid", False, granulocytic=True),
    CellClass("BAS", "Basophil", "myeloid", False, granulocytic=True),
    CellClass("MON", "Monocyte", "monocytic", False),
    CellClass("LYT", "Lymphocyte", "lymphoid", False),
    CellClass("PLM", "Plasma cell", "lymphoid", False),
    CellClass("PEB", "Proerythroblast", "erythroid", False, erythroid=True),
    CellClass("EBO", "Erythroblast", "erythroid", False, erythroid=True),
    CellClass("MKC", "Megakaryocyte", "megakaryocytic", False),
    CellClass("MAC", "Macrophage / histiocyte", "other", False),
    CellClass("KSC", "Smudge cell", "other", False, excluded_from_percent=True),
    CellClass("NIF", "Not identifiable", "other", False, excluded_from_percent=True),
)

#: The classifier's output index order (the table order of docs/architecture.md §5).
CLASS_CODES: tuple[str, ...] = tuple(c.code for c in CELL_CLASSES)

CLASS_BY_CODE: dict[str, CellClass] = {c.code: c for c in CELL_CLASSES}

CRITICAL_CODES: tuple[str, ...] = tuple(c.code for c in CELL_CLASSES if c.critical)

#: M:E ratio = sum(GRANULOCYTIC_CODES) / sum(ERYTHROID_CODES); blasts and monocytes excluded by default.
GRANULOCYTIC_CODES: tuple[str, ...] = tuple(c.code for c in CELL_CLASSES if c.granulocytic)
ERYTHROID_CODES: tuple[str, ...] = tuple(c.code for c in CELL_CLASSES if c.erythroid)
#: Shown but kept out of the percentage denominator by default (like CellaVision's "not classed" bin).
NOT_CLASSED_CODES: tuple[str, ...] = tuple(c.code for c in CELL_CLASSES if c.excluded_from_percent)

#: AOI quality classes of overview grid tiles, in the AOI network's output index order.
QUALITY_CLASSES: tuple[str, ...] = ("optimal", "acceptable", "too_dense", "too_sparse", "artefact", "background")
