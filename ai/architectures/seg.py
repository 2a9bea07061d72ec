"""Cell segmentation networks: two sigmoid channels, nucleated-cell foreground and cell centre.

The centre channel (each cell's inner core) gives the watershed one seed per cell, which splits
touching cells far more reliably than distance-transform peaks on a merged foreground.
"""

from __future__ import annotations

N_OUTPUTS = 2  # foreground, centre


def _wrap(base, name: str, scale: float = 1.0 / 255, offset: float = 0.0):
    import tf_keras as keras
    from tf_keras import layers

    inp = keras.Input((None, None, 3))
    out = base(layers.Rescaling(scale, offset=offset)(inp))
    return keras.Model(inp, out, name=name)


def _sm():
    """segmentation_models announces its framework on stdout at import, which would corrupt `--json`."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import segmentation_models as sm
    return sm


def unet16(weights: str | None = None, input_size: int | None = None):
    """The paper architecture: UNet with a VGG16 encoder (TernausNet-style), segmentation_models.

    `weights='imagenet'` loads the ImageNet encoder where it can be downloaded; 23.75 M parameters.
    Inputs must be multiples of 32 px.
    """
    sm = _sm()
    base = sm.Unet(
        "vgg16", encoder_weights=weights, classes=N_OUTPUTS, activation="sigmoid", input_shape=(None, None, 3)
    )
    return _wrap(base, "seg_unet16")


def sm_unet_mobilenetv2(weights: str | None = None, input_size: int | None = None):
    """segmentation_models UNet with a MobileNetV2 encoder (8 M parameters), a middle ground."""
    sm = _sm()
    base = sm.Unet(
        "mobilenetv2", encoder_weights=weights, classes=N_OUTPUTS, activation="sigmoid", input_shape=(None, None, 3)
    )
    return _wrap(base, "seg_mobilenetv2")


def compact_unet(width: int = 12, depth: int = 4, weights: str | None = None, input_size: int | None = None):
    """A small UNet (width, 2w, 4w, 8w, 16w at depth 4), fully convolutional; ~0.3 M parameters at width 12.

    Sized for the 2-core budget: at 1/4 resolution a 2048x1496 FOV is 512x374 px, where cells are
    25-60 px across, well inside this net's receptive field. Inputs must be multiples of 2**depth.
    """
    import tf_keras as keras
    from tf_keras import layers

    inp, x = _compact_body(width, depth)
    out = layers.Conv2D(N_OUTPUTS, 1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inp, out, name="seg_compact")


def _compact_body(width: int, depth: int):
    """The compact UNet up to its last decoder block: (input, features at full resolution, `width` deep)."""
    import tf_keras as keras
    from tf_keras import layers

    def block(x, f):
        for _ in range(2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        return x

    inp = keras.Input((None, None, 3))
    x = layers.Rescaling(1.0 / 255)(inp)
    skips = []
    for i in range(depth):
        x = block(x, width * 2**i)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = block(x, width * 2**depth)
    for i in reversed(range(depth)):
        x = layers.UpSampling2D(interpolation="bilinear")(x)
        x = layers.Concatenate()([x, skips[i]])
        x = block(x, width * 2**i)
    return inp, x


def compact_star(
    width: int = 32, depth: int = 4, rays: int = 32, weights: str | None = None, input_size: int | None = None
):
    """The compact UNet with a star-convex cell head (`ai.star`): channel 0 the cell-centre probability,
    channels 1..rays the log distances from a cell's centre to its whole outline along `rays` directions.

    Overlapping cells each keep their whole outline (a label image cannot); the same body as
    `compact_unet`, so the GPU script's torch replica serves both.
    """
    import tf_keras as keras
    from tf_keras import layers

    inp, x = _compact_body(width, depth)
    raw = layers.Conv2D(1 + rays, 1, dtype="float32")(x)
    out = layers.Lambda(_star_activation, dtype="float32", name="star_head")(raw)
    return keras.Model(inp, out, name="seg_compact_star")


def _star_activation(raw):
    import tensorflow as tf

    return tf.concat([tf.sigmoid(raw[..., :1]), raw[..., 1:]], axis=-1)
