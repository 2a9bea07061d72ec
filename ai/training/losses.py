"""Losses. Segmentation weights recall 5:1 over precision (the seed's choice): missing a nucleated cell
costs a reviewer more than deleting a false one."""

from __future__ import annotations

RECALL_WEIGHT = 5.0


def tversky(y_true, y_pred, fn_weight: float = RECALL_WEIGHT / (1 + RECALL_WEIGHT), smooth: float = 1.0):
    """1 - Tversky index with false negatives weighted `fn_weight` and false positives 1 - fn_weight
    (5/6 vs 1/6: recall counts five times as much as precision)."""
    import tensorflow as tf

    tp = tf.reduce_sum(y_true * y_pred)
    fn = tf.reduce_sum(y_true * (1 - y_pred))
    fp = tf.reduce_sum((1 - y_true) * y_pred)
    return 1 - (tp + smooth) / (tp + fn_weight * fn + (1 - fn_weight) * fp + smooth)


def dice(y_true, y_pred, smooth: float = 1.0):
    return tversky(y_true, y_pred, fn_weight=0.5, smooth=smooth)


RIM_WEIGHT = 4.0  # extra weight of the centre channel on cell rims, where touching cells must part


def segmentation_loss(y_true, y_pred):
    """Foreground: recall-weighted Tversky + BCE; centre (soft distance ramp, watershed seeds): Dice + BCE
    weighted up on cell rims.

    Most missed cells were merged with a neighbour (error analysis on held-out FOVs: 20 % of true cells
    merged, 8 % split, 4 % not found): the centre ramp must dip to zero where two cells touch, and those
    few pixels were drowned by the cells' interiors in an unweighted mean (the U-Net paper's border
    weighting, in its simplest form).
    """
    import tensorflow as tf

    y_true = tf.cast(y_true, y_pred.dtype)
    bce = tf.keras.backend.binary_crossentropy
    fg_t, fg_p = y_true[..., 0], y_pred[..., 0]
    c_t, c_p = y_true[..., 1], y_pred[..., 1]
    fg = tversky(fg_t, fg_p) + tf.reduce_mean(bce(fg_t, fg_p))
    rim = tf.cast(fg_t > 0.5, y_pred.dtype) * tf.cast(c_t < 0.3, y_pred.dtype)
    weights = 1.0 + RIM_WEIGHT * rim
    centre_bce = tf.reduce_sum(weights * bce(c_t, c_p))
    centre = dice(c_t, c_p) + centre_bce / tf.reduce_sum(weights)
    return fg + 2.0 * centre  # the seeds decide cell counts: weigh them above pixel foreground


def foreground_recall(y_true, y_pred):
    """Pixel recall of the foreground channel at 0.5, a cheap progress signal during training."""
    import tensorflow as tf

    t = tf.cast(y_true[..., 0] > 0.5, tf.float32)
    p = tf.cast(y_pred[..., 0] > 0.5, tf.float32)
    return tf.reduce_sum(t * p) / (tf.reduce_sum(t) + 1e-6)


RAY_WEIGHT = 1.0  # log ray-length L1 against the centre terms (0.1 = a tenth of the radius)


def star_loss(y_true, y_pred):
    """Star-convex cells (`ai.star`): the centre map by BCE against its soft ramp, and the L1 error of the
    log ray lengths on the pole discs (target channel 1 is their weight, channels 2.. the lengths).

    Only BCE for the centre: its optimum is the ramp itself, so each cell keeps its own peak. A
    recall-weighted Tversky term (used up to the 2026-11-26 model) is lowest at 1 wherever the ramp
    exceeds 1/6 (false negatives cost 5/6 · t, false positives 1/6 · (1 - t)): it flattened the map into
    plateaus over each cell's inner half, and a cell lying mostly on another lost its own maximum.
    Recall comes first where it can be traded: in the thresholds chosen by F-beta."""
    import tensorflow as tf

    y_true = tf.cast(y_true, y_pred.dtype)
    c_t, c_p = y_true[..., 0], y_pred[..., 0]
    weight = y_true[..., 1]
    centre = tf.reduce_mean(tf.keras.backend.binary_crossentropy(c_t, c_p))
    ray_error = tf.reduce_mean(tf.abs(y_pred[..., 1:] - y_true[..., 2:]), axis=-1)
    rays = tf.reduce_sum(weight * ray_error) / (tf.reduce_sum(weight) + 1e-6)
    return centre + RAY_WEIGHT * rays
