"""Readers for the simulator's `make-dataset` folders (aoi, seg, cls), into uint8 arrays in memory.

Formats (written by `marrowlink make-dataset`): every folder has `dataset.json`; aoi has
`tiles/*.png` + `labels.csv` (file,label,seed,row,col); seg has `images/`, `masks/` (uint16 nucleated
cell ids), `distractors/` (uint16 ids of red cells, platelets, debris) + `cells.csv`; cls has
`crops/<CLASS>/*.png` + `labels.csv` (file,label,seed). Images are decoded once and resized to the
network's working scale here, so that training epochs never touch PNG decoding.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


def read_rgb(path: Path | str) -> np.ndarray:
    """Decode an image file to uint8 RGB; a clear error when it is not an image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image (PNG/JPEG/TIFF expected)")
    return np.ascontiguousarray(image[..., ::-1])


def read_ids(path: Path | str) -> np.ndarray:
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2:
        raise ValueError(f"{path}: not a single-channel instance-id image")
    return ids.astype(np.int32)


def read_outlines(path: Path | str) -> np.ndarray:
    """A seg dataset's whole cell outlines (`outlines/*.npz`): (L, h, w) label images, ids as in `masks/`."""
    try:
        with np.load(path) as z:
            layers = z["layers"]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not an outline file with a `layers` array ({e})") from None
    if layers.ndim != 3:
        raise ValueError(f"{path}: outline layers must be (L, h, w), got {layers.shape}")
    return layers  # uint16: a FOV's layers are large, and ids fit


def star_example(image: np.ndarray, layers: np.ndarray, scale: float):
    """A FOV and its outline layers -> (image at working scale, centre map, poles) for `ai.star` networks."""
    from ai.star import star_targets

    small, small_layers = to_working_scale(image, layers, scale)
    centre, poles = star_targets(small_layers)
    return small, centre, poles


def read_manifest(data_dir: Path, kind: str) -> dict:
    path = data_dir / "dataset.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: make the dataset with `marrowlink make-dataset {kind}`")
    manifest = json.loads(path.read_text())
    if manifest.get("kind") != kind:
        raise ValueError(f"{path}: dataset kind is {manifest.get('kind')!r}, expected {kind!r}")
    return manifest


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _parallel(fn, items):
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(fn, items))


@dataclass
class LabelledImages:
    """Images of one size with an integer label each (aoi tiles, cls crops)."""

    images: np.ndarray  # (n, s, s, 3) uint8
    labels: np.ndarray  # (n,) int
    seeds: np.ndarray  # (n,) int
    classes: list[str]
    manifest: dict = field(default_factory=dict)

    def subset(self, index: np.ndarray) -> LabelledImages:
        return LabelledImages(self.images[index], self.labels[index], self.seeds[index], self.classes, self.manifest)


def _load_labelled(
    data_dir: Path, kind: str, size: int, classes: Sequence[str] | None, extra: dict[str, Sequence[str]] | None = None
) -> LabelledImages:
    manifest = read_manifest(data_dir, kind)
    rows = _rows(data_dir / "labels.csv")
    if classes is None:
        classes = list(manifest.get("classes") or sorted({r["label"] for r in rows}))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r["label"] for r in rows} - set(index))
    if unknown:
        raise ValueError(f"{data_dir / 'labels.csv'}: labels not in the class list: {unknown}")

    def load(row: dict[str, str]) -> np.ndarray:
        image = read_rgb(data_dir / row["file"])
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        return image

    images = np.stack(_parallel(load, rows)) if rows else np.zeros((0, size, size, 3), np.uint8)
    return LabelledImages(
        images=images,
        labels=np.array([index[r["label"]] for r in rows], int),
        seeds=np.array([int(r.get("seed") or 0) for r in rows], int),
        classes=list(classes),
        manifest=manifest,
    )


def load_aoi(data_dir: Path, size: int, classes: Sequence[str] | None = None) -> LabelledImages:
    return _load_labelled(Path(data_dir), "aoi", size, classes)


