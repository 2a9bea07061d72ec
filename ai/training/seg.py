"""Segmentation training: random crops at working scale, recall-weighted loss, then the foreground
threshold and minimum cell area chosen on validation FOVs at cell level (F-beta, beta^2 = 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ai.models import ModelCard
from ai.training.common import callbacks, finish, init_weights, training_info


def train_seg(data_dir: Path, arch: str, out: Path, opts) -> ModelCard:
    import tf_keras as keras

    from ai.architectures import build
    from ai.data import load_seg, split_by_seed
    from ai.inference import CellSegmenter
    from ai.star import is_star_arch
    from ai.training.losses import foreground_recall, segmentation_loss, star_loss
    from ai.training.sequences import SegmentationCrops, StarCrops

    star = is_star_arch(arch)
    data = load_seg(data_dir, opts.seg_scale, star=star)
    train_idx, val_idx = split_by_seed(data.seeds, opts.val_fraction)
    if not len(val_idx):
        val_idx = train_idx[-1:]
    params = {**(opts.arch_params or {})}
    model = build("seg", arch, weights=opts.weights, **params)
    init_weights(model, opts)
    model.compile(optimizer=keras.optimizers.Adam(opts.learning_rate), loss=star_loss if star else segmentation_loss,
                  metrics=[] if star else [foreground_recall])  # fmt: skip
    steps = opts.steps_per_epoch or max(1, 4 * len(train_idx) // opts.batch_size)
    crops = StarCrops if star else SegmentationCrops
    seq = crops([data.images[i] for i in train_idx], [data.targets[i] for i in train_idx],
                opts.batch_size, steps, opts.input_size, seed=opts.seed)  # fmt: skip
    val = crops([data.images[i] for i in val_idx], [data.targets[i] for i in val_idx],
                opts.batch_size, max(1, len(val_idx) // max(1, opts.batch_size // 2)),
                opts.input_size, seed=opts.seed + 1, augment_images=False)  # fmt: skip
    val_fixed = [val[i] for i in range(len(val))]  # the same validation crops every epoch
    val_x = np.concatenate([v[0] for v in val_fixed])
    val_y = np.concatenate([v[1] for v in val_fixed])

    hist = model.fit(seq, validation_data=(val_x, val_y), epochs=opts.epochs, verbose=opts.verbose, workers=2,
                     callbacks=callbacks(out, opts.patience, "val_loss", "min"))  # fmt: skip

    source_px = float(data.manifest.get("pixel_size_um") or 0.086)
    card = ModelCard(
        kind="seg", arch=arch, classes=["nucleated_cell"], input_size=opts.input_size,
        pixel_size_um=source_px / opts.seg_scale, arch_params=params,
        thresholds={"centre": 0.5, "seed_distance_um": 1.0, "nms_iou": 0.5, "min_area_um2": 12.0, "tile": 512} if star
        else {"foreground": 0.5, "centre": 0.3, "seed_distance_um": 2.0, "min_area_um2": 12.0, "tile": 512},
        training=training_info(data_dir, data.manifest, opts, len(train_idx), len(val_idx),
                                source_pixel_size_um=source_px, scale=opts.seg_scale),
    )  # fmt: skip
    choose_thresholds(CellSegmenter(model, card), data_dir, [data.images[i] for i in val_idx],
                      [data.files[i] for i in val_idx])  # fmt: skip
    finish(model, {k: [float(v) for v in vals] for k, vals in hist.history.items()}, card, out)
    return card


def choose_thresholds(segmenter, data_dir: Path, images: list[np.ndarray], files: list[str]) -> None:
    """Set the card's thresholds by cell-level F-beta on validation FOVs (images at working scale)."""
    from ai.data import read_ids, read_outlines
    from ai.evaluation import select_seg_thresholds, select_star_thresholds
    from ai.inference import predict_maps

    card = segmenter.card
    maps = predict_maps(segmenter.model, images, 512, 48, multiple=32)
    truth = [read_ids(data_dir / "masks" / f) for f in files]
    distractors = []
    for f in files:
        path = data_dir / "distractors" / f
        distractors.append(read_ids(path) if path.exists() else None)
    source_px = float(card.training.get("source_pixel_size_um", 0.086))
    shapes = [t.shape for t in truth]
    rule = "max F-beta (beta^2=5) on validation FOVs"
    if segmenter.overlapping:
        outlines = [read_outlines(data_dir / "outlines" / f.replace(".png", ".npz")) for f in files]
        chosen, metrics = select_star_thresholds(segmenter, maps, shapes, source_px, truth, distractors, outlines)
        rule += ", truth = whole cell outlines"
    else:
        chosen, metrics = select_seg_thresholds(segmenter, maps, shapes, source_px, truth, distractors)
    card.thresholds.update(chosen)
    card.metrics = {"validation": metrics, "threshold_rule": rule}


def reselect_thresholds(model_dir: Path | str, data_dir: Path | str, val_fraction: float = 0.1) -> ModelCard:
    """Choose a trained model's thresholds again (after a post-processing change) on the same
    validation seeds; rewrites only the card (the weights and their sha256 are unchanged)."""
    from ai.data import load_seg, split_by_seed
    from ai.inference import CellSegmenter

    segmenter = CellSegmenter.load(model_dir)
    scale = float(segmenter.card.training.get("scale", 0.25))
    data = load_seg(Path(data_dir), scale)
    _, val_idx = split_by_seed(data.seeds, val_fraction)
    choose_thresholds(segmenter, Path(data_dir), [data.images[i] for i in val_idx], [data.files[i] for i in val_idx])
    segmenter.card.save(Path(model_dir))
    return segmenter.card
