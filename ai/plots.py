"""Figures: training curves, confusion matrices, reliability diagrams (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curve(history: dict[str, list[float]], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    keys = [k for k in history if not k.startswith("val_") and k != "lr"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def confusion_matrix_png(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns) with the counts written in."""
    plt = _pyplot()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(0.42 * n + 2, 0.42 * n + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=5,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def reliability_png(curve: list[dict[str, float]], path: Path, ece: float) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot([b["confidence"] for b in curve], [b["accuracy"] for b in curve], "o-")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def overlay_png(image: np.ndarray, polygons: Sequence[np.ndarray], labels: Sequence[str], path: Path) -> Path:
    """The image with cell outlines and class codes drawn in (for `detect --overlay`)."""
    import cv2

    out = np.ascontiguousarray(image[..., :3][..., ::-1]).copy()
    thick = max(1, round(max(out.shape[:2]) / 700))
    for poly, label in zip(polygons, labels, strict=True):
        pts = np.round(poly).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, (0, 200, 0), thick)
        x, y = pts[:, 0, 0].min(), pts[:, 0, 1].min()
        cv2.putText(out, label, (int(x), max(10, int(y) - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick,
                    (0, 0, 0), thick)  # fmt: skip
    cv2.imwrite(str(path), out)
    return Path(path)
