"""Augmentation that covers the differences between microscopes, stains and cameras (numpy/OpenCV).

Geometric changes (flips, 90° rotations, scale) are applied to the targets too; photometric ones
(stain jitter in optical-density space, HSV, brightness/contrast/gamma, blur, noise, JPEG) only to the
image. Stain jitter works on optical density because May-Grünwald-Giemsa dyes mix by Beer-Lambert
absorbance: mixing OD channels imitates a different stain batch or staining time, which RGB scaling cannot.
"""

from __future__ import annotations

import cv2
import numpy as np


def geometric(rng: np.random.Generator, image: np.ndarray, *targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Random flip and 90° rotation, identical for the image and its targets."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    return turn(image, *targets, k=k, flip=flip)


def turn(*arrays: np.ndarray, k: int, flip: bool) -> tuple[np.ndarray, ...]:
    """`np.rot90(·, k)`, then a left-right flip when `flip`."""
    out = []
    for a in arrays:
        a = np.rot90(a, k)
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return tuple(out)


def rescale(
    rng: np.random.Generator, image: np.ndarray, *targets: np.ndarray, jitter: float = 0.15
) -> tuple[np.ndarray, ...]:
    """Scale jitter: a different objective or camera pixel size (targets resized by nearest neighbour)."""
    return resize_by(scale_factor(rng, jitter), image, *targets)


def scale_factor(rng: np.random.Generator, jitter: float = 0.15) -> float:
    return float(np.exp(rng.uniform(np.log(1 - jitter), np.log(1 + jitter))))


def resize_by(f: float, image: np.ndarray, *targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """The image (linear) and its targets (nearest) resized by `f`."""
    h, w = image.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    out = [cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)]
    out += [cv2.resize(t, size, interpolation=cv2.INTER_NEAREST) for t in targets]
    return tuple(out)


def stain_jitter(rng: np.random.Generator, image: np.ndarray, strength: float = 0.08) -> np.ndarray:
    od = -np.log((image.astype(np.float32) + 1.0) / 256.0)
    mix = np.eye(3, dtype=np.float32) + rng.normal(0, strength * 0.5, (3, 3)).astype(np.float32)
    mix *= rng.uniform(1 - 2 * strength, 1 + 2 * strength, 3).astype(np.float32)[None, :]
    od = od @ mix
    return np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)


def hsv_jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
    hsv[..., 1] *= rng.uniform(0.8, 1.25)
    hsv[..., 2] *= rng.uniform(0.9, 1.1)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def photometric(rng: np.random.Generator, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Stain, colour, illumination and camera changes on a uint8 RGB image."""
    if rng.random() < 0.8:
        image = stain_jitter(rng, image, 0.08 * strength)
    if rng.random() < 0.5:
        image = hsv_jitter(rng, image)
    x = image.astype(np.float32)
    if rng.random() < 0.8:
        contrast = rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength)
        x = (x - x.mean()) * contrast + x.mean() + rng.uniform(-20, 20) * strength
        x *= rng.uniform(0.92, 1.08, 3)[None, None, :]  # white balance
    if rng.random() < 0.3:
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.2 * strength + 0.01))
    if rng.random() < 0.4:
        x += rng.normal(0, rng.uniform(1, 6 * strength + 0.01), x.shape).astype(np.float32)
    image = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        quality = int(rng.integers(40, 95))
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return image


def pad_to(crop: int, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pad a FOV smaller than the crop at its bottom/right: the image by reflection, its target with zeros
    (poles, which index the top-left, need no move)."""
    h, w = image.shape[:2]
    if h >= crop and w >= crop:
        return image, target
    dy, dx = max(0, crop - h), max(0, crop - w)
    image = cv2.copyMakeBorder(image, 0, dy, 0, dx, cv2.BORDER_REFLECT_101)
    return image, cv2.copyMakeBorder(target, 0, dy, 0, dx, cv2.BORDER_CONSTANT, value=0)


def segmentation_crop(
    rng: np.random.Generator, image: np.ndarray, target: np.ndarray, crop: int, augment: bool = True, hard: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """One square training crop of a FOV at working scale and its (foreground, centre) targets.

    Scale jitter (half of the time), a random window (reflect-padded where the FOV is smaller), then flips,
    rotations and the photometric changes. With probability `hard` the window is centred near a pixel
    where two cells meet (the target's optional third channel), where the network has most to learn;
    only the first two target channels are returned.
    """
    if augment and rng.random() < 0.5:
        image, target = rescale(rng, image, target, jitter=0.15)
    image, target = pad_to(crop, image, target)
    h, w = image.shape[:2]
    y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    if hard and target.ndim == 3 and target.shape[-1] > 2 and rng.random() < hard:
        ys, xs = np.nonzero(target[..., 2])
        if len(ys):
            k = int(rng.integers(len(ys)))
            y = int(np.clip(ys[k] - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, h - crop))
            x = int(np.clip(xs[k] - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, w - crop))
    image, target = image[y : y + crop, x : x + crop], target[y : y + crop, x : x + crop, :2]
    if augment:
        image, target = geometric(rng, image, target)
        image = photometric(rng, image)
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def star_crop(
    rng: np.random.Generator, image: np.ndarray, centre: np.ndarray, poles: np.ndarray, crop: int, augment: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop for a star-convex cell network (`ai.star`): the image and its (crop, crop, 2 + R)
    float32 target (centre map, ray weight, log ray lengths). The same scale jitter, window, flips,
    rotations and photometric changes as `segmentation_crop`; the sparse poles are moved exactly."""
    from ai.star import move_poles, pole_maps

    f = 1.0
    if augment and rng.random() < 0.5:
        f = scale_factor(rng, 0.15)
        image, centre = resize_by(f, image, centre)
    image, centre = pad_to(crop, image, centre)
    h, w = image.shape[:2]
    y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    image, centre = image[y : y + crop, x : x + crop], centre[y : y + crop, x : x + crop]
    k, flip = (int(rng.integers(4)), bool(rng.integers(2))) if augment else (0, False)
    image, centre = turn(image, centre, k=k, flip=flip)
    moved = move_poles(poles, scale=f, offset=(y, x), size=crop, k=k, flip=flip)
    if augment:
        image = photometric(rng, image)
    target = np.concatenate([centre[..., None].astype(np.float32), pole_maps(moved, (crop, crop))], axis=-1)
    return np.ascontiguousarray(image), target
