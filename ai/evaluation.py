"""Evaluation on arrays (no simulator import here: integration generates the held-out data).

Also holds the threshold choices made on validation data at the end of training, so that evaluation
and threshold selection measure exactly the same thing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from acquisition import CRITICAL_CODES
from ai.catalogue import GOOD_QUALITY
from ai.metrics import (
    DetectionCounts,
    classification_report,
    detection_counts,
    f_beta,
    overlapping_counts,
    top_n_good_share,
)

FOREGROUND_GRID = (0.4, 0.5, 0.6)
CENTRE_GRID = (0.2, 0.4)
SEED_DISTANCE_GRID_UM = (2.0, 3.0)  # closest two cell centres may lie; 3 µm halves over-splitting of large cells
MIN_AREA_GRID_UM2 = (6.0, 12.0, 20.0)
MIN_TRUE_AREA_UM2 = 15.0  # evaluable true cells (see ai.metrics)


# A first grid (centre 0.3/0.5, seed distance 1/2 µm, NMS 0.4/0.6, min area 6/12 µm²) chose its edges
# (0.3, 1 µm, 0.6, 6 µm²) for the first star model on its validation seeds; a second (centre 0.2-0.4, NMS
# 0.5-0.7, min area 4-9 µm²) its edges again (0.2, 0.7, 4 µm²). Its successor's centre map is a ramp, not a
# plateau (ai.training.losses.star_loss), so its peaks are lower: on its validation seeds a wide search
# (centre 0.1-0.5, seed distance 1/1.5 µm, NMS 0.4-0.8, min area 4-15 µm²) peaked at 0.1, 1 µm, 0.7 and
# 4-9 µm² (F-beta flat within 0.0005 from 0.1 to 0.15): this grid surrounds that.
STAR_GRID = {"centre": (0.05, 0.1, 0.15, 0.2), "seed_distance_um": (1.0,), "nms_iou": (0.6, 0.7, 0.8),
             "min_area_um2": (4.0, 6.0, 9.0)}  # fmt: skip


def evaluate_detections(
    detections: Sequence,
    true_masks: Sequence[np.ndarray],
    distractors: Sequence[np.ndarray | None],
    outlines: Sequence[np.ndarray] | None = None,
) -> DetectionCounts:
    """Cell-level counts of predicted CellDetections against full-resolution instance-id images, or with
    `outlines` against each cell's whole outline (outline layers; cells may then overlap)."""
    total = DetectionCounts()
    for k, (det, truth, dis) in enumerate(zip(detections, true_masks, distractors, strict=True)):
        min_true = MIN_TRUE_AREA_UM2 / det.pixel_size_um**2
        if outlines is not None:
            total = total + overlapping_counts(outlines[k], det.masks(), dis, min_true_area=min_true, visible=truth)
        else:
            total = total + detection_counts(truth, det.label_image(), dis, min_true_area=min_true)
    return total


