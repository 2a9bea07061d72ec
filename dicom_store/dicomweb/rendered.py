"""Retrieve Rendered / Thumbnail (PS3.18 §10.4.1.1.3, §10.4.1.1.4) for instances and frames.

Slim and DMV have no fallback for OVERVIEW and LABEL images: they ask for ``rendered`` with a
viewport. A tiled instance (TILED_FULL, or TILED_SPARSE with plane positions) is rendered as its
total pixel matrix: each tile is decoded, downscaled to the viewport scale and pasted, so memory
stays at the size of the answer, not of the slide. Images are downscaled to fit the viewport keeping
the aspect ratio, never upscaled (the client scales up better than we do).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pydicom
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicom_store.dicomweb.context import Context, json_error
from dicom_store.dicomweb.media import parse_accept, type_matches
from dicom_store.dicomweb.pixels import CannotDecode, PixelFormat, decode_frame
from dicom_store.dicomweb.wado import find_instances
from dicom_store.frames import read_frame
from dicom_store.models import Instance
from dicom_store.store import Store

#: Without a viewport, refuse to build images larger than this (a full 40x level would be GBs).
MAX_PIXELS = 64_000_000
THUMBNAIL_SIZE = (256, 256)
_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}


class RenderError(ValueError):
    """The request cannot be rendered as asked (400)."""


async def rendered(
    ctx: Context,
    request: Request,
    study: str,
    series: str,
    instance: str,
    frames: str | None = None,
    *,
    thumbnail: bool = False,
) -> Response:
    ctx.check(request, "read")
    media = _choose_media(request.headers.get("accept"))
    if media is None:
        return json_error(406, "rendered images are available as image/jpeg and image/png")
    params = request.query_params
    try:
        viewport = _viewport(params.get("viewport"))
        quality = int(params.get("quality", "90"))
        numbers = [int(n) for n in frames.split(",")] if frames else None
    except ValueError as exc:
        return json_error(400, f"bad rendered parameter: {exc}")
    if thumbnail and viewport is None:
        viewport = THUMBNAIL_SIZE
    if not 1 <= quality <= 100:
        return json_error(400, "quality must be 1..100")
    rows = await run_in_threadpool(find_instances, ctx, study, series, instance)
    try:
        image = await run_in_threadpool(render, ctx.store, rows[0], numbers[0] if numbers else None, viewport)
    except (RenderError, CannotDecode) as exc:
        return json_error(400, str(exc))
    body = await run_in_threadpool(_encode, image, media, quality)
    return Response(body, 200, media_type=media)


def _choose_media(accept: str | None) -> str | None:
    for item in parse_accept(accept):
        for media in ("image/jpeg", "image/png"):  # JPEG is the default (PS3.18 §8.7.4)
            if type_matches(item.media_type, media):
                return media
    return None


def _viewport(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    pieces = value.split(",")
    if len(pieces) not in (2, 6):
        raise ValueError("viewport is vw,vh (or vw,vh,sx,sy,sw,sh)")
    width = int(pieces[0]) if pieces[0] else 0
    height = int(pieces[1]) if pieces[1] else 0
    if (width <= 0 and height <= 0) or width < 0 or height < 0 or max(width, height) > 16384:
        raise ValueError("viewport sizes must be 1..16384")
    return width or 16384, height or 16384


def _encode(image: np.ndarray, media: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    picture = Image.fromarray(image)
    if media == "image/jpeg":
        picture.save(buffer, "JPEG", quality=quality)
    else:
        picture.save(buffer, "PNG", compress_level=3)
    return buffer.getvalue()


def render(store: Store, row: Instance, frame: int | None, viewport: tuple[int, int] | None) -> np.ndarray:
    """An 8-bit greyscale or RGB image of one frame, or of the whole tiled instance."""
    path = store.blobs.absolute(row.path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds:
        raise RenderError(f"instance {row.sop_instance_uid} has no image pixel data to render")
    fmt = PixelFormat.from_dataset(ds)
    if frame is not None and not 1 <= frame <= row.number_of_frames:
        raise RenderError(f"frame {frame} out of range 1..{row.number_of_frames}")
    tiled = frame is None and row.number_of_frames > 1 and "TotalPixelMatrixColumns" in ds
    if tiled:
        return _render_tiled(store, row, ds, fmt, viewport)
    image = _display(_frame_pixels(store, row, ds, fmt, frame or 1), ds)
    return _fit(image, viewport)


def _frame_pixels(store: Store, row: Instance, ds: pydicom.Dataset, fmt: PixelFormat, number: int) -> np.ndarray:
    data = store.get_frames(row.sop_instance_uid, [number])[0]
    try:
        return decode_frame(data, row.transfer_syntax_uid, fmt)
    except CannotDecode:
        from pydicom.pixels import pixel_array

        return pixel_array(store.blobs.absolute(row.path), index=number - 1)


def _display(array: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Map stored values to 8-bit display values (palette, VOI window or min-max, MONOCHROME1)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, ds)
        return (array >> 8).astype(np.uint8) if array.dtype != np.uint8 else array
    if int(ds.get("BitsAllocated", 8) or 8) == 1:
        return (array.astype(np.uint8) * 255).astype(np.uint8)
    if array.dtype != np.uint8 or int(ds.get("BitsStored", 8) or 8) > 8:
        values = array.astype(np.float32)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        values = values * slope + intercept
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is not None and width is not None:
            center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
            width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
            low, high = center - width / 2, center + width / 2
        else:
            low, high = float(values.min()), float(values.max())
        array = np.clip((values - low) / max(high - low, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        array = 255 - array
    return array


def _fit(image: np.ndarray, viewport: tuple[int, int] | None) -> np.ndarray:
    height, width = image.shape[:2]
    if viewport is None:
        return image
    scale = min(viewport[0] / width, viewport[1] / height, 1.0)
    if scale >= 1.0:
        return image
    import cv2

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _tile_positions(ds: pydicom.Dataset, fmt: PixelFormat, frames: int) -> list[tuple[int, int]]:
    """Top-left (row, column) of each frame in the total pixel matrix, 0-based."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    organisation = str(ds.get("DimensionOrganizationType", ""))
    if organisation != "TILED_FULL" and per_frame is not None and len(per_frame) >= frames:
        positions = []
        for item in per_frame[:frames]:
            plane = item.PlanePositionSlideSequence[0]
            positions.append(
                (
                    int(plane.RowPositionInTotalImagePixelMatrix) - 1,
                    int(plane.ColumnPositionInTotalImagePixelMatrix) - 1,
                )
            )
        return positions
    across = math.ceil(int(ds.TotalPixelMatrixColumns) / fmt.columns)
    down = math.ceil(int(ds.TotalPixelMatrixRows) / fmt.rows)
    count = min(frames, across * down)  # first focal plane and optical path only
    return [((i // across) * fmt.rows, (i % across) * fmt.columns) for i in range(count)]


def _render_tiled(
    store: Store, row: Instance, ds: pydicom.Dataset, fmt: PixelFormat, viewport: tuple[int, int] | None
) -> np.ndarray:
    import cv2

    width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
    scale = 1.0 if viewport is None else min(viewport[0] / width, viewport[1] / height, 1.0)
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    if out_w * out_h > MAX_PIXELS:
        raise RenderError(f"total pixel matrix {width}x{height} is too large; ask with a viewport")
    colour = fmt.samples == 3 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    canvas = np.zeros((out_h, out_w, 3) if colour else (out_h, out_w), dtype=np.uint8)
    if colour:
        canvas[:] = 255  # empty slide areas show as white glass, not black
    source = store.frame_source(row.sop_instance_uid)
    fd = os.open(source.path, os.O_RDONLY)
    try:
        for index, (top, left) in enumerate(_tile_positions(ds, fmt, row.number_of_frames)):
            tile = _display(decode_frame(read_frame(fd, source.layout, index + 1), row.transfer_syntax_uid, fmt), ds)
            y0, x0 = round(top * scale), round(left * scale)
            full_h = max(1, round((top + fmt.rows) * scale) - y0)
            full_w = max(1, round((left + fmt.columns) * scale) - x0)
            y1, x1 = min(out_h, y0 + full_h), min(out_w, x0 + full_w)
            if y1 <= y0 or x1 <= x0:
                continue
            if (full_w, full_h) != (tile.shape[1], tile.shape[0]):
                tile = cv2.resize(tile, (full_w, full_h), interpolation=cv2.INTER_AREA)
            canvas[y0:y1, x0:x1] = tile[: y1 - y0, : x1 - x0]
    finally:
        os.close(fd)
    return canvas
