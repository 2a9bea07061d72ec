"""acquisition: the Metafer export reader, the virtual Metafer, AOI scan lists and WSI encoding.

The catalogue (`CELL_CLASSES`, `CLASS_CODES`, `QUALITY_CLASSES`) is plain data and imported eagerly;
the simulator, planning, export and data-set writers (numpy, cv2) load on first use, so importing
`acquisition` for the catalogue stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from acquisition.catalogue import (
    CELL_CLASSES,
    CLASS_BY_CODE,
    CLASS_CODES,
    CRITICAL_CODES,
    ERYTHROID_CODES,
    GRANULOCYTIC_CODES,
    NOT_CLASSED_CODES,
    QUALITY_CLASSES,
    CellClass,
)

_LAZY = {
    "simulate_slide": "acquisition.simulator",
    "VirtualSlide": "acquisition.simulator",
    "Overview": "acquisition.simulator",
    "Fov": "acquisition.simulator",
    "GridTile": "acquisition.simulator",
    "CellRecord": "acquisition.simulator",
    "DistractorRecord": "acquisition.simulator",
    "PROFILES": "acquisition.simulator",
    "PROFILE_NAMES": "acquisition.simulator",
    "GENERATOR_VERSION": "acquisition.simulator",
    "plan_scan": "acquisition.planning",
    "ScanPosition": "acquisition.planning",
    "oracle_scores": "acquisition.planning",
    "rank_tiles": "acquisition.planning",
    "write_metafer_export": "acquisition.simulator",
    "read_metafer_export": "acquisition.metafer",
    "ScanManifest": "acquisition.metafer",
    "ManifestImage": "acquisition.metafer",
    "Equipment": "acquisition.metafer",
    "Objective": "acquisition.metafer",
    "MetaferExportError": "acquisition.metafer",
    "make_dataset": "acquisition.datasets",
}

__all__ = [
    "CELL_CLASSES",
    "CLASS_BY_CODE",
    "CLASS_CODES",
    "CRITICAL_CODES",
    "ERYTHROID_CODES",
    "GRANULOCYTIC_CODES",
    "NOT_CLASSED_CODES",
    "QUALITY_CLASSES",
    "CellClass",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'acquisition' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