def load_cls(data_dir: Path, size: int, classes: Sequence[str] | None = None) -> LabelledImages:
    return _load_labelled(Path(data_dir), "cls", size, classes)


@dataclass
class SegmentationSet:
    """FOVs at the network's working scale with per-pixel targets, plus full-resolution instance ids
    kept only for the validation FOVs (cell-level metrics are computed at full resolution)."""

    images: list[np.ndarray]  # uint8 RGB at working scale
    targets: list  # uint8 (h, w, 2): foreground, centre at working scale, 0..255 = 0..1; star: (centre, poles)
    seeds: np.ndarray
    files: list[str]
    manifest: dict


def seg_example(image: np.ndarray, ids: np.ndarray, scale: float, contacts: bool = False):
    """A FOV and its instance ids -> (image at working scale, uint8 targets 0..255 = 0..1): foreground,
    centre ramp (`ai.postprocess.centre_targets`) and, with `contacts`, a third channel marking cell
    pixels within 2 px of another cell (where hard training crops are centred)."""
    from ai.postprocess import centre_targets

    small, small_ids = to_working_scale(image, ids, scale)
    channels = [255 * (small_ids > 0).astype(np.uint8), np.round(255 * centre_targets(small_ids)).astype(np.uint8)]
    if contacts:
        channels.append(255 * contact_pixels(small_ids).astype(np.uint8))
    return small, np.stack(channels, axis=-1)


def to_working_scale(image: np.ndarray, ids: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A FOV (area-averaged) and its instance ids (nearest, int32; a (L, h, w) stack of outline layers
    layer by layer) resized by `scale`."""
    h, w = image.shape[:2]
    size = (round(w * scale), round(h * scale))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if ids.ndim == 3:
        return small, np.stack([cv2.resize(la.astype(np.int32), size, interpolation=cv2.INTER_NEAREST) for la in ids])
    return small, cv2.resize(ids.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)


def contact_pixels(ids: np.ndarray) -> np.ndarray:
    """Cell pixels within 2 px of another cell (bool): where touching and overlapping cells must part."""
    from scipy import ndimage as ndi

    ids = ids.astype(np.int32)
    higher = ndi.maximum_filter(ids, 5) != ids
    lower = ndi.minimum_filter(np.where(ids > 0, ids, np.iinfo(np.int32).max), 5) != ids
    return (ids > 0) & (higher | lower)


def load_seg(data_dir: Path, scale: float, star: bool = False) -> SegmentationSet:
    """Read a seg dataset, resizing images by `scale` and deriving foreground and centre targets, or with
    `star` the (centre map, poles) targets of star-convex cell networks from the whole outlines."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir, "seg")
    files = sorted(p.name for p in (data_dir / "images").glob("*.png"))
    if star and files and not (data_dir / "outlines").is_dir():
        raise FileNotFoundError(
            f"{data_dir}/outlines is missing: star networks learn whole cell outlines, which "
            "`marrowlink make-dataset seg` writes since 2026-11-26 (make the dataset again)"
        )

    def load(name: str) -> tuple[np.ndarray, object]:
        image = read_rgb(data_dir / "images" / name)
        if star:
            outlines = read_outlines(data_dir / "outlines" / name.replace(".png", ".npz"))
            small, centre, poles = star_example(image, outlines, scale)
            return small, (centre, poles)
        return seg_example(image, read_ids(data_dir / "masks" / name), scale)

    pairs = _parallel(load, files)
    return SegmentationSet(
        images=[p[0] for p in pairs],
        targets=[p[1] for p in pairs],
        seeds=np.array([int(f.split("_")[0]) for f in files], int),
        files=files,
        manifest=manifest,
    )


def split_by_seed(seeds: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation items, split by slide seed so that no slide is in both."""
    unique = np.unique(seeds)
    n_val = max(1, round(len(unique) * val_fraction)) if len(unique) > 1 else 0
    val_seeds = set(unique[len(unique) - n_val :].tolist())
    is_val = np.array([s in val_seeds for s in seeds], bool)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]
