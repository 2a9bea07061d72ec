"""Cutting images into grid-aligned JPEG tiles: the overview pyramid and the sparse 40x level.

Every FOV is decoded once and every tile encoded once, all on worker threads (libjpeg-turbo through
imagecodecs releases the GIL, so decoding and encoding use every core while the calling thread only
keeps the books). One job per FOV decodes it, encodes the tiles that lie wholly inside it and no
other FOV, and hands back copies of the pieces of the tiles it shares with another FOV or the
matrix edge; a shared tile is composited and encoded once all its pieces are in. Where FOVs overlap,
the earlier FOV in scan order wins: the scan list is ranked by AOI quality, so the better field keeps
its pixels.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import imagecodecs
import numpy as np

log = logging.getLogger(__name__)

BACKGROUND = 255  # glass is white in brightfield
JPEG_QUALITY = 90

Key = tuple[int, int]  # (tile row, tile column)


def encode_tile(pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG baseline with 4:2:0 chroma subsampling (Photometric Interpretation YBR_FULL_422, which
    PS3.5 8.2.1 uses for any subsampled baseline JPEG).

    4:2:0 because the scanner's own JPEGs are 4:2:0: re-tiled at 4:2:2 they carried twice the chroma
    samples and no more colour (the extra ones were interpolated), for 9 % more bytes and ~0.1 CPU-s
    more per slide. OrthancWSIDicomizer writes 4:2:0 too (its tiles' SOF says 2x2, 1x1, 1x1).
    """
    # A contiguous copy first: libjpeg-turbo reads a 256-px tile cut from a 2048-px row slower than
    # the copy costs.
    return imagecodecs.jpeg8_encode(np.ascontiguousarray(pixels), level=quality, subsampling="420")


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/TIFF bytes to RGB uint8."""
    # JPEG straight to libjpeg-turbo: imread would first try to guess the format.
    image = imagecodecs.jpeg8_decode(data) if data[:3] == b"\xff\xd8\xff" else imagecodecs.imread(data)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        raise ValueError(f"only 8-bit images are supported, got {image.dtype}")
    return image


def workers() -> int:
    """Codec threads: one per core (the calling thread mostly waits), at most four."""
    return max(1, min(4, os.cpu_count() or 1))


def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="wsi-tiles")


def _pad(block: np.ndarray, tile: int) -> np.ndarray:
    if block.shape[0] == tile and block.shape[1] == tile:
        return block
    padded = np.full((tile, tile, 3), BACKGROUND, dtype=np.uint8)
    padded[: block.shape[0], : block.shape[1]] = block
    return padded


def _encode_row(
    image: np.ndarray, top: int, tile: int, quality: int, copied: Mapping[Key, bytes] | None = None
) -> list[bytes]:
    strip = image[top : top + tile]
    row = top // tile
    copied = copied or {}
    return [
        copied.get((row, left // tile)) or encode_tile(_pad(strip[:, left : left + tile], tile), quality)
        for left in range(0, image.shape[1], tile)
    ]


def _encode_level_copying(image: np.ndarray, tile: int, quality: int, jpeg: bytes) -> list[bytes]:
    """A whole level in one job: the tiles `copy_tiles` can cut from `jpeg`, the others encoded."""
    copied = copy_tiles(jpeg, image.shape[1], image.shape[0], tile)
    return [frame for top in range(0, image.shape[0], tile) for frame in _encode_row(image, top, tile, quality, copied)]


def submit_full(
    executor: Executor,
    image: np.ndarray,
    tile: int,
    quality: int = JPEG_QUALITY,
    source_jpeg: bytes | None = None,
) -> list[Future]:
    """Queue a TILED_FULL level's frames, one job per row of tiles; `collect_full` gathers them.

    With `source_jpeg` (the JPEG these very pixels were decoded from) the level is one job that takes
    the whole tiles from it without re-encoding (`copy_tiles`): the lossless crop costs more CPU than
    encoding (0.12 against ~0.04 s for 171 tiles), so it runs on a pool thread beside the FOV jobs.
    """
    if source_jpeg is not None and _copyable(source_jpeg, tile):
        return [executor.submit(_encode_level_copying, image, tile, quality, source_jpeg)]
    return [executor.submit(_encode_row, image, top, tile, quality) for top in range(0, image.shape[0], tile)]


#: The chroma sampling `encode_tile` writes (Y 2x2, Cb 1x1, Cr 1x1): copied tiles must match it, so that
#: every frame of an instance has the same subsampling.
_OWN_SAMPLING = (0x22, 0x11, 0x11)


def jpeg_sampling(jpeg: bytes) -> tuple[int, ...] | None:
    """Each component's sampling-factor byte of a baseline (SOF0) JPEG; None for any other JPEG."""
    position = 2
    while position + 4 <= len(jpeg) and jpeg[position] == 0xFF:
        marker, length = jpeg[position + 1], int.from_bytes(jpeg[position + 2 : position + 4], "big")
        if marker == 0xC0:
            components = jpeg[position + 9]
            return tuple(jpeg[position + 11 + 3 * k] for k in range(components))
        if marker in (0xC1, 0xC2, 0xC3, 0xDA):  # another frame type, or the scan began first
            return None
        position += 2 + length
    return None