def select_star_thresholds(
    segmenter,
    maps: Sequence[np.ndarray],
    fov_shapes,
    pixel_size_um: float,
    true_masks,
    distractors,
    outlines,
    grid: dict | None = None,
) -> tuple[dict[str, float], dict]:
    """`select_seg_thresholds` for star-convex cell networks (`ai.star`): centre threshold, seed distance,
    NMS overlap and minimum area by F-beta against the cells' whole outlines, which these networks predict.

    Counts exactly what `evaluate_detections` counts for `segmenter.star_cells` at each grid point, but
    proposes the cells and measures their overlaps with the truth once per FOV and seed distance (at the
    lowest centre threshold: `ai.star.star_proposals`); each grid point then only picks proposals."""
    from ai.metrics import overlap_tables
    from ai.star import keep_cells, proposal_overlaps, star_proposals

    grid = grid or STAR_GRID
    min_true = MIN_TRUE_AREA_UM2 / pixel_size_um**2
    best: tuple[float, dict[str, float], dict] | None = None
    for seed_distance in grid["seed_distance_um"]:
        base = segmenter.star_parameters(seed_distance_um=seed_distance, centre=min(grid["centre"]))
        fovs = []
        for k, m in enumerate(maps):
            proposals = star_proposals(m, base["centre_threshold"], base["seed_distance"])
            masks = segmenter.star_detections(proposals, fov_shapes[k], pixel_size_um).masks()
            tables = overlap_tables(outlines[k], masks, distractors[k], min_true_area=min_true, visible=true_masks[k])
            fovs.append((proposals, proposal_overlaps(proposals), tables))
        for centre, nms_iou, min_area in itertools.product(grid["centre"], grid["nms_iou"], grid["min_area_um2"]):
            chosen = {"centre": centre, "seed_distance_um": seed_distance, "nms_iou": nms_iou, "min_area_um2": min_area}
            p = segmenter.star_parameters(**chosen)
            counts = DetectionCounts()
            for proposals, overlaps, tables in fovs:
                above = sum(1 for _, score, _ in proposals if score >= p["centre_threshold"])  # best first
                kept = keep_cells(proposals[:above], p["nms_iou"], p["min_area"], p["max_area"], overlaps)
                counts = counts + tables.counts(kept)
            score = f_beta(counts.precision, counts.sensitivity)
            if best is None or score > best[0]:
                best = (score, chosen, counts.summary())
    assert best is not None
    return best[1], best[2]


def select_seg_thresholds(segmenter, maps: Sequence[np.ndarray], fov_shapes, pixel_size_um: float,
                          true_masks, distractors) -> tuple[dict[str, float], dict]:  # fmt: skip
    """Foreground and centre-seed thresholds, seed distance and minimum cell area maximising F-beta (beta^2 = 5,
    recall 5:1) on validation FOVs from the simulator; returns the thresholds and the chosen operating point's
    metrics."""
    best: tuple[float, dict[str, float], dict] | None = None
    grid = itertools.product(FOREGROUND_GRID, CENTRE_GRID, SEED_DISTANCE_GRID_UM, MIN_AREA_GRID_UM2)
    for fg, centre, seed_distance, min_area in grid:
        chosen = {"foreground": fg, "centre": centre, "seed_distance_um": seed_distance, "min_area_um2": min_area}
        dets = [
            segmenter.detections(segmenter.instances(m, **chosen), s, pixel_size_um)
            for m, s in zip(maps, fov_shapes, strict=True)
        ]
        counts = evaluate_detections(dets, true_masks, distractors)
        score = f_beta(counts.precision, counts.sensitivity)
        if best is None or score > best[0]:
            best = (score, chosen, counts.summary())
    assert best is not None
    return best[1], best[2]


def select_confidence_threshold(
    probabilities: np.ndarray, y_true: np.ndarray, target_accuracy: float = 0.95, max_unidentified: float = 0.15
) -> float:
    """The lowest confidence threshold at which the cells kept reach `target_accuracy`, but never one that
    sends more than `max_unidentified` of validation cells to the "unidentified" review bin."""
    conf = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    cap = float(np.quantile(conf, max_unidentified)) if len(conf) else 0.0
    for t in np.round(np.arange(0.2, 0.96, 0.05), 2):
        kept = conf >= t
        if kept.any() and correct[kept].mean() >= target_accuracy:
            return float(min(t, cap))
    return float(min(0.5, cap))


def evaluate_cls(classifier, crops: np.ndarray, labels: Sequence[str]) -> dict:
    """Classification report over crops with true class codes (codes the model does not know are
    reported and left out)."""
    index = {c: i for i, c in enumerate(classifier.classes)}
    known = np.array([lab in index for lab in labels], bool)
    probs = classifier.classify(crops[known])
    y = np.array([index[lab] for lab, k in zip(labels, known, strict=True) if k], int)
    report = classification_report(probs, y, classifier.classes, CRITICAL_CODES, classifier.confidence_threshold)
    report["unknown_labels"] = int((~known).sum())
    return report


