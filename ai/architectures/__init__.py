"""Network architectures, selected by name (`--arch`). Each builder imports TensorFlow itself.

Every model takes raw RGB values 0..255 as float input and rescales inside, so inference code never has
to know an architecture's preprocessing. Architectures are rebuilt from the model card's `arch` and
`arch_params` and only the weights are stored (a weights file that does not fit the card is an error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ai.architectures import aoi, cls, seg

BUILDERS: dict[str, dict[str, Callable[..., Any]]] = {
    "aoi": {"compact": aoi.compact_cnn},
    "seg": {
        "compact": seg.compact_unet,
        "compact_star": seg.compact_star,
        "unet16": seg.unet16,
        "mobilenetv2": seg.sm_unet_mobilenetv2,
    },
    "cls": {"compact": cls.mini_xception, "xception": cls.xception},
}

# The arch a `train` without --arch uses: compact ones fit the 2-core scanner budget (docs/architecture.md §8).
DEFAULT_ARCH = {"aoi": "compact", "seg": "compact", "cls": "compact"}
# Input side in pixels per (kind, arch) unless the caller says otherwise.
DEFAULT_INPUT = {
    ("aoi", "compact"): 64,
    ("seg", "compact"): 256,
    ("seg", "compact_star"): 256,
    ("seg", "unet16"): 256,
    ("seg", "mobilenetv2"): 256,
    ("cls", "compact"): 96,
    ("cls", "xception"): 128,
}


def build(kind: str, arch: str, **params: Any):
    """Build an untrained model of `kind` ('aoi', 'seg', 'cls') and architecture `arch`."""
    try:
        builder = BUILDERS[kind][arch]
    except KeyError:
        known = ", ".join(f"{k}: {sorted(v)}" for k, v in BUILDERS.items())
        raise ValueError(f"unknown architecture {arch!r} for {kind!r}; known: {known}") from None
    return builder(**params)
