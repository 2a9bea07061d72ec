"""AOI quality: a compact CNN over one grid tile of the 10x overview (one 40x FOV footprint)."""

from __future__ import annotations


def compact_cnn(input_size: int = 64, n_classes: int = 6, width: int = 16, weights: str | None = None):
    """Four conv blocks (width, 2w, 4w, 8w) and a softmax; ~0.1 M parameters at width 16.

    Quality is texture and density at the scale of many cells, so a small receptive field over a
    downsampled tile is enough; `weights` is accepted for a uniform signature (no ImageNet model here).
    """
    import tf_keras as keras
    from tf_keras import layers

    inp = keras.Input((input_size, input_size, 3))
    x = layers.Rescaling(1.0 / 255)(inp)
    for i in range(4):
        f = width * 2**i
        x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(n_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inp, out, name="aoi_compact")