def copy_tiles(jpeg: bytes, width: int, height: int, tile: int) -> dict[Key, bytes]:
    """The whole tiles of a level whose pixels are exactly this JPEG's, cut from it without decoding or
    re-encoding (libjpeg-turbo's lossless crop: the same DCT coefficients, new headers).

    Possible where the JPEG is baseline with our chroma sampling (its 16-px MCUs then fit the tile grid);
    elsewhere, or where libjpeg-turbo's TurboJPEG library is not installed (Debian: libturbojpeg0), {}
    and every tile is encoded. Edge tiles are never copied: they need padding to the full tile.
    """
    if not _copyable(jpeg, tile):
        return {}
    keys = [(row, column) for row in range(height // tile) for column in range(width // tile)]
    if not keys:
        return {}
    regions = [(column * tile, row * tile, tile, tile) for row, column in keys]
    return dict(zip(keys, _turbojpeg().crop_multiple(jpeg, regions, copynone=True), strict=True))


def _copyable(jpeg: bytes, tile: int) -> bool:
    """Whether `copy_tiles` can cut tiles from these bytes (else every tile is encoded, row by row)."""
    is_jpeg = jpeg[:3] == b"\xff\xd8\xff"
    return is_jpeg and jpeg_sampling(jpeg) == _OWN_SAMPLING and tile % 16 == 0 and _turbojpeg() is not None


@cache
def _turbojpeg():  # type: ignore[no-untyped-def]
    try:
        from turbojpeg import TurboJPEG

        return TurboJPEG()
    except (ImportError, OSError, RuntimeError) as exc:
        log.info("tiles are re-encoded, not copied: libjpeg-turbo's TurboJPEG library is unavailable (%s)", exc)
        return None


def collect_full(jobs: Sequence[Future]) -> list[bytes]:
    return [frame for job in jobs for frame in job.result()]


def tile_full(image: np.ndarray, tile: int, quality: int = JPEG_QUALITY) -> list[bytes]:
    """TILED_FULL frames, row-major; edge tiles padded with background."""
    with pool() as executor:
        return collect_full(submit_full(executor, image, tile, quality))


def pyramid(image: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """The image, then halved (area averaging) until it fits in one tile."""
    import cv2

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


# A piece of a shared tile: (FOV index, top and left inside the tile, a copy of the FOV's pixels).
_Piece = tuple[int, int, int, np.ndarray]


def tile_sparse(
    fovs: Sequence[PlacedFov],
    tile: int,
    columns: int,
    rows: int,
    quality: int = JPEG_QUALITY,
    executor: Executor | None = None,
) -> list[SparseTile]:
    """Re-tile FOVs onto the level's grid (position // tile), clipped to the matrix, sorted row-major.

    Runs its jobs on `executor` when given (so a caller can keep other work, the overview levels, on
    the same threads), else on a pool of its own.
    """
    spans: list[list[Key]] = []
    sharing: dict[Key, int] = {}  # how many FOVs touch each tile
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
            sharing[key] = sharing.get(key, 0) + 1
    if executor is None:
        with pool() as own:
            return _tile_sparse(fovs, spans, sharing, tile, columns, rows, quality, own)
    return _tile_sparse(fovs, spans, sharing, tile, columns, rows, quality, executor)


def _tile_sparse(
    fovs: Sequence[PlacedFov],
    spans: list[list[Key]],
    sharing: dict[Key, int],
    tile: int,
    columns: int,
    rows: int,
    quality: int,
    executor: Executor,
) -> list[SparseTile]:
    wanted = iter([(index, fov, keys) for index, (fov, keys) in enumerate(zip(fovs, spans, strict=True)) if keys])
    jobs: deque[Future[tuple[list[tuple[Key, bytes]], list[tuple[Key, _Piece]]]]] = deque()

    def submit_next() -> None:
        item = next(wanted, None)
        if item is not None:
            jobs.append(executor.submit(_fov_job, *item, sharing, tile, columns, rows, quality))

    # A few FOVs in flight beyond the busy threads keeps every core fed while memory stays at a
    # handful of decoded FOVs, whatever the scan size.
    for _ in range(workers() + 2):
        submit_next()
    frames: dict[Key, bytes] = {}
    missing = dict(sharing)
    pieces: dict[Key, list[_Piece]] = {}
    complete: list[tuple[Key, list[_Piece]]] = []
    composites: list[Future[list[tuple[Key, bytes]]]] = []
    try:
        while jobs:
            whole, parts = jobs.popleft().result()
            submit_next()
            for key, frame in whole:
                frames[key] = frame
                del missing[key]
            for key, piece in parts:
                pieces.setdefault(key, []).append(piece)
                missing[key] -= 1
                if missing[key] == 0:
                    complete.append((key, pieces.pop(key)))
                    del missing[key]
            if len(complete) >= _BATCH or (complete and not jobs):
                composites.append(executor.submit(_composite_batch, complete, tile, quality))
                complete = []
        for composite in composites:
            frames.update(composite.result())
    except BaseException:
        for job in jobs:
            job.cancel()
        raise
    return [SparseTile(tr, tc, frames[(tr, tc)]) for tr, tc in sorted(frames)]


_BATCH = 16  # shared tiles per compositing job: thread hand-offs cost more than one tile's Python


def _fov_job(
    index: int,
    fov: PlacedFov,
    keys: list[Key],
    sharing: dict[Key, int],
    tile: int,
    columns: int,
    rows: int,
    quality: int,
) -> tuple[list[tuple[Key, bytes]], list[tuple[Key, _Piece]]]:
    """Decode one FOV; encode its own whole tiles, copy out its pieces of shared ones."""
    pixels = fov.load()
    if pixels.shape[0] != fov.height or pixels.shape[1] != fov.width:
        raise ValueError(f"FOV image is {pixels.shape[1]}x{pixels.shape[0]}, expected {fov.width}x{fov.height}")
    whole: list[tuple[Key, bytes]] = []
    parts: list[tuple[Key, _Piece]] = []
    for key in keys:
        tr, tc = key
        y0, x0 = max(tr * tile, fov.row), max(tc * tile, fov.column)
        y1 = min((tr + 1) * tile, fov.row + fov.height, rows)
        x1 = min((tc + 1) * tile, fov.column + fov.width, columns)
        source = pixels[y0 - fov.row : y1 - fov.row, x0 - fov.column : x1 - fov.column]
        if sharing[key] == 1 and y1 - y0 == tile and x1 - x0 == tile:
            whole.append((key, encode_tile(source, quality)))
        else:
            parts.append((key, (index, y0 - tr * tile, x0 - tc * tile, source.copy())))
    return whole, parts


def _composite_batch(batch: list[tuple[Key, list[_Piece]]], tile: int, quality: int) -> list[tuple[Key, bytes]]:
    canvas = np.empty((tile, tile, 3), dtype=np.uint8)
    encoded = []
    for key, parts in batch:
        canvas.fill(BACKGROUND)
        # Latest FOV first, so each earlier one paints over it: the earliest FOV wins every pixel.
        for _, top, left, block in sorted(parts, key=lambda part: part[0], reverse=True):
            canvas[top : top + block.shape[0], left : left + block.shape[1]] = block
        encoded.append((key, encode_tile(canvas, quality)))
    return encoded
