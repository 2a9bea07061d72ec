"""Evaluation metrics, pure numpy, so they can be tested on hand-made cases and used without TensorFlow.

Definitions (also in docs/ai.md):
- A true cell is *found* when a predicted cell matches it with IoU >= 0.5, one-to-one (greedy by IoU).
- sensitivity = found / true cells; precision = matched predictions / predictions.
- A distractor (red cell, platelet, debris) is *reported* when some predicted cell has IoU >= 0.5 with it,
  or an *unmatched* predicted cell (one that found no true cell) covers >= 50 % of the distractor's area.
  A correctly found nucleated cell that happens to lie on top of a red cell therefore does not count
  against specificity. specificity = distractors not reported / all distractors.
- F-beta weights recall beta^2 = 5 times as much as precision (the seed's 5:1).
- True cells with a visible area below a minimum (default 15 µm², a third of the smallest nucleated
  cell: slivers cut by the FOV border or hidden under other cells) are ignore regions; the sensitivity
  over all cells is reported beside it as `sensitivity_all`.
- Optionally (`ambiguous`), pixels that lie inside two cells' whole outlines are left out of the IoU: stain
  densities add where cells overlap, so the image cannot show which cell lies on top there, and the
  visible-mask truth gives those pixels to one cell by painting order alone. Reported beside the strict
  counts, never instead of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

RECALL_WEIGHT = 5.0  # beta^2


def overlap_table(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise intersections of the instances in two label images (0 = background).

    Returns (ids_a, ids_b, intersection[len(a), len(b)], area_a, area_b).
    """
    if a.shape != b.shape:
        raise ValueError(f"label images differ in shape: {a.shape} vs {b.shape}")
    ids_a = np.unique(a[a > 0])
    ids_b = np.unique(b[b > 0])
    idx_a = np.searchsorted(ids_a, a.ravel())
    idx_b = np.searchsorted(ids_b, b.ravel())
    both = (a.ravel() > 0) & (b.ravel() > 0)
    inter = np.zeros((len(ids_a), len(ids_b)), np.int64)
    if both.any():
        np.add.at(inter, (idx_a[both], idx_b[both]), 1)
    area_a = np.bincount(idx_a[a.ravel() > 0], minlength=len(ids_a)) if len(ids_a) else np.zeros(0, np.int64)
    area_b = np.bincount(idx_b[b.ravel() > 0], minlength=len(ids_b)) if len(ids_b) else np.zeros(0, np.int64)
    return ids_a, ids_b, inter, area_a, area_b


