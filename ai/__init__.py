"""ai: AOI quality, cell segmentation and cell classification networks.

TensorFlow is imported lazily inside the modules that need it: importing this package stays cheap so
that `marrowlink --help` and `marrowlink serve` start in about a second.
"""

import os

# Both must be set before the first TensorFlow import (../shared/reference/stack.md): tf-keras 2.x as
# `keras`, and segmentation-models on tf.keras.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
