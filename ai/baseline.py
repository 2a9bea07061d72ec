"""A plain colour-threshold nucleus detector: the baseline `evaluate seg` reports beside the network.

Nuclei in May-Grünwald-Giemsa smears are the darkest, most blue-violet objects: threshold darkness of
the green channel (Otsu), require blue >= red (drops pink red cells), fill, split by distance-transform
watershed, filter by area. No learning; it shows what the network adds.
"""

from __future__ import annotations

import cv2
import numpy as np

from ai.postprocess import instances_from_maps, polygons
from ai.results import Cell, CellDetections


def threshold_nuclei(image: np.ndarray, pixel_size_um: float, min_area_um2: float = 12.0,
                     work_pixel_size_um: float = 0.344) -> CellDetections:  # fmt: skip
    scale = pixel_size_um / work_pixel_size_um
    h, w = image.shape[:2]
    small = cv2.resize(image[..., :3], (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    r, g, b = (small[..., i].astype(np.int16) for i in range(3))
    darkness = (255 - small[..., 1]).astype(np.uint8)
    t, _ = cv2.threshold(darkness, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (darkness > t) & (b >= r - 5) & (g < 170)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    labels = instances_from_maps(mask.astype(np.float32), None, 0.5, min_area=min_area_um2 / work_pixel_size_um**2)
    cells = []
    for poly, area in polygons(labels, scale=1 / scale):
        x0, y0 = np.floor(poly.min(axis=0)).astype(int)
        x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
        cells.append(Cell(polygon=poly, bbox=(int(x0), int(y0), int(x1), int(y1)), area_px=area))
    return CellDetections(cells, (h, w), pixel_size_um)
