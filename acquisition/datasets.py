"""Training and evaluation sets from the virtual Metafer (`marrowlink make-dataset {aoi,seg,cls}`).

The formats are a contract with `ai` (ai/data.py reads exactly these):
- every folder: `dataset.json` {kind, seeds, profiles, pixel_size_um, generator_version, counts, classes, …}
- aoi: `tiles/<seed>_<row>_<col>.png` (a grid tile of the overview, RGB at overview resolution) and
  `labels.csv` (file,label,seed,row,col), background tiles subsampled so they do not dominate;
- seg: `images/<seed>_<k>.png` (RGB FOV 2048x1496), `masks/<seed>_<k>.png` (uint16 nucleated-cell
  ids, 0 = background), `distractors/<seed>_<k>.png` (uint16 ids of non-nucleated objects),
  `shared` (the folder) `<seed>_<k>.png` (uint16, 1 where two or more cells' whole outlines overlap: which one
  lies on top there is not visible, `Fov.shared_pixels`), `outlines/<seed>_<k>.npz` (`layers`: every cell's
  whole outline, also under other cells, as (L, h, w) uint16 label images with the `masks/` ids,
  `Fov.outline_layers`), `cells.csv` (file,instance_id,class) with `file` the
  image's name, and `fovs.csv` (file,seed,x_um,y_um,source,quality);
- cls: `crops/<CLASS>/<seed>_<k>_<id>.png` (128x128 RGB: 256x256 px of the FOV around the cell centre
  halved, i.e. 0.1725 µm/px, `crop_pixel_size_um`) and `labels.csv` (file,label,seed), `file`
  relative to the folder. Only cells at least 60% visible whose crop lies inside the FOV are cropped.
Images go through the JPEG quality the scanner exports with (FOV 90, overview 92) before they are
saved, so models train on the same compression artefacts they will see on imported scans.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from acquisition.catalogue import CLASS_CODES, QUALITY_CLASSES
from acquisition.planning import oracle_scores, rank_tiles
from acquisition.simulator import GENERATOR_VERSION, PROFILE_NAMES, PROFILES, VirtualSlide, optics, simulate_slide
from acquisition.simulator.profiles import CLUSTER_FRACTION
from acquisition.simulator.scanner import write_ids

KINDS = ("aoi", "seg", "cls")
CROP_SOURCE_PX = 256
CROP_PX = 128
CROP_PIXEL_UM = optics.FOV_PIXEL_UM * CROP_SOURCE_PX / CROP_PX
#: A cell is cropped when at least this share of it is visible (not cut by the border or covered).
MIN_VISIBLE = 0.6


def profile_for(seed: int, profiles: Sequence[str] | None) -> str:
    """`None` or ["mixed"] cycles through the eight disease profiles by seed."""
    names = list(PROFILE_NAMES) if not profiles or list(profiles) == ["mixed"] else list(profiles)
    for p in names:
        if p not in PROFILES:
            raise ValueError(f"unknown profile {p!r}; known: {', '.join(PROFILES)}, mixed")
    return names[seed % len(names)]


def balanced_weights() -> dict[str, float]:
    """Equal cell counts per class: classes that come in clusters (a seed cell brings 2-6 more) are
    seeded less often."""
    mean_extra = 4.0  # members added to a cluster: integers 2..6
    return {c: 1.0 / (1.0 + CLUSTER_FRACTION.get(c, 0.0) * mean_extra) for c in CLASS_CODES}


def units(kind: str, seeds: Sequence[int], fovs_per_seed: int) -> int:
    """Progress units of a `make_dataset` call (one per overview or FOV)."""
    return len(seeds) * (1 if kind == "aoi" else fovs_per_seed)


def make_dataset(
    kind: str,
    out: Path | str,
    seeds: Sequence[int],
    *,
    profiles: Sequence[str] | None = None,
    fovs_per_seed: int = 8,
    scan_area_um: tuple[float, float] | None = None,
    balance: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a data set of `kind` for `seeds` into `out` (see module docstring); returns `out`.

    cls with `balance` (default) draws every class with the same frequency (the `balanced` profile)
    on slides that otherwise follow each seed's profile (stain, density, rouleaux), so rare classes
    are not starved; the other kinds keep the profiles' natural frequencies.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        # Stale images from an earlier run would silently join the new set (readers glob the folders).
        raise FileExistsError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    used = [profile_for(s, profiles) for s in seeds]
    step = progress or (lambda n: None)
    area = {"scan_area_um": scan_area_um} if scan_area_um else {}
    override = balanced_weights() if (kind == "cls" and balance) else None
    slides = (simulate_slide(s, p, class_weights_override=override, **area) for s, p in zip(seeds, used, strict=True))
    writer = {"aoi": _aoi, "seg": _seg, "cls": _cls}[kind]
    counts, extra = writer(out, slides, fovs_per_seed, step)
    manifest: dict[str, Any] = {
        "kind": kind,
        "seeds": seeds,
        "profiles": sorted(set(used)),
        "pixel_size_um": optics.OVERVIEW_PIXEL_UM if kind == "aoi" else optics.FOV_PIXEL_UM,
        "generator_version": GENERATOR_VERSION,
        "counts": dict(sorted(counts.items())),
        **extra,
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _aoi(out: Path, slides: Any, _fovs: int, step: Callable[[int], None]) -> tuple[Counter, dict]:
    counts: Counter = Counter()
    with (out / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "seed", "row", "col"])
        for slide in slides:
            overview = slide.render_overview()
            image = _jpeg(overview.image, 92)
            tiles = overview.grid_tiles()
            by_label = Counter(t.label for t in tiles)
            others = [n for lab, n in by_label.items() if lab != "background"]
            # Glass is the easiest and most common class: keep about as many as an average other class.
            keep_bg = max(1, round(sum(others) / max(len(others), 1)))
            rng = np.random.default_rng([slide.seed, 0xA01])
            bg = [t for t in tiles if t.label == "background"]
            chosen_bg = {(t.row, t.col) for t in (rng.permutation(bg)[:keep_bg] if bg else [])}
            for t in tiles:
                if t.label == "background" and (t.row, t.col) not in chosen_bg:
                    continue
                name = f"tiles/{slide.seed}_{t.row}_{t.col}.png"
                _png(out / name, image[t.y_px : t.y_px + t.height_px, t.x_px : t.x_px + t.width_px])
                w.writerow([name, t.label, slide.seed, t.row, t.col])
                counts[t.label] += 1
            step(1)
    extra = {"classes": list(QUALITY_CLASSES), "tile_size_px": [optics.TILE_WIDTH_PX, optics.TILE_HEIGHT_PX],
             "tile_size_um": [optics.TILE_WIDTH_UM, optics.TILE_HEIGHT_UM]}  # fmt: skip
    return counts, extra


@dataclass(frozen=True)
class FovPosition:
    """Where a dataset FOV was taken: `scan_list` (the best-quality positions, as the AOI step picks them
    for the 40x scan) or `random` (any smear tile: thick, sparse or spoiled fields the scanner would skip)."""

    x_um: float
    y_um: float
    source: str
    quality: str | None


def fov_positions(slide: VirtualSlide, n: int, explore: float) -> list[FovPosition]:
    """FOV top-left corners: the best `n` oracle positions, `explore` of them swapped for random smear
    tiles of any quality (so segmentation also learns thick, sparse and spoiled fields)."""
    tiles = slide.grid_tiles()
    best = rank_tiles(tiles, oracle_scores(tiles), n)
    n_random = round(n * explore)
    rng = np.random.default_rng([slide.seed, 0x5E6])
    taken = {(p.row, p.col) for p in best[: n - n_random]}
    pool = [t for t in tiles if t.label != "background" and (t.row, t.col) not in taken]
    extra = [pool[i] for i in rng.permutation(len(pool))[:n_random]] if pool else []
    return [FovPosition(p.x_um, p.y_um, "scan_list", p.label) for p in best[: n - n_random]] + [
        FovPosition(t.x_um, t.y_um, "random", t.label) for t in extra
    ]


def _seg(out: Path, slides: Any, fovs: int, step: Callable[[int], None]) -> tuple[Counter, dict]:
    counts: Counter = Counter()
    for sub in ("images", "masks", "distractors", "shared", "outlines"):
        (out / sub).mkdir(exist_ok=True)
    with (out / "cells.csv").open("w", newline="") as f, (out / "fovs.csv").open("w", newline="") as g:
        w = csv.writer(f)
        w.writerow(["file", "instance_id", "class"])
        where = csv.writer(g)
        where.writerow(["file", "seed", "x_um", "y_um", "source", "quality"])
        for slide in slides:
            for k, pos in enumerate(fov_positions(slide, fovs, explore=0.3)):
                fov = slide.render_fov(pos.x_um, pos.y_um)
                name = f"{slide.seed}_{k}.png"
                where.writerow([name, slide.seed, round(pos.x_um, 2), round(pos.y_um, 2), pos.source, pos.quality])
                _png(out / "images" / name, _jpeg(fov.image, 90))
                write_ids(out / "masks" / name, fov.instance_mask)
                write_ids(out / "distractors" / name, fov.distractor_mask)
                write_ids(out / "shared" / name, fov.shared_pixels().astype(np.uint16))
                np.savez_compressed(out / "outlines" / name.replace(".png", ".npz"), layers=fov.outline_layers())
                for c in fov.cells:
                    w.writerow([name, c.id, c.code])
                    counts[c.code] += 1
                counts["fovs"] += 1
                counts["distractors"] += len(fov.distractors)
                step(1)
    return counts, {"classes": list(CLASS_CODES), "fov_size_px": [optics.FOV_WIDTH_PX, optics.FOV_HEIGHT_PX]}


def _cls(out: Path, slides: Any, fovs: int, step: Callable[[int], None]) -> tuple[Counter, dict]:
    counts: Counter = Counter()
    half = CROP_SOURCE_PX // 2
    with (out / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "seed"])
        for slide in slides:
            for k, pos in enumerate(fov_positions(slide, fovs, explore=0.0)):
                fov = slide.render_fov(pos.x_um, pos.y_um)
                image = _jpeg(fov.image, 90)
                for c in fov.cells:
                    x0, y0 = round(c.centre[0]) - half, round(c.centre[1]) - half
                    # Only crops that lie wholly inside the FOV: padding would invent pixels.
                    inside = (
                        0 <= x0 <= optics.FOV_WIDTH_PX - CROP_SOURCE_PX
                        and 0 <= y0 <= optics.FOV_HEIGHT_PX - CROP_SOURCE_PX
                    )
                    if not inside or c.area_px < MIN_VISIBLE * c.full_area_px:
                        continue
                    crop = image[y0 : y0 + CROP_SOURCE_PX, x0 : x0 + CROP_SOURCE_PX]
                    small = cv2.resize(crop, (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA)
                    name = f"crops/{c.code}/{slide.seed}_{k}_{c.id}.png"
                    _png(out / name, small)
                    w.writerow([name, c.code, slide.seed])
                    counts[c.code] += 1
                step(1)
    extra = {"classes": list(CLASS_CODES), "crop_size_px": CROP_PX, "crop_pixel_size_um": CROP_PIXEL_UM}
    return counts, extra