def match_instances(iou: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matches (row, col) with IoU >= threshold, greedily from the highest IoU."""
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


def _iou(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


@dataclass
class DetectionCounts:
    """Cell-level counts over one or many FOVs; add them up, then read the rates."""

    true_cells: int = 0
    found: int = 0
    predicted: int = 0
    matched_predictions: int = 0
    distractors: int = 0
    distractors_reported: int = 0
    small_true_cells: int = 0  # visible area below the evaluable minimum: ignore regions
    small_found: int = 0

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(*(x + y for x, y in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    @property
    def sensitivity(self) -> float:
        return self.found / self.true_cells if self.true_cells else float("nan")

    @property
    def sensitivity_all(self) -> float:
        """Sensitivity counting the slivers too (cells almost entirely cut off or covered)."""
        n = self.true_cells + self.small_true_cells
        return (self.found + self.small_found) / n if n else float("nan")

    @property
    def specificity(self) -> float:
        return 1.0 - self.distractors_reported / self.distractors if self.distractors else float("nan")

    @property
    def precision(self) -> float:
        return self.matched_predictions / self.predicted if self.predicted else float("nan")

    @property
    def f_beta(self) -> float:
        return f_beta(self.precision, self.sensitivity)

    def summary(self) -> dict:
        return {
            **asdict(self),
            "sensitivity": self.sensitivity,
            "sensitivity_all": self.sensitivity_all,
            "specificity": self.specificity,
            "precision": self.precision,
            "f_beta": self.f_beta,
            "beta_squared": RECALL_WEIGHT,
        }


def f_beta(precision: float, recall: float, beta_squared: float = RECALL_WEIGHT) -> float:
    if not precision or not recall or np.isnan(precision) or np.isnan(recall):
        return 0.0
    return (1 + beta_squared) * precision * recall / (beta_squared * precision + recall)


def detection_counts(
    true_labels: np.ndarray,
    pred_labels: np.ndarray,
    distractors: np.ndarray | None = None,
    iou: float = 0.5,
    min_true_area: float = 0.0,
    ambiguous: np.ndarray | None = None,
) -> DetectionCounts:
    """Cell-level counts for one FOV from instance-id images of the same shape (0 = background).

    True cells whose visible area is below `min_true_area` pixels (slivers cut by the FOV border or
    hidden under other cells) are ignore regions: they count neither as true cells nor, when a prediction
    matches one, as false positives; `sensitivity_all` reports them anyway. `ambiguous` (bool, same shape):
    pixels left out of every IoU (module docstring); which cells are slivers is still decided on the whole
    visible area.
    """
    ids_t, ids_p, inter, area_t, area_p = overlap_table(true_labels, pred_labels)
    ious = _iou(inter, area_t, area_p)
    if ambiguous is not None:
        ious = _iou_outside(true_labels, pred_labels, ambiguous, ids_t, ids_p, ious)
    counts, pairs = _count(ious, area_t < min_true_area, len(ids_p), iou)
    if distractors is not None:
        _, _, inter_d, area_d, area_p2 = overlap_table(distractors, pred_labels)
        _count_distractors(counts, pairs, inter_d, area_d, area_p2, iou)
    return counts


def _count(ious: np.ndarray, small: np.ndarray, n_pred: int, iou: float) -> tuple[DetectionCounts, list]:
    pairs = match_instances(ious, iou)
    small_found = sum(1 for r, _ in pairs if small[r])
    found = len(pairs) - small_found
    counts = DetectionCounts(
        true_cells=int((~small).sum()),
        found=found,
        predicted=n_pred - small_found,
        matched_predictions=found,
        small_true_cells=int(small.sum()),
        small_found=small_found,
    )
    return counts, pairs


def _count_distractors(counts: DetectionCounts, pairs, inter_d, area_d, area_p, iou: float) -> None:
    """Distractors reported (module docstring), given the cell matches (true row, predicted column) and the
    distractor intersections with the predictions."""
    counts.distractors = len(area_d)
    if len(area_d) and len(area_p):
        iou_d = _iou(inter_d, area_d, area_p)
        unmatched = np.ones(len(area_p), bool)
        unmatched[[c for _, c in pairs]] = False
        covered = (inter_d / np.maximum(area_d[:, None], 1)) >= 0.5
        reported = (iou_d >= iou).any(axis=1) | (covered & unmatched[None, :]).any(axis=1)
        counts.distractors_reported = int(reported.sum())


Mask = tuple[int, int, np.ndarray]  # x0, y0, bool mask in its bounding box


def stack_intersections(stack: np.ndarray, masks: Sequence[Mask]) -> tuple[np.ndarray, np.ndarray]:
    """Intersections (n_ids, n_masks) of the ids 1..n of a (L, h, w) stack of label images (each id in one
    layer; a single label image is one layer) with each mask, and each id's area."""
    stack = stack.reshape(-1, *stack.shape[-2:])
    n = int(stack.max(initial=0))
    area = sum(np.bincount(layer.ravel(), minlength=n + 1) for layer in stack)[1:]
    h, w = stack.shape[1:]
    inter = np.zeros((n, len(masks)), np.int64)
    for j, (x0, y0, m) in enumerate(masks):
        ys, xs = slice(max(y0, 0), min(y0 + m.shape[0], h)), slice(max(x0, 0), min(x0 + m.shape[1], w))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        inside = m[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        under = stack[:, ys, xs][:, inside].ravel()
        inter[:, j] = np.bincount(under, minlength=n + 1)[1:]
    return inter, area


def label_masks(labels: np.ndarray) -> list[Mask]:
    """The instances of an id image as (x0, y0, mask) in id order (ids without pixels left out)."""
    from scipy import ndimage as ndi

    return [
        (sl[1].start, sl[0].start, labels[sl] == i)
        for i, sl in enumerate(ndi.find_objects(labels.astype(np.int32)), start=1)
        if sl is not None
    ]


def found_cells(truth: np.ndarray, preds: Sequence[Mask], iou: float = 0.5) -> set[int]:
    """Ids of the true cells (an id image or outline layers) that some prediction matches one-to-one."""
    return overlap_tables(truth, preds).found(iou)


@dataclass
class OverlapTables:
    """One FOV's IoUs between true cells, distractors and a set of predicted cells, from which the counts
    of any subset of those predictions follow without touching the images again (threshold selection
    counts the same proposals at many thresholds)."""

    ious: np.ndarray  # (true cells, predictions)
    small: np.ndarray  # (true cells,) visible area below the evaluable minimum
    area_p: np.ndarray  # (predictions,)
    ids: np.ndarray  # (true cells,) their ids in the truth
    inter_d: np.ndarray | None = None  # (distractors, predictions); None: no distractor truth
    area_d: np.ndarray | None = None

    def counts(self, columns: Sequence[int] | None = None, iou: float = 0.5) -> DetectionCounts:
        """Counts of the predictions in `columns` (all when None), as `overlapping_counts` gives them."""
        cols = np.arange(len(self.area_p)) if columns is None else np.asarray(columns, np.intp)
        counts, pairs = _count(self.ious[:, cols], self.small, len(cols), iou)
        if self.inter_d is not None and self.area_d is not None:
            _count_distractors(counts, pairs, self.inter_d[:, cols], self.area_d, self.area_p[cols], iou)
        return counts

    def found(self, iou: float = 0.5) -> set[int]:
        """Ids of the true cells (slivers included) that some prediction matches one-to-one."""
        return {int(self.ids[r]) for r, _ in match_instances(self.ious, iou)}


def overlap_tables(
    truth: np.ndarray,
    preds: Sequence[Mask],
    distractors: np.ndarray | None = None,
    min_true_area: float = 0.0,
    visible: np.ndarray | None = None,
) -> OverlapTables:
    """The tables behind `overlapping_counts` (same arguments)."""
    inter, area_t = stack_intersections(truth, preds)
    keep = area_t > 0  # ids absent from this truth (none, for a consistent dataset)
    inter, area_t = inter[keep], area_t[keep]
    area_p = np.array([int(m.sum()) for _, _, m in preds], np.int64)
    if visible is not None:
        seen = np.bincount(visible.ravel().astype(np.int64), minlength=len(keep) + 1)[1 : len(keep) + 1][keep]
    else:
        seen = area_t
    tables = OverlapTables(
        ious=_iou(inter, area_t, area_p), small=seen < min_true_area, area_p=area_p, ids=np.flatnonzero(keep) + 1
    )
    if distractors is not None:
        inter_d, area_d = stack_intersections(distractors, preds)
        present = area_d > 0
        tables.inter_d, tables.area_d = inter_d[present], area_d[present]
    return tables


def overlapping_counts(
    truth: np.ndarray,
    preds: Sequence[Mask],
    distractors: np.ndarray | None = None,
    iou: float = 0.5,
    min_true_area: float = 0.0,
    visible: np.ndarray | None = None,
) -> DetectionCounts:
    """Cell-level counts for one FOV where predicted cells may overlap (`preds`: one pixel mask each) and the
    truth is an instance-id image or a (L, h, w) stack of outline layers (each cell's whole outline, ids
    as in the instance image). With `visible` (the instance-id image) the slivers are decided on each
    cell's visible area, as in `detection_counts`, so both truths count the same cells."""
    return overlap_tables(truth, preds, distractors, min_true_area, visible).counts(iou=iou)


def _iou_outside(true_labels, pred_labels, ambiguous, ids_t, ids_p, strict: np.ndarray) -> np.ndarray:
    """IoU over the pixels outside `ambiguous`, in the rows and columns of the strict table; a true cell
    with no pixel outside keeps its strict IoU (a small cell lying wholly on a larger one)."""
    if ambiguous.shape != true_labels.shape:
        raise ValueError(f"ambiguous mask is {ambiguous.shape}, label images {true_labels.shape}")
    keep = ~ambiguous.astype(bool)
    t_ids, p_ids, inter2, at2, ap2 = overlap_table(np.where(keep, true_labels, 0), np.where(keep, pred_labels, 0))
    rows, cols = np.searchsorted(ids_t, t_ids), np.searchsorted(ids_p, p_ids)
    inter = np.zeros(strict.shape, np.float64)
    inter[np.ix_(rows, cols)] = inter2
    area_t = np.zeros(len(ids_t), np.float64)
    area_t[rows] = at2
    area_p = np.zeros(len(ids_p), np.float64)
    area_p[cols] = ap2
    out = _iou(inter, area_t, area_p)
    hidden = area_t == 0
    out[hidden] = strict[hidden]
    return out


# ----------------------------------------------------------------------------------------------- classes
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall (the seed's 'per-class accuracy') per class; NaN for classes without examples."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def calibration(probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error of the top-class confidence and the reliability curve (per bin)."""
    conf = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    curve = []
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        acc, mean_conf = float(correct[sel].mean()), float(conf[sel].mean())
        ece += sel.mean() * abs(acc - mean_conf)
        curve.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "confidence": mean_conf,
                      "accuracy": acc, "count": int(sel.sum())})  # fmt: skip
    return float(ece), curve


def classification_report(
    probabilities: np.ndarray,
    y_true: np.ndarray,
    classes: Sequence[str],
    critical: Sequence[str],
    confidence_threshold: float = 0.0,
) -> dict:
    """Per-class recall, the median over all classes with examples and over the critical ones, ECE."""
    y_true = np.asarray(y_true, int)
    y_pred = probabilities.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    recall = per_class_recall(cm)
    crit_idx = [i for i, c in enumerate(classes) if c in set(critical)]
    ece, curve = calibration(probabilities, y_true)
    confident = probabilities.max(axis=1) >= confidence_threshold
    return {
        "n": len(y_true),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "per_class_recall": {c: (None if np.isnan(r) else float(r)) for c, r in zip(classes, recall, strict=True)},
        "median_recall": float(np.nanmedian(recall)) if np.isfinite(recall).any() else float("nan"),
        "critical_median_recall": float(np.nanmedian(recall[crit_idx]))
        if np.isfinite(recall[crit_idx]).any()
        else float("nan"),
        "unidentified_share": float(1.0 - confident.mean()) if len(y_true) else 0.0,
        "accuracy_when_confident": float((y_pred == y_true)[confident].mean()) if confident.any() else float("nan"),
        "ece": ece,
        "reliability": curve,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


# ------------------------------------------------------------------------------------------------- AOI
def top_n_good_share(good_score: np.ndarray, labels: Sequence[str], n: int, good: Sequence[str]) -> float:
    """Share of the n best-scored grid tiles whose true quality is in `good` (optimal/acceptable)."""
    order = np.argsort(-np.asarray(good_score), kind="stable")[:n]
    if not len(order):
        return float("nan")
    good_set = set(good)
    return float(np.mean([labels[i] in good_set for i in order]))
