"""What the data and model commands share: the three network kinds and the `--seeds` syntax."""

from __future__ import annotations

from enum import StrEnum

import typer


class NetworkKind(StrEnum):
    """The three networks (and their data sets): AOI quality, cell segmentation, cell classification."""

    aoi = "aoi"
    seg = "seg"
    cls = "cls"


def parse_seeds(text: str) -> list[int]:
    """'A:B' (B exclusive) or 'A,B,C'; the same syntax for make-dataset, train data and evaluate."""
    try:
        if ":" in text:
            a, b = text.split(":")
            seeds = list(range(int(a), int(b)))
        else:
            seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"seeds must look like A:B or A,B,C, got {text!r}") from None
    if not seeds:
        raise typer.BadParameter(f"no seeds in {text!r} (A:B excludes B)")
    return seeds
