"""Reading a stored slide scan back as pixels: the overview image and the captured 40x regions.

Analysis reads slides through the Store, never from the scanner's export folder, so it works the same
for a slide that arrived by C-STORE from another system. The 40x level is TILED_SPARSE: the captured
tiles form islands (one FOV, or several overlapping FOVs), and each island is analysed once as a
region, so a cell in the overlap of two FOVs is counted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

from dicom_store.errors import NotFound
from dicom_store.models import Instance
from dicom_store.store import Store

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
BACKGROUND = 255


@dataclass(frozen=True)
class Region:
    """A rectangle of the 40x level's total pixel matrix (0-based) and the tiles that are really there."""

    column: int
    row: int
    width: int
    height: int
    tiles: frozenset[tuple[int, int]]  # (tile_row, tile_column) captured inside the rectangle
    tile_size: int

    def covers(self, x: float, y: float) -> bool:
        """Whether a point (region-local pixels) lies on a captured tile of this region."""
        tile = (int((self.row + y) // self.tile_size), int((self.column + x) // self.tile_size))
        return tile in self.tiles


@dataclass
class StoredSlide:
    """One scan in the store: the sparse 40x instance and the overview base level."""

    store: Store
    sparse: Instance
    overview: Instance | None
    # Stored instances never change, so each header (thousands of per-frame items on the 40x level)
    # is parsed once per slide however many steps ask for it.
    _headers: dict[str, Dataset] = field(default_factory=dict, repr=False)
    _positions: dict[tuple[int, int], int] | None = field(default=None, repr=False)

    @classmethod
    def find(cls, store: Store, study_instance_uid: str, series_instance_uid: str | None = None) -> StoredSlide:
        rows = [
            row
            for row in store.instances(study_instance_uid, series_instance_uid)
            if row.sop_class_uid == WSI_SOP_CLASS
        ]
        if not rows:
            raise NotFound(f"study {study_instance_uid} holds no VL Whole Slide Microscopy images")
        sparse = [r for r in rows if r.dimension_organization_type == "TILED_SPARSE"]
        full = [r for r in rows if r.dimension_organization_type == "TILED_FULL" and "VOLUME" in r.image_type]
        if not sparse:
            raise NotFound(f"study {study_instance_uid} has no TILED_SPARSE 40x level (no FOVs captured)")
        best = max(sparse, key=lambda r: r.total_pixel_matrix_columns or 0)
        same_series = [r for r in full if r.series_instance_uid == best.series_instance_uid]
        overview = max(same_series or full, key=lambda r: r.total_pixel_matrix_columns or 0, default=None)
        return cls(store, best, overview)

    # ---- the 40x level ----------------------------------------------------------------------------------

    def header(self, instance: Instance | None = None) -> Dataset:
        uid = (instance or self.sparse).sop_instance_uid
        if uid not in self._headers:
            self._headers[uid] = self.store.get_dataset(uid, stop_before_pixels=True)
        return self._headers[uid]

    def tile_positions(self) -> dict[tuple[int, int], int]:
        """(tile_row, tile_column) → 1-based frame number, from the per-frame plane positions."""
        if self._positions is None:
            self._positions = self._read_tile_positions()
        return self._positions

    def _read_tile_positions(self) -> dict[tuple[int, int], int]:
        ds = self.header()
        size = int(ds.Rows)
        positions = {}
        for number, item in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1):
            plane = item.PlanePositionSlideSequence[0]
            column = int(plane.ColumnPositionInTotalImagePixelMatrix) - 1
            row = int(plane.RowPositionInTotalImagePixelMatrix) - 1
            positions[(row // size, column // size)] = number
        return positions

    def regions(self) -> list[Region]:
        """Islands of captured tiles (4-connected), each as its bounding rectangle."""
        positions = self.tile_positions()
        if not positions:
            return []
        size = int(self.sparse.rows or 256)
        # Edge tiles stick out of the total pixel matrix; regions stop at its border.
        matrix_columns = int(self.sparse.total_pixel_matrix_columns or 0)
        matrix_rows = int(self.sparse.total_pixel_matrix_rows or 0)
        keys = np.array(list(positions))
        r0, c0 = keys.min(axis=0)
        grid = np.zeros(tuple(keys.max(axis=0) - (r0, c0) + 1), dtype=bool)
        grid[keys[:, 0] - r0, keys[:, 1] - c0] = True
        labels, _count = ndimage.label(grid)
        regions = []
        for index, window in enumerate(ndimage.find_objects(labels), start=1):
            rows, cols = window
            offset = np.array([rows.start + r0, cols.start + c0])
            members = np.argwhere(labels[window] == index) + offset
            regions.append(
                Region(
                    column=(cols.start + c0) * size,
                    row=(rows.start + r0) * size,
                    width=min((cols.stop - cols.start) * size, matrix_columns - (cols.start + c0) * size),
                    height=min((rows.stop - rows.start) * size, matrix_rows - (rows.start + r0) * size),
                    tiles=frozenset((int(r), int(c)) for r, c in members),
                    tile_size=size,
                )
            )
        regions.sort(key=lambda r: (r.row, r.column))
        return regions

    def read_region(self, region: Region, positions: dict[tuple[int, int], int] | None = None) -> np.ndarray:
        """The region's pixels (RGB), each tile decoded once; missing tiles are background."""
        positions = positions if positions is not None else self.tile_positions()
        size = region.tile_size
        image = np.full((region.height, region.width, 3), BACKGROUND, dtype=np.uint8)
        keys = sorted(region.tiles)
        frames = self.store.get_frames(self.sparse.sop_instance_uid, [positions[k] for k in keys])
        for (tile_row, tile_column), data in zip(keys, frames, strict=True):
            y, x = tile_row * size - region.row, tile_column * size - region.column
            h, w = min(size, region.height - y), min(size, region.width - x)
            image[y : y + h, x : x + w] = _decode(data)[:h, :w]
        return image

    def read_window(self, column: int, row: int, width: int, height: int) -> np.ndarray:
        """Any rectangle of the 40x level (RGB, need not be tile-aligned); what was not captured is background."""
        positions = self.tile_positions()
        size = int(self.sparse.rows or 256)
        image = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        keys = [
            (tile_row, tile_column)
            for tile_row in range(max(0, row // size), (row + height - 1) // size + 1)
            for tile_column in range(max(0, column // size), (column + width - 1) // size + 1)
            if (tile_row, tile_column) in positions
        ]
        frames = self.store.get_frames(self.sparse.sop_instance_uid, [positions[k] for k in keys])
        for (tile_row, tile_column), data in zip(keys, frames, strict=True):
            tile = _decode(data)
            y, x = tile_row * size, tile_column * size
            top, left = max(y, row), max(x, column)
            bottom, right = min(y + tile.shape[0], row + height), min(x + tile.shape[1], column + width)
            if bottom > top and right > left:
                image[top - row : bottom - row, left - column : right - column] = tile[
                    top - y : bottom - y, left - x : right - x
                ]
        return image

    # ---- the overview -----------------------------------------------------------------------------------

    def overview_image(self) -> np.ndarray:
        """The overview base level assembled from its TILED_FULL frames."""
        if self.overview is None:
            raise NotFound("the slide has no TILED_FULL overview level")
        row = self.overview
        size = int(row.rows or 256)
        width, height = int(row.total_pixel_matrix_columns or 0), int(row.total_pixel_matrix_rows or 0)
        across = -(-width // size)
        image = np.full((-(-height // size) * size, across * size, 3), BACKGROUND, dtype=np.uint8)
        frames = self.store.get_frames(row.sop_instance_uid, range(1, row.number_of_frames + 1))
        for index, data in enumerate(frames):
            tile_row, tile_column = divmod(index, across)
            image[tile_row * size : (tile_row + 1) * size, tile_column * size : (tile_column + 1) * size] = _decode(
                data
            )
        return image[:height, :width]


def _decode(data: bytes) -> np.ndarray:
    pixels = imagecodecs.imread(data)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]
