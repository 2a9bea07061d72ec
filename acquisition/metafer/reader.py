"""Reading an export folder: `read_metafer_export` is the only way into the rest of the system.

Real exports and the virtual Metafer's go through this one reader, and every problem it finds is a
`MetaferExportError` naming the manifest field and the file, before anything is stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acquisition.metafer.csv import manifest_from_csv
from acquisition.metafer.format import (
    ANCHORS,
    CSV_MANIFEST_NAME,
    FORMAT,
    FORMAT_VERSION,
    IMAGE_KINDS,
    MANIFEST_NAME,
    PIXEL_TOLERANCE,
    Equipment,
    ManifestImage,
    MetaferExportError,
    Objective,
    ScanManifest,
)

_TOP = {
    "format": True,
    "format_version": True,
    "slide": True,
    "equipment": True,
    "objectives": True,
    "pixel_size_um": True,
    "stage_origin_um": True,
    "images": True,
    "position_anchor": False,
    "scan_area_um": False,
    "acquired": False,
    "ground_truth": False,
    "vendor": False,
}
_SLIDE = {"barcode": True, "specimen": False, "stain": False}
_EQUIPMENT = {
    "scanner": True,
    "microscope": True,
    "manufacturer": False,
    "software_version": False,
    "camera": False,
    "camera_pixel_size_um": False,
}
_OBJECTIVE = {"magnification": True, "numerical_aperture": False, "binning": False}
_IMAGE = {
    "file": True,
    "kind": True,
    "stage_x_um": True,
    "stage_y_um": True,
    "focus_um": False,
    "width": False,
    "height": False,
    "pixel_size_um": False,
}


class _Checker:
    def __init__(self, manifest: Path) -> None:
        self.file = manifest

    def fail(self, field: str, reason: str, file: Path | None = None) -> MetaferExportError:
        return MetaferExportError(file or self.file, field, reason)

    def fields(self, obj: Any, spec: Mapping[str, bool], where: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(where or "(root)", f"must be an object, not {type(obj).__name__}")
        prefix = f"{where}." if where else ""
        for key in obj:
            if key not in spec:
                raise self.fail(prefix + key, f"unknown field (known: {', '.join(spec)})")
        for key, required in spec.items():
            if required and key not in obj:
                raise self.fail(prefix + key, "missing required field")
        return obj

    def number(self, obj: Mapping[str, Any], key: str, where: str, positive: bool = False) -> float:
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(f"{where}.{key}" if where else key, f"must be a number, not {value!r}")
        if positive and value <= 0:
            raise self.fail(f"{where}.{key}" if where else key, f"must be > 0, not {value!r}")
        return float(value)

    def text(self, obj: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
        value = obj.get(key, default)
        if not isinstance(value, str) or (key in obj and not value.strip()):
            raise self.fail(f"{where}.{key}", f"must be a non-empty string, not {value!r}")
        return value

    def pair(self, obj: Any, keys: tuple[str, str], where: str) -> tuple[float, float]:
        self.fields(obj, dict.fromkeys(keys, True), where)
        return self.number(obj, keys[0], where), self.number(obj, keys[1], where)


def _load_manifest(folder: Path, named: str | None) -> tuple[Path, Any]:
    """The manifest file and its content as the manifest.json structure (a CSV manifest converted)."""
    json_file, csv_file = folder / MANIFEST_NAME, folder / CSV_MANIFEST_NAME
    if named is None and json_file.is_file() and csv_file.is_file():
        raise MetaferExportError(folder, "(manifest)", f"both {MANIFEST_NAME} and {CSV_MANIFEST_NAME}: keep one")
    use_csv = named == CSV_MANIFEST_NAME or (named is None and csv_file.is_file() and not json_file.is_file())
    manifest = csv_file if use_csv else json_file
    ck = _Checker(manifest)
    if not manifest.is_file():
        if named is None:
            raise ck.fail("(manifest)", f"no {MANIFEST_NAME} or {CSV_MANIFEST_NAME} in the export folder")
        raise ck.fail("(manifest)", "file does not exist")
    try:
        text = manifest.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV may start with a BOM
    except UnicodeDecodeError as exc:
        raise ck.fail("(manifest)", f"not UTF-8 text: {exc}") from exc
    if use_csv:
        return manifest, manifest_from_csv(text, ck.fail)
    try:
        return manifest, json.loads(text)
    except json.JSONDecodeError as exc:
        raise ck.fail("(manifest)", f"not valid JSON: {exc}") from exc


def read_metafer_export(path: Path | str) -> ScanManifest:
    """Read and validate an export folder (or its manifest.json / manifest.csv); see docs/metafer-export.md."""
    path = Path(path)
    folder = path.parent if path.name in (MANIFEST_NAME, CSV_MANIFEST_NAME) else path
    manifest, raw = _load_manifest(folder, path.name if path != folder else None)
    ck = _Checker(manifest)
    top = ck.fields(raw, _TOP, "")
    if top["format"] != FORMAT:
        raise ck.fail("format", f"must be {FORMAT!r}, not {top['format']!r}")
    if top["format_version"] != FORMAT_VERSION:
        raise ck.fail(
            "format_version", f"unsupported version {top['format_version']!r} (this reader: {FORMAT_VERSION})"
        )

    slide = ck.fields(top["slide"], _SLIDE, "slide")
    eq = ck.fields(top["equipment"], _EQUIPMENT, "equipment")
    equipment = Equipment(
        manufacturer=ck.text(eq, "manufacturer", "equipment", "MetaSystems"),
        scanner=ck.text(eq, "scanner", "equipment"),
        software_version=ck.text(eq, "software_version", "equipment", "unknown"),
        microscope=ck.text(eq, "microscope", "equipment"),
        camera=ck.text(eq, "camera", "equipment", "unknown"),
        camera_pixel_size_um=ck.number(eq, "camera_pixel_size_um", "equipment", True)
        if "camera_pixel_size_um" in eq
        else None,
    )
    objectives = _objectives(ck, top["objectives"])
    pixel = _pixel_sizes(ck, top["pixel_size_um"], objectives, equipment)
    origin = ck.pair(top["stage_origin_um"], ("x", "y"), "stage_origin_um")
    area = ck.pair(top["scan_area_um"], ("width", "height"), "scan_area_um") if "scan_area_um" in top else None
    anchor = top.get("position_anchor", "top_left")
    if anchor not in ANCHORS:
        raise ck.fail("position_anchor", f"must be one of {', '.join(ANCHORS)}, not {anchor!r}")
    if not isinstance(top["images"], list) or not top["images"]:
        raise ck.fail("images", "must be a non-empty list")
    images = tuple(_image(ck, folder, i, item, pixel, origin, anchor) for i, item in enumerate(top["images"]))
    if sum(1 for im in images if im.kind == "overview") > 1:
        raise ck.fail("images", "more than one overview image")
    gt = None
    if "ground_truth" in top:
        gt = folder / ck.text(top, "ground_truth", "")
        if not gt.is_dir():
            raise ck.fail("ground_truth", "folder does not exist", gt)
    vendor = top.get("vendor", {})
    if not isinstance(vendor, dict):
        raise ck.fail("vendor", "must be an object")
    return ScanManifest(
        path=folder,
        barcode=ck.text(slide, "barcode", "slide"),
        specimen=ck.text(slide, "specimen", "slide", "bone marrow smear"),
        stain=ck.text(slide, "stain", "slide", "May-Grünwald-Giemsa"),
        equipment=equipment,
        objectives=objectives,
        pixel_size_um=pixel,
        stage_origin_um=origin,
        position_anchor=anchor,
        scan_area_um=area,
        acquired=ck.text(top, "acquired", "") if "acquired" in top else None,
        images=images,
        ground_truth=gt,
        vendor=vendor,
    )


def _objectives(ck: _Checker, raw: Any) -> dict[str, Objective]:
    if not isinstance(raw, dict):
        raise ck.fail("objectives", "must be an object keyed by image kind")
    out = {}
    for kind, obj in raw.items():
        where = f"objectives.{kind}"
        if kind not in IMAGE_KINDS:
            raise ck.fail(where, f"unknown image kind (known: {', '.join(IMAGE_KINDS)})")
        ck.fields(obj, _OBJECTIVE, where)
        binning = obj.get("binning", 1)
        if isinstance(binning, bool) or not isinstance(binning, int) or binning < 1:
            raise ck.fail(f"{where}.binning", f"must be a positive integer, not {binning!r}")
        na = ck.number(obj, "numerical_aperture", where, True) if "numerical_aperture" in obj else None
        out[kind] = Objective(ck.number(obj, "magnification", where, True), na, binning)
    return out


def _pixel_sizes(ck: _Checker, raw: Any, objectives: Mapping[str, Objective], eq: Equipment) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ck.fail("pixel_size_um", "must be an object keyed by image kind")
    out = {}
    for kind in raw:
        if kind not in IMAGE_KINDS:
            raise ck.fail(f"pixel_size_um.{kind}", f"unknown image kind (known: {', '.join(IMAGE_KINDS)})")
        out[kind] = ck.number(raw, kind, "pixel_size_um", True)
        obj = objectives.get(kind)
        if obj is None:
            raise ck.fail(f"objectives.{kind}", f"missing: pixel_size_um has a {kind!r} entry")
        if eq.camera_pixel_size_um is not None:
            expected = eq.camera_pixel_size_um / obj.magnification * obj.binning
            if abs(out[kind] - expected) > PIXEL_TOLERANCE * expected:
                raise ck.fail(
                    f"pixel_size_um.{kind}",
                    f"{out[kind]} µm is inconsistent with camera pixel {eq.camera_pixel_size_um} µm / "
                    f"{obj.magnification}x x binning {obj.binning} = {expected:.5f} µm",
                )
    return out


def _image(
    ck: _Checker, folder: Path, i: int, raw: Any, pixel: Mapping[str, float], origin: tuple[float, float], anchor: str
) -> ManifestImage:
    where = f"images[{i}]"
    obj = ck.fields(raw, _IMAGE, where)
    kind = obj["kind"]
    if kind not in IMAGE_KINDS:
        raise ck.fail(f"{where}.kind", f"unknown image kind {kind!r} (known: {', '.join(IMAGE_KINDS)})")
    name = ck.text(obj, "file", where)
    file = (folder / name).resolve()
    if folder.resolve() not in file.parents:
        raise ck.fail(f"{where}.file", "must stay inside the export folder", folder / name)
    if not file.is_file():
        raise ck.fail(f"{where}.file", "file does not exist", file)
    if kind not in pixel:
        raise ck.fail(f"pixel_size_um.{kind}", f"missing: {where} is a {kind!r} image")
    px = pixel[kind]
    if "pixel_size_um" in obj:
        own = ck.number(obj, "pixel_size_um", where, True)
        if abs(own - px) > 1e-3 * px:
            raise ck.fail(f"{where}.pixel_size_um", f"{own} µm differs from pixel_size_um.{kind} = {px} µm", file)
    width, height = _image_size(ck, file, f"{where}.file")
    for key, actual in (("width", width), ("height", height)):
        if key in obj and obj[key] != actual:
            raise ck.fail(f"{where}.{key}", f"declared {obj[key]!r} but the image is {actual} px", file)
    sx, sy = ck.number(obj, "stage_x_um", where), ck.number(obj, "stage_y_um", where)
    x, y = sx - origin[0], sy - origin[1]
    if anchor == "centre":
        x, y = x - width * px / 2, y - height * px / 2
    focus = ck.number(obj, "focus_um", where) if "focus_um" in obj else None
    return ManifestImage(file, kind, sx, sy, x, y, focus, width, height, px)


def _image_size(ck: _Checker, file: Path, field: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            return im.size
    except Image.DecompressionBombError as exc:
        raise ck.fail(field, f"image too large to import safely: {exc}", file) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ck.fail(field, f"not a readable JPEG/PNG/TIFF image: {exc}", file) from exc