def evaluate_aoi(model, tiles: Sequence[np.ndarray], labels: Sequence[str], groups: Sequence[int], n: int = 50) -> dict:
    """Top-n share in {optimal, acceptable} per overview (group), pooled, plus tile accuracy."""
    probs = model.score_tiles(tiles)
    score = model.good_score(probs)
    labels = list(labels)
    groups = np.asarray(groups)
    chosen_good, chosen = 0, 0
    per_group = {}
    for g in np.unique(groups):
        idx = np.nonzero(groups == g)[0]
        share = top_n_good_share(score[idx], [labels[i] for i in idx], n, GOOD_QUALITY)
        k = min(n, len(idx))
        per_group[int(g)] = share
        chosen_good += round(share * k)
        chosen += k
    pred = [model.card.classes[i] for i in probs.argmax(axis=1)]
    classes = list(model.card.classes)
    report = classification_report(probs, np.array([classes.index(lab) for lab in labels]), classes, GOOD_QUALITY)
    return {
        "n_tiles": len(labels),
        "n_overviews": len(per_group),
        "top_n": n,
        "top_n_good_share": chosen_good / chosen if chosen else float("nan"),
        "top_n_good_share_per_overview": per_group,
        "tile_accuracy": float(np.mean([p == t for p, t in zip(pred, labels, strict=True)])) if labels else None,
        "per_class_recall": report["per_class_recall"],
        "confusion_matrix": report["confusion_matrix"],
        "classes": classes,
    }


