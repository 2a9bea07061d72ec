"""Small texture and shape helpers shared by the painters (value noise, noisy outlines, soft masks).

Everything works on local patches (one object's bounding box), so a FOV costs a few hundred small
numpy/cv2 calls rather than full-frame operations per object.
"""

from __future__ import annotations

import cv2
import numpy as np


def value_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Smooth noise with features about `scale_px` across, zero mean and unit-ish amplitude (float32)."""
    h, w = shape
    gh = max(2, int(np.ceil(h / max(scale_px, 1.0))) + 2)
    gw = max(2, int(np.ceil(w / max(scale_px, 1.0))) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * scale_px), int(gh * scale_px)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, big.shape[0] - h + 1)))
    ox = int(rng.integers(0, max(1, big.shape[1] - w + 1)))
    out = big[oy : oy + h, ox : ox + w]
    if out.shape != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float, octaves: int = 3) -> np.ndarray:
    """Sum of value-noise octaves (halving scale, halving amplitude), normalised to about unit std."""
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for i in range(octaves):
        out += amp * value_noise(rng, shape, max(1.5, scale_px / (2**i)))
        total += amp * amp
        amp *= 0.5
    return out / np.float32(np.sqrt(total))


def outline(
    rng: np.random.Generator,
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle: float = 0.0,
    roughness: float = 0.05,
    n: int = 64,
    harmonics: int = 5,
) -> np.ndarray:
    """A closed, slightly irregular ellipse as an (n, 2) int32 polygon (cells are never perfect circles)."""
    theta = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 2 + harmonics):
        r += roughness / (k - 1) * rng.standard_normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    x = radii[0] * r * np.cos(theta)
    y = radii[1] * r * np.sin(theta)
    ca, sa = np.cos(angle), np.sin(angle)
    pts = np.stack([centre[0] + ca * x - sa * y, centre[1] + sa * x + ca * y], axis=1)
    return np.round(pts * 4).astype(np.int32)  # 2 fractional bits for cv2's shift argument


def fill(mask: np.ndarray, poly: np.ndarray, value: int = 255) -> None:
    """Anti-aliased polygon fill on a uint8 mask (polygon from `outline`, 2 fractional bits)."""
    cv2.fillPoly(mask, [poly], value, lineType=cv2.LINE_AA, shift=2)


def soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 mask → float32 0..1 with a blurred edge `sigma` px wide (stained edges are never hard)."""
    f = mask.astype(np.float32) / 255.0
    if sigma > 0.3:
        f = cv2.GaussianBlur(f, (0, 0), sigma)
    return f


def dots(
    rng: np.random.Generator,
    shape: tuple[int, int],
    where: np.ndarray,
    count: int,
    radius: tuple[float, float],
) -> np.ndarray:
    """`count` round granules of random radius placed where `where` > 0.5; returns a uint8 mask."""
    out = np.zeros(shape, np.uint8)
    ys, xs = np.nonzero(where > 0.5)
    if len(xs) == 0 or count <= 0:
        return out
    idx = rng.integers(0, len(xs), count)
    rads = rng.uniform(radius[0], radius[1], count)
    for x, y, r in zip(xs[idx], ys[idx], rads, strict=True):
        cv2.circle(out, (int(x) * 4 + 2, int(y) * 4 + 2), max(1, int(r * 4)), 255, -1, cv2.LINE_AA, shift=2)
    return out
