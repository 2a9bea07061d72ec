"""The scanner's optics and the grid that ties the 10x overview to 40x FOVs.

Camera: 2048 x 1496 px of 3.45 µm (a Sony IMX-class sensor as in Metafer's CoolCube cameras).
40x objective → 3.45 / 40 = 0.08625 µm/px, a FOV of 176.64 x 129.03 µm.
10x objective → 0.345 µm/px; the overview is stored 4 x 4 binned at 1.38 µm/px, because a full
resolution overview of a 1 cm² scan area would be 840 Mpx and the AOI step only needs density and
texture. A grid tile is one FOV footprint rounded *up* to whole overview pixels (128 x 94 px =
176.64 x 129.72 µm), so FOVs captured at tile origins never overlap.

Slide coordinates: µm, origin at the scan area's top-left corner, x to the right, y down (the same
orientation as image rows and columns). Every position in this package is a top-left corner.
"""

from __future__ import annotations

import math

CAMERA_PIXEL_UM = 3.45
CAMERA_SIZE_PX = (2048, 1496)  # (width, height)
FOV_MAGNIFICATION = 40.0
FOV_NA = 0.95  # 40x oil
OVERVIEW_MAGNIFICATION = 10.0
OVERVIEW_NA = 0.45
OVERVIEW_BINNING = 4

FOV_PIXEL_UM = CAMERA_PIXEL_UM / FOV_MAGNIFICATION
OVERVIEW_PIXEL_UM = CAMERA_PIXEL_UM / OVERVIEW_MAGNIFICATION * OVERVIEW_BINNING
FOV_WIDTH_PX, FOV_HEIGHT_PX = CAMERA_SIZE_PX
FOV_WIDTH_UM = FOV_WIDTH_PX * FOV_PIXEL_UM
FOV_HEIGHT_UM = FOV_HEIGHT_PX * FOV_PIXEL_UM

TILE_WIDTH_PX = math.ceil(FOV_WIDTH_UM / OVERVIEW_PIXEL_UM - 1e-9)
TILE_HEIGHT_PX = math.ceil(FOV_HEIGHT_UM / OVERVIEW_PIXEL_UM - 1e-9)
TILE_WIDTH_UM = TILE_WIDTH_PX * OVERVIEW_PIXEL_UM
TILE_HEIGHT_UM = TILE_HEIGHT_PX * OVERVIEW_PIXEL_UM

#: One 10x camera field on the slide (the overview is a mosaic of these; each has its own vignetting).
OVERVIEW_FIELD_UM = (
    FOV_WIDTH_PX * CAMERA_PIXEL_UM / OVERVIEW_MAGNIFICATION,
    FOV_HEIGHT_PX * CAMERA_PIXEL_UM / OVERVIEW_MAGNIFICATION,
)
