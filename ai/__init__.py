"""ai: AOI quality, cell segmentation and cell classification networks.

TensorFlow is imported lazily inside the modules that need it: importing this package stays cheap so
that `marrowlink --help` and `marrowlink serve` start in about a second.
"""

import os

# Both must be set before the first TensorFlow import (docs/architecture.md §7): tf-keras 2.x as
# `keras`, and segmentation-models on tf.keras.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The typed results and the catalogue are cheap (numpy only); networks load on first use.
from acquisition import CLASS_CODES, CRITICAL_CODES, QUALITY_CLASSES
from ai.catalogue import UNIDENTIFIED
from ai.results import Cell, CellDetections, Differential

__all__ = [
    "CLASS_CODES",
    "CRITICAL_CODES",
    "QUALITY_CLASSES",
    "SUPPORTED_PIXEL_SIZE_UM",
    "UNIDENTIFIED",
    "AoiModel",
    "Cell",
    "CellClassifier",
    "CellDetections",
    "CellSegmenter",
    "Differential",
    "analyze_fovs",
    "train",
]

_LAZY = {
    "AoiModel": "ai.inference",
    "CellClassifier": "ai.inference",
    "CellSegmenter": "ai.inference",
    "SUPPORTED_PIXEL_SIZE_UM": "ai.inference",
    "analyze_fovs": "ai.inference",
    "train": "ai.training",
}


def __getattr__(name: str):
    """Inference classes and `train` on first access, so `import ai` never pulls TensorFlow in."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ai' has no attribute {name!r}")
