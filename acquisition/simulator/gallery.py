"""The example images of docs/simulator.md, reproducible from seeds.

`python -m acquisition.simulator.gallery docs/img/simulator` rewrites them (PNG, sized to keep the
folder under 3 MB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from acquisition.catalogue import CLASS_CODES, QUALITY_CLASSES
from acquisition.simulator.profiles import PROFILES
from acquisition.simulator.virtual import simulate_slide

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _save(path: Path, rgb: np.ndarray) -> None:
    """A 256-colour PNG: camera noise makes full-colour PNGs of smears several MB each."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb)).quantize(256, method=Image.Quantize.FASTOCTREE)
    image.save(path.with_suffix(".png"), optimize=True)


def _label(img: np.ndarray, text: str, scale: float = 0.6) -> None:
    cv2.putText(img, text, (6, 22), _FONT, scale, (255, 255, 255), 4, cv2.LINE_AA)
    cv2.putText(img, text, (6, 22), _FONT, scale, (20, 20, 20), 1, cv2.LINE_AA)


def class_gallery(out: Path, per_class: int = 3, fovs: int = 14) -> None:
    """`per_class` crops (256 px at 40x = 22 µm) of every class, the least crowded of `fovs` FOVs."""
    slide = simulate_slide(101, "normal", scan_area_um=(3000.0, 2000.0),
                           class_weights_override=dict(PROFILES["balanced"]))  # fmt: skip
    found: dict[str, list[tuple[float, int, np.ndarray]]] = {c: [] for c in CLASS_CODES}
    tiles = [t for t in slide.grid_tiles() if t.label == "optimal"]
    for k, t in enumerate(tiles[:fovs]):
        fov = slide.render_fov(t.x_um, t.y_um)
        busy = (fov.instance_mask > 0) | (fov.distractor_mask > 0)
        for c in fov.cells:
            x, y = round(c.centre[0]), round(c.centre[1])
            half = 256 if c.code in ("MKC", "MAC") else 128  # the big ones shown at half scale
            if c.area_px < 0.8 * c.full_area_px:
                continue
            if not (half <= x < fov.image.shape[1] - half and half <= y < fov.image.shape[0] - half):
                continue  # whole crop inside the FOV: no invented borders
            window = (slice(y - half, y + half), slice(x - half, x + half))
            own = fov.instance_mask[window] == c.id
            crowding = float(np.mean(busy[window] & ~own))
            crop = cv2.resize(fov.image[window], (144, 144), interpolation=cv2.INTER_AREA)
            found[c.code].append((crowding, k * 1000 + c.id, crop))
    crops = {code: [crop for _, _, crop in sorted(found[code], key=lambda f: f[:2])[:per_class]] for code in found}
    cols = 6
    cells = []
    for code in CLASS_CODES:
        row = crops[code] + [np.full((144, 144, 3), 255, np.uint8)] * (per_class - len(crops[code]))
        strip = np.concatenate(row, axis=1)
        _label(strip, code + (" (1/2 scale)" if code in ("MKC", "MAC") else ""))
        cells.append(strip)
    while len(cells) % (cols // per_class):
        cells.append(np.full_like(cells[0], 255))
    rows = [np.concatenate(cells[i : i + cols // per_class], axis=1) for i in range(0, len(cells), cols // per_class)]
    _save(out / "classes.jpg", np.concatenate(rows, axis=0))


def quality_gallery(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """One overview tile and the FOV captured there for each quality class; also returns the overview."""
    slide = simulate_slide(102, "normal")
    overview = slide.render_overview()
    panels = []
    for label in QUALITY_CLASSES:
        tiles = [t for t in overview.grid_tiles() if t.label == label]
        t = tiles[len(tiles) // 2]
        tile = cv2.resize(overview.tile_image(t), (256, 188), interpolation=cv2.INTER_NEAREST)
        fov = cv2.resize(slide.render_fov(t.x_um, t.y_um).image, (384, 280), interpolation=cv2.INTER_AREA)
        panel = np.full((280, 256 + 384 + 8, 3), 255, np.uint8)
        panel[:188, :256] = tile
        panel[:, 264:] = fov
        _label(panel, label, 0.7)
        panels.append(panel)
    grid = [np.concatenate([panels[i], np.full((280, 16, 3), 255, np.uint8), panels[i + 1]], axis=1)
            for i in range(0, 6, 2)]  # fmt: skip
    _save(out / "quality.jpg", np.concatenate(grid, axis=0))
    small = cv2.resize(overview.image, (1000, round(1000 * overview.image.shape[0] / overview.image.shape[1])),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    _save(out / "overview.jpg", small)
    colours = {"optimal": (40, 170, 60), "acceptable": (150, 200, 60), "too_dense": (200, 40, 40),
               "too_sparse": (60, 120, 220), "artefact": (230, 150, 0), "background": (200, 200, 200)}  # fmt: skip
    qmap = np.array([[colours[q] for q in row] for row in overview.quality], np.uint8)
    qmap = cv2.resize(qmap, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
    _save(out / "overview_quality.jpg", cv2.addWeighted(small, 0.55, qmap, 0.45, 0))
    return overview.image, qmap


def fov_examples(out: Path) -> None:
    """A full FOV, a 1:1 crop, and the ground truth drawn over it."""
    slide = simulate_slide(103, "aml")
    tiles = [t for t in slide.grid_tiles() if t.label == "optimal"]
    t = tiles[len(tiles) // 3]
    fov = slide.render_fov(t.x_um, t.y_um)
    _save(out / "fov.jpg", cv2.resize(fov.image, (896, 654), interpolation=cv2.INTER_AREA))
    _save(out / "fov_crop.jpg", fov.image[400:900, 500:1200])
    truth = fov.image.copy()
    truth[fov.distractor_mask > 0] = (0.6 * truth[fov.distractor_mask > 0] + [0, 60, 0]).astype(np.uint8)
    edges = cv2.morphologyEx(fov.instance_mask.astype(np.uint16), cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8))
    truth[edges > 0] = (0, 0, 0)
    for c in fov.cells:
        x0, y0 = c.bbox[:2]
        cv2.putText(truth, c.code, (x0 + 4, y0 + 24), _FONT, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    _save(out / "fov_truth.jpg", cv2.resize(truth, (896, 654), interpolation=cv2.INTER_AREA))


def main(out: str) -> None:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    class_gallery(path)
    quality_gallery(path)
    fov_examples(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/simulator")
