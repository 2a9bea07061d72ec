"""Cutting images into grid-aligned JPEG tiles: the overview pyramid and the sparse 40x level.

Every FOV is decoded once and every tile encoded once (libjpeg-turbo through imagecodecs, which
releases the GIL, so encoding runs on all cores). Where FOVs overlap, the earlier FOV in scan order
wins: the scan list is ranked by AOI quality, so the better field keeps its pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import imagecodecs
import numpy as np

BACKGROUND = 255  # glass is white in brightfield
JPEG_QUALITY = 90


def encode_tile(pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG baseline, 4:2:2 chroma subsampling, matching Photometric Interpretation YBR_FULL_422."""
    return imagecodecs.jpeg8_encode(np.ascontiguousarray(pixels), level=quality, subsampling="422")


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/TIFF bytes to RGB uint8."""
    image = imagecodecs.imread(data)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        raise ValueError(f"only 8-bit images are supported, got {image.dtype}")
    return image


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))


def tile_full(image: np.ndarray, tile: int, quality: int = JPEG_QUALITY) -> list[bytes]:
    """TILED_FULL frames, row-major; edge tiles padded with background."""
    rows, columns = image.shape[:2]
    tiles_down, tiles_across = -(-rows // tile), -(-columns // tile)

    def cut(index: int) -> bytes:
        tr, tc = divmod(index, tiles_across)
        block = image[tr * tile : (tr + 1) * tile, tc * tile : (tc + 1) * tile]
        if block.shape[0] != tile or block.shape[1] != tile:
            padded = np.full((tile, tile, 3), BACKGROUND, dtype=np.uint8)
            padded[: block.shape[0], : block.shape[1]] = block
            block = padded
        return encode_tile(block, quality)

    with _pool() as pool:
        return list(pool.map(cut, range(tiles_down * tiles_across)))


def pyramid(image: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """The image, then halved (area averaging) until it fits in one tile."""
    level = image
    yield level
    while level.shape[0] > tile or level.shape[1] > tile:
        height, width = max(1, level.shape[0] // 2), max(1, level.shape[1] // 2)
        level = cv2.resize(level, (width, height), interpolation=cv2.INTER_AREA)
        yield level


@dataclass(frozen=True)
class PlacedFov:
    """A FOV's pixels (or a loader for them) at an integer offset in the sparse level's pixel matrix."""

    column: int
    row: int
    width: int
    height: int
    load: Callable[[], np.ndarray]


@dataclass(frozen=True)
class SparseTile:
    tile_row: int
    tile_column: int
    jpeg: bytes


def tile_sparse(
    fovs: Sequence[PlacedFov], tile: int, columns: int, rows: int, quality: int = JPEG_QUALITY
) -> list[SparseTile]:
    """Re-tile FOVs onto the level's grid (position // tile), clipped to the matrix, sorted row-major."""
    pending: dict[tuple[int, int], int] = {}
    spans = []
    for fov in fovs:
        c0, r0 = max(fov.column, 0), max(fov.row, 0)
        c1, r1 = min(fov.column + fov.width, columns), min(fov.row + fov.height, rows)
        if c1 <= c0 or r1 <= r0:
            spans.append([])
            continue
        keys = [
            (tr, tc) for tr in range(r0 // tile, (r1 - 1) // tile + 1) for tc in range(c0 // tile, (c1 - 1) // tile + 1)
        ]
        spans.append(keys)
        for key in keys:
            pending[key] = pending.get(key, 0) + 1

    canvases: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    futures: dict[tuple[int, int], tuple[Future[list[bytes]], int]] = {}
    with _pool() as pool, _pool() as loaders:
        # Decode a few FOVs ahead on other threads while this one is cut and encoded; the look-ahead
        # is bounded so memory stays at a handful of decoded FOVs whatever the scan size.
        wanted = [fov for fov, keys in zip(fovs, spans, strict=True) if keys]
        wanted_keys = [keys for keys in spans if keys]
        ahead = 3
        loading = [loaders.submit(fov.load) for fov in wanted[:ahead]]
        for index, (fov, keys) in enumerate(zip(wanted, wanted_keys, strict=True)):
            pixels = loading[index].result()
            loading[index] = None  # type: ignore[call-overload]
            if index + ahead < len(wanted):
                loading.append(loaders.submit(wanted[index + ahead].load))
            if pixels.shape[0] != fov.height or pixels.shape[1] != fov.width:
                raise ValueError(f"FOV image is {pixels.shape[1]}x{pixels.shape[0]}, expected {fov.width}x{fov.height}")
            ready: list[tuple[tuple[int, int], np.ndarray]] = []
            for key in keys:
                tr, tc = key
                y0, x0 = max(tr * tile, fov.row), max(tc * tile, fov.column)
                y1 = min((tr + 1) * tile, fov.row + fov.height, rows)
                x1 = min((tc + 1) * tile, fov.column + fov.width, columns)
                source = pixels[y0 - fov.row : y1 - fov.row, x0 - fov.column : x1 - fov.column]
                pending[key] -= 1
                if key not in canvases and pending[key] == 0 and source.shape[:2] == (tile, tile):
                    # The common case: an interior tile of one FOV, encoded straight from the FOV.
                    ready.append((key, source))
                    continue
                target = (slice(y0 - tr * tile, y1 - tr * tile), slice(x0 - tc * tile, x1 - tc * tile))
                if key not in canvases:
                    canvas = np.full((tile, tile, 3), BACKGROUND, dtype=np.uint8)
                    filled = np.zeros((tile, tile), dtype=bool)
                    canvas[target] = source
                    canvases[key] = (canvas, filled)
                else:
                    canvas, filled = canvases[key]
                    free = ~filled[target]
                    canvas[target][free] = source[free]
                filled[target] = True
                if pending[key] == 0:
                    ready.append((key, canvas))
                    del canvases[key]
            # A few batches per FOV rather than a task per tile: thread hand-offs cost more than
            # the Python side of cutting a tile.
            for start in range(0, len(ready), _BATCH):
                batch = ready[start : start + _BATCH]
                job = pool.submit(_encode_batch, [block for _, block in batch], quality)
                for position, (key, _) in enumerate(batch):
                    futures[key] = (job, position)
    return [SparseTile(tr, tc, futures[(tr, tc)][0].result()[futures[(tr, tc)][1]]) for tr, tc in sorted(futures)]


_BATCH = 16


def _encode_batch(blocks: list[np.ndarray], quality: int) -> list[bytes]:
    return [encode_tile(block, quality) for block in blocks]
