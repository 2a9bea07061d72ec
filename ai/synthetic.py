"""Tiny synthetic datasets in the simulator's `make-dataset` layout (coloured blobs), for tests and smoke
runs of the training and inference code without the virtual Metafer. Not for shipped models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

NUCLEUS = (120, 60, 150)
RED_CELL = (225, 150, 150)
BACKGROUND = (238, 232, 235)


def blob_fov(rng: np.random.Generator, shape=(192, 256), n_cells=4, n_red=5, radius=(12, 18)):
    """An RGB image with purple 'nucleated cells' (some touching) and pink 'red cells'; returns image,
    cell ids, distractor ids."""
    h, w = shape
    image = np.zeros((h, w, 3), np.uint8) + np.array(BACKGROUND, np.uint8)
    cells = np.zeros(shape, np.uint16)
    dis = np.zeros(shape, np.uint16)
    for k in range(1, n_red + 1):
        r = int(rng.integers(radius[0] - 4, radius[0]))
        c = (int(rng.integers(r, w - r)), int(rng.integers(r, h - r)))
        cv2.circle(image, c, r, RED_CELL, -1)
        cv2.circle(dis, c, r, k, -1)
    k = 0
    while k < n_cells:
        r = int(rng.integers(*radius))
        c = (int(rng.integers(r, w - r)), int(rng.integers(r, h - r)))
        if cells[max(0, c[1] - r) : c[1] + r, max(0, c[0] - r) : c[0] + r].any():
            continue
        k += 1
        cv2.circle(image, c, r, NUCLEUS, -1)
        cv2.circle(cells, c, r, k, -1)
        dis[cells == k] = 0
    noise = rng.normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), cells, dis


def write_seg(out: Path, n: int = 6, seeds: tuple[int, ...] = (1, 2, 3), shape=(192, 256), pixel_size_um=0.086):
    out = Path(out)
    for sub in ("images", "masks", "distractors", "outlines"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for k in range(n // len(seeds)):
            image, cells, dis = blob_fov(rng, shape)
            name = f"{seed}_{k}.png"
            cv2.imwrite(str(out / "images" / name), image[..., ::-1])
            cv2.imwrite(str(out / "masks" / name), cells)
            cv2.imwrite(str(out / "distractors" / name), dis)
            # blobs do not overlap: each one's whole outline is its visible mask, one layer holds them all
            np.savez_compressed(out / "outlines" / f"{seed}_{k}.npz", layers=cells.astype(np.uint16)[None])
            rows += [(name, int(i), "LYT") for i in np.unique(cells) if i]
    with (out / "cells.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "instance_id", "class"), *rows])
    _manifest(out, "seg", seeds, pixel_size_um=pixel_size_um)
    return out


def write_labelled(out: Path, kind: str, classes: list[str], per_class: int = 12, size: int = 64,
                   seeds: tuple[int, ...] = (1, 2, 3)) -> Path:  # fmt: skip
    """cls crops or aoi tiles: each class a distinct colour and blob size."""
    out = Path(out)
    rng = np.random.default_rng(1)
    rows = []
    for ci, cls in enumerate(classes):
        folder = out / ("crops" if kind == "cls" else "tiles") / (cls if kind == "cls" else "")
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(60 * ci) % 256, (110 + 70 * ci) % 256, (200 - 45 * ci) % 256], float)
        for k in range(per_class):
            seed = seeds[k % len(seeds)]
            image = np.zeros((size, size, 3), np.uint8) + 235
            cv2.circle(image, (size // 2, size // 2), size // 6 + 3 * ci, colour.tolist(), -1)
            image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
            name = f"{seed}_{k}_{ci}.png" if kind == "cls" else f"{seed}_{ci}_{k}.png"
            cv2.imwrite(str(folder / name), image[..., ::-1])
            rows.append((str((folder / name).relative_to(out)), cls, seed))
    with (out / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "label", "seed"), *rows])
    extra = {"crop_pixel_size_um": 0.172} if kind == "cls" else {}
    _manifest(out, kind, seeds, pixel_size_um=0.086 if kind == "cls" else 0.345, **extra)
    return out


def _manifest(out: Path, kind: str, seeds, **extra) -> None:
    (out / "dataset.json").write_text(json.dumps({
        "kind": kind, "seeds": list(seeds), "profiles": ["synthetic-blobs"], "generator_version": "ai.synthetic",
        "counts": {}, **extra}))  # fmt: skip
