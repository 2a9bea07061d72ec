"""Keras Sequences that sample and augment uint8 arrays held in memory."""

from __future__ import annotations

import cv2
import numpy as np
import tf_keras as keras

from ai import augment


class BalancedImages(keras.utils.Sequence):
    """Class-balanced sampling (each class equally likely, then a random example of it), augmented.

    Balanced sampling rather than loss weights: the reported metric is the median per-class recall,
    and rare critical classes (APL, HAC) need to be seen often, under many augmentations.
    """

    def __init__(self, images, labels, n_classes, batch_size, steps, seed=0, augment_images=True, balance=True):
        super().__init__()
        self.images, self.labels, self.n_classes = images, labels, n_classes
        self.batch_size, self.steps, self.augment_images = batch_size, steps, augment_images
        self.rng = np.random.default_rng(seed)
        self.by_class = [np.nonzero(labels == c)[0] for c in range(n_classes)]
        self.present = [c for c in range(n_classes) if len(self.by_class[c])]
        self.balance = balance

    def __len__(self) -> int:
        return self.steps

    def _pick(self) -> int:
        if self.balance:
            members = self.by_class[self.present[int(self.rng.integers(len(self.present)))]]
            return int(members[self.rng.integers(len(members))])
        return int(self.rng.integers(len(self.labels)))

    def __getitem__(self, _):
        idx = [self._pick() for _ in range(self.batch_size)]
        x = np.stack([self._augment(self.images[i]) for i in idx]).astype(np.float32)
        y = keras.utils.to_categorical(self.labels[idx], self.n_classes)
        return x, y

    def _augment(self, image: np.ndarray) -> np.ndarray:
        if not self.augment_images:
            return image
        (image,) = augment.geometric(self.rng, image)
        s = image.shape[0]
        if self.rng.random() < 0.5:
            (scaled,) = augment.rescale(self.rng, image, jitter=0.12)
            image = _fit(scaled, s)
        if self.rng.random() < 0.5:  # the segmenter's bbox centre is not the painted cell centre
            dx, dy = self.rng.integers(-s // 16, s // 16 + 1, 2)
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            image = cv2.warpAffine(image, m, (s, s), borderMode=cv2.BORDER_REFLECT_101)
        return augment.photometric(self.rng, image)


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or reflect-pad to size x size (keeps the cell centred after scale jitter)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        dy, dx = max(0, size - h), max(0, size - w)
        image = cv2.copyMakeBorder(image, dy // 2, dy - dy // 2, dx // 2, dx - dx // 2, cv2.BORDER_REFLECT_101)
        h, w = image.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return image[y : y + size, x : x + size]


class SegmentationCrops(keras.utils.Sequence):
    """Random square crops of FOVs at working scale with their (foreground, centre) targets, augmented."""

    def __init__(self, images, targets, batch_size, steps, crop, seed=0, augment_images=True):
        super().__init__()
        self.images, self.targets = images, targets
        self.batch_size, self.steps, self.crop, self.augment_images = batch_size, steps, crop, augment_images
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, _):
        xs, ys = [], []
        for _ in range(self.batch_size):
            k = int(self.rng.integers(len(self.images)))
            image, target = augment.segmentation_crop(self.rng, self.images[k], self.targets[k], self.crop,
                                                      self.augment_images)  # fmt: skip
            xs.append(image)
            ys.append(target)
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32) / 255.0


class StarCrops(SegmentationCrops):
    """Random square crops for star-convex cell networks (`ai.star`): targets are (centre map, poles) per
    FOV and come out as float (centre, ray weight, log ray lengths) channels."""

    def __getitem__(self, _):
        xs, ys = [], []
        for _ in range(self.batch_size):
            k = int(self.rng.integers(len(self.images)))
            image, target = augment.star_crop(
                self.rng, self.images[k], *self.targets[k], self.crop, self.augment_images
            )
            xs.append(image)
            ys.append(target)
        return np.stack(xs).astype(np.float32), np.stack(ys)
