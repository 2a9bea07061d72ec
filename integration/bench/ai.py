"""`marrowlink bench ai`: inference speed of segmentation + classification (compact and paper architectures) and
AOI scoring, on this machine's CPU. Weights do not change speed, so untrained networks stand in for
architectures that are not shipped."""

from __future__ import annotations

import resource
import time

import numpy as np

from ai.models import ModelCard


def _segmenter(arch: str):
    from ai.inference import CellSegmenter
    from ai.models import ModelError

    if arch == "compact":
        try:
            return CellSegmenter.load(), "shipped"
        except ModelError:
            pass
    from ai.architectures import build

    card = ModelCard("seg", arch, ["nucleated_cell"], 256, 0.344 if arch == "compact" else 0.172,
                     training={"source_pixel_size_um": 0.086})  # fmt: skip
    return CellSegmenter(build("seg", arch), card), "untrained"


def _classifier(arch: str):
    from acquisition import CLASS_CODES
    from ai.architectures import DEFAULT_INPUT, build
    from ai.inference import CellClassifier
    from ai.models import ModelError

    if arch == "compact":
        try:
            return CellClassifier.load(), "shipped"
        except ModelError:
            pass
    size = DEFAULT_INPUT[("cls", arch)]
    card = ModelCard("cls", arch, list(CLASS_CODES), size, 0.172 * 128 / size)
    return CellClassifier(build("cls", arch, input_size=size), card), "untrained"


def fovs_for_bench(n: int, seed: int = 0) -> list[np.ndarray]:
    from ai.synthetic import blob_fov

    rng = np.random.default_rng(seed)
    return [blob_fov(rng, (1496, 2048), n_cells=150, n_red=300, radius=(50, 110))[0] for _ in range(n)]


def bench_pipeline(seg_arch: str, cls_arch: str, fovs: list[np.ndarray], pixel_size_um: float = 0.086) -> dict:
    from ai.inference import analyze_fovs

    seg, seg_src = _segmenter(seg_arch)
    cls, cls_src = _classifier(cls_arch)
    analyze_fovs(fovs[:1], pixel_size_um, seg, cls)  # warm-up (graph tracing)
    t = time.perf_counter()
    dets = []
    for i in range(0, len(fovs), 4):
        dets += analyze_fovs(fovs[i : i + 4], pixel_size_um, seg, cls)
    dt = time.perf_counter() - t
    n_cells = sum(len(d) for d in dets)
    return {
        "seg_arch": seg.card.arch, "cls_arch": cls.card.arch, "weights": f"seg {seg_src}, cls {cls_src}",
        "fovs": len(fovs), "cells": n_cells, "seconds": round(dt, 2), "fovs_per_s": round(len(fovs) / dt, 3),
        "seconds_per_50_fovs": round(50 * dt / len(fovs), 1),
    }  # fmt: skip


def bench_aoi(grid: tuple[int, int] = (24, 32), tile: tuple[int, int] = (374, 512)) -> dict:
    """One overview of grid[0] x grid[1] FOV-sized tiles (default 768 tiles, ~9000x16000 px at 10x)."""
    from ai.inference import AoiModel, grid_tiles
    from ai.models import ModelError

    try:
        model, src = AoiModel.load(), "shipped"
    except ModelError:
        from acquisition import QUALITY_CLASSES
        from ai.architectures import build

        model, src = (
            AoiModel(build("aoi", "compact"), ModelCard("aoi", "compact", list(QUALITY_CLASSES), 64, 0.345)),
            "untrained",
        )
    rng = np.random.default_rng(0)
    overview = rng.integers(150, 255, (grid[0] * tile[0], grid[1] * tile[1], 3), dtype=np.uint8)
    model.score_tiles([overview[:64, :64]])
    t = time.perf_counter()
    tiles, _ = grid_tiles(overview, *tile)
    model.top_positions(tiles, 50)
    return {"tiles": len(tiles), "overview_px": list(overview.shape[:2]), "seconds": round(time.perf_counter() - t, 2),
            "weights": src}  # fmt: skip


def run_bench(n_fovs: int = 10, paper_fovs: int = 2, fovs: list[np.ndarray] | None = None, source: str = "") -> dict:
    """`fovs`: 40x FOVs to time on (the CLI passes simulator FOVs); blob images otherwise."""
    if fovs is None:
        fovs, source = fovs_for_bench(max(n_fovs, paper_fovs)), "synthetic blobs"
    out = {
        "fov_source": source,
        "compact": bench_pipeline("compact", "compact", fovs[:n_fovs]),
        "paper": bench_pipeline("unet16", "xception", fovs[:paper_fovs]),
        "aoi": bench_aoi(),
        "target": "50 FOVs <= 90 s (compact); overview AOI <= 30 s",
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    try:
        import tensorflow as tf

        out["tf_threads"] = {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                             "inter": tf.config.threading.get_inter_op_parallelism_threads()}  # fmt: skip
    except Exception:  # pragma: no cover - informational only
        pass
    import os

    out["cpus"] = os.cpu_count()
    return out


def simulated_fovs(n: int) -> tuple[list[np.ndarray], str]:
    """Optimal-quality 40x FOVs of a virtual slide, rendered before timing starts, and where they came from."""
    from acquisition.simulator import simulate_slide

    slide = simulate_slide(7, "normal")
    tiles = [t for t in slide.grid_tiles() if t.label in ("optimal", "acceptable")][:n]
    images = [slide.render_fov(t.x_um, t.y_um).image for t in tiles]
    while len(images) < n:
        images.append(images[len(images) % len(tiles)])
    return images, f"virtual Metafer seed 7 (normal), {len(tiles)} optimal/acceptable FOVs"