def evaluate_seg_dataset(segmenter, data_dir, batch: int = 4) -> dict:
    """Network and colour-threshold baseline on a `make-dataset seg` folder, FOV by FOV at full resolution.

    Also the sensitivity per true cell class (cells.csv), since missing critical cells matters most, and,
    where the dataset says where each FOV was taken (fovs.csv), the counts per source: `scan_list` FOVs
    are what the pipeline analyses (the AOI step's best positions); `random` FOVs include thick and
    spoiled fields that the scanner skips, a harder stress set. Where the dataset has overlap masks (its
    `shared` folder: pixels inside two cells' whole outlines), the same counts with those pixels left out of the IoU are
    reported beside the strict ones as `network_overlaps_ignored` (ai.metrics: which cell lies on top
    there is not visible). Where it has `outlines/` (each cell's whole outline), the counts against those
    outlines (`network_whole_outlines`: the same true cells, each compared with all of its outline, as a
    person draws it) and `strict_ceiling_true_outlines`: the true outlines themselves counted strictly,
    what a model that knew every whole outline, but not which cell lies on top, scores strictly.
    Networks whose cells may overlap (`segmenter.overlapping`) are counted on each cell's own pixels.
    """
    import csv
    import time
    from pathlib import Path

    from ai.baseline import threshold_nuclei
    from ai.data import read_ids, read_manifest, read_outlines, read_rgb
    from ai.metrics import found_cells, label_masks, overlap_tables
    from ai.star import cell_masks

    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir, "seg")
    px = float(manifest.get("pixel_size_um") or segmenter.source_pixel_size_um)
    files = sorted(p.name for p in (data_dir / "images").glob("*.png"))
    cell_class: dict[tuple[str, int], str] = {}
    if (data_dir / "cells.csv").exists():
        with (data_dir / "cells.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                cell_class[(row["file"], int(row["instance_id"]))] = row["class"]
    source: dict[str, str] = {}
    if (data_dir / "fovs.csv").exists():
        with (data_dir / "fovs.csv").open(newline="") as f:
            source = {row["file"]: row["source"] for row in csv.DictReader(f)}
    by_source: dict[str, DetectionCounts] = {}
    lenient: dict[str, DetectionCounts] = {}  # overlaps ignored: "all" and per source
    outlines: dict[str, DetectionCounts] = {}  # truth = each cell's whole outline: "all" and per source
    ceiling: dict[str, DetectionCounts] = {}  # the true whole outlines as predictions, counted strictly
    net, base = DetectionCounts(), DetectionCounts()
    per_class: dict[str, list[int]] = {}
    per_class_whole: dict[str, list[int]] = {}
    seconds = 0.0
    for i in range(0, len(files), batch):
        names = files[i : i + batch]
        images = [read_rgb(data_dir / "images" / n) for n in names]
        t = time.perf_counter()
        dets = segmenter.segment(images, px)
        seconds += time.perf_counter() - t
        for name, image, det in zip(names, images, dets, strict=True):
            truth = read_ids(data_dir / "masks" / name)
            dpath = data_dir / "distractors" / name
            dis = read_ids(dpath) if dpath.exists() else None
            min_true = MIN_TRUE_AREA_UM2 / px**2
            if segmenter.overlapping:  # predicted cells may share pixels: no label image can hold them
                preds = det.masks()
                tables = overlap_tables(truth, preds, dis, min_true_area=min_true)
                counts, found = tables.counts(), tables.found()
            else:
                pred = det.label_image()
                preds = label_masks(pred)
                counts = detection_counts(truth, pred, dis, min_true_area=min_true)
                found = found_cells(truth, preds)
                spath = data_dir / "shared" / name
                if spath.exists():
                    loose = detection_counts(truth, pred, dis, min_true_area=min_true, ambiguous=read_ids(spath) > 0)
                    for key in ("all", source.get(name)):
                        if key:
                            lenient[key] = lenient.get(key, DetectionCounts()) + loose
            net = net + counts
            if name in source:
                by_source[source[name]] = by_source.get(source[name], DetectionCounts()) + counts
            evaluable = np.bincount(truth.ravel(), minlength=int(truth.max(initial=0)) + 1)[1:] >= min_true
            _tally(per_class, name, cell_class, evaluable, found)
            opath = data_dir / "outlines" / name.replace(".png", ".npz")
            if opath.exists():
                layers = read_outlines(opath)
                whole_tables = overlap_tables(layers, preds, dis, min_true_area=min_true, visible=truth)
                whole = whole_tables.counts()
                _tally(per_class_whole, name, cell_class, evaluable, whole_tables.found())
                # the truth's own whole outlines, counted strictly: what the visible-mask truth allows a
                # model that knew every outline exactly but not which cell lies on top
                perfect = overlapping_counts(truth, list(cell_masks(layers).values()), dis, min_true_area=min_true)
                for key in ("all", source.get(name)):
                    if key:
                        outlines[key] = outlines.get(key, DetectionCounts()) + whole
                        ceiling[key] = ceiling.get(key, DetectionCounts()) + perfect
            base_pred = threshold_nuclei(image, px).label_image()
            base = base + detection_counts(truth, base_pred, dis, min_true_area=min_true)
    return {
        "n_fovs": len(files),
        "pixel_size_um": px,
        "min_true_area_um2": MIN_TRUE_AREA_UM2,
        "network": net.summary(),
        "network_by_fov_source": {k: v.summary() for k, v in sorted(by_source.items())},
        **({"network_whole_outlines": {k: v.summary() for k, v in sorted(outlines.items())}} if outlines else {}),
        **({"strict_ceiling_true_outlines": {k: v.summary() for k, v in sorted(ceiling.items())}} if ceiling else {}),
        **({"network_overlaps_ignored": {k: v.summary() for k, v in sorted(lenient.items())}} if lenient else {}),
        "baseline_colour_threshold": base.summary(),
        "sensitivity_per_class": _rates(per_class),
        **({"sensitivity_per_class_whole_outlines": _rates(per_class_whole)} if per_class_whole else {}),
        "seconds_per_fov_segmentation": seconds / max(1, len(files)),
        "thresholds": segmenter.card.thresholds,
        "model": {"arch": segmenter.card.arch, "sha256": segmenter.card.weights_sha256},
    }


def _rates(per_class: dict[str, list[int]]) -> dict[str, float]:
    return {c: h[0] / h[1] for c, h in sorted(per_class.items())}


def _tally(per_class: dict[str, list[int]], name: str, cell_class: dict, evaluable: np.ndarray, found: set) -> None:
    """Add one FOV's evaluable true cells (ids 1..n) and how many were found to the per-class counts."""
    for tid in np.flatnonzero(evaluable) + 1:
        hit = per_class.setdefault(cell_class.get((name, int(tid)), "?"), [0, 0])
        hit[0] += int(tid) in found
        hit[1] += 1
