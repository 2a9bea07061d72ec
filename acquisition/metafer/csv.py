"""`manifest.csv`: the export manifest as one table, for labs whose export tooling writes spreadsheets.

One row per image. The image columns are those of `images[]` in manifest.json (`file`, `kind`,
`stage_x_um`, ...); every other column is a slide-level field named by its dotted path in manifest.json
(`slide.barcode`, `objectives.fov.magnification`, `pixel_size_um.fov`, `stage_origin_um.x`, ...) and must
hold the same value on every row that fills it (a LIMS export repeats the slide's fields on each line).
An empty cell means "not given". The table is turned into the manifest.json structure and validated by
the same reader, so both forms accept and refuse exactly the same things, with the same field names.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from acquisition.metafer.format import CSV_MANIFEST_NAME, FORMAT, FORMAT_VERSION, MANIFEST_NAME

IMAGE_COLUMNS = ("file", "kind", "stage_x_um", "stage_y_um", "focus_um", "width", "height", "pixel_size_um")

#: Slide-level fields (dotted paths) whose values are numbers; `*` is one path segment.
_NUMERIC = re.compile(
    r"^(format_version|equipment\.camera_pixel_size_um|objectives\.[^.]+\.(magnification|numerical_aperture|binning)"
    r"|pixel_size_um\.[^.]+|stage_origin_um\.[^.]+|scan_area_um\.[^.]+)$"
)
_NUMERIC_IMAGE = frozenset(IMAGE_COLUMNS) - {"file", "kind"}


def _number(text: str) -> int | float | str:
    """An int or float where the text is one; the text itself otherwise (the reader then says so)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def manifest_from_csv(text: str, fail: Callable[[str, str], Exception]) -> dict[str, Any]:
    """The manifest.json structure of a manifest.csv; `fail(field, reason)` makes the error to raise."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise fail("(manifest)", "empty: the first line must name the columns")
    header = [cell.strip() for cell in rows[0]]
    seen: set[str] = set()
    for name in header:
        if not name:
            raise fail("(manifest)", "a column without a name in the header line")
        if name in seen:
            raise fail(name, "column appears twice")
        seen.add(name)
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise fail("images", "must be a non-empty list: no image rows under the header")
    manifest: dict[str, Any] = {}
    images: list[dict[str, Any]] = []
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise fail("(manifest)", f"row {number} has {len(row)} cells, the header {len(header)}")
        image: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=True):
            value = cell.strip()
            if not value:
                continue
            if name in IMAGE_COLUMNS:
                image[name] = _number(value) if name in _NUMERIC_IMAGE else value
                continue
            parsed = _number(value) if _NUMERIC.match(name) else value
            _place(manifest, name, parsed, number, fail)
        images.append(image)
    manifest.setdefault("format", FORMAT)
    manifest.setdefault("format_version", FORMAT_VERSION)
    manifest["images"] = images
    return manifest


def _place(manifest: dict[str, Any], name: str, value: Any, row: int, fail: Callable[[str, str], Exception]) -> None:
    """Set `name` (a dotted path) in the nested manifest; a second, different value is an error."""
    *parents, leaf = name.split(".")
    node = manifest
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise fail(".".join(parents[: depth + 1]), f"is both a value and a group of columns ({name})")
        node = child
    if leaf in node:
        if isinstance(node[leaf], dict):
            raise fail(name, "is both a value and a group of columns")
        if node[leaf] != value:
            raise fail(name, f"row {row} says {value!r}, an earlier row {node[leaf]!r}: one slide, one value")
        return
    node[leaf] = value


def manifest_to_csv(manifest: Mapping[str, Any]) -> str:
    """The manifest.json structure as manifest.csv text (what a lab's export tooling would write)."""
    slide: dict[str, Any] = {}

    def flatten(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                flatten(name + ".", value)
            else:
                slide[name] = value

    flatten("", {k: v for k, v in manifest.items() if k != "images"})
    images = list(manifest.get("images", []))
    image_columns = [c for c in IMAGE_COLUMNS if any(c in image for image in images)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*image_columns, *slide])
    for image in images:
        writer.writerow([*(image.get(c, "") for c in image_columns), *slide.values()])
    return out.getvalue()


def convert_to_csv(folder: Path) -> Path:
    """Write `folder/manifest.csv` from its manifest.json and remove the JSON (one manifest per folder)."""
    import json

    source = folder / MANIFEST_NAME
    target = folder / CSV_MANIFEST_NAME
    target.write_text(manifest_to_csv(json.loads(source.read_text(encoding="utf-8"))), encoding="utf-8")
    source.unlink()
    return target
