"""`train(kind, data_dir, arch, epochs, out_dir)`: train a network on a `make-dataset` folder and write a
model folder (weights + model card + training curve + history).

Validation data are the dataset's last ~10 % slide seeds (never the same slide in both), used for early
stopping and for the thresholds stored in the card (segmentation foreground/min-area, classifier
confidence). Evaluation proper uses seeds that training never saw (`marrowlink evaluate`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from acquisition import CLASS_CODES, CRITICAL_CODES, QUALITY_CLASSES
from ai.models import ModelCard
from ai.training.common import TrainOptions, callbacks, finish, init_weights, training_info


def _configure_threads(threads: int | None) -> None:
    import tensorflow as tf

    n = threads or int(os.environ.get("MARROWLINK_TF_THREADS", "0")) or None
    if n:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # already initialised in this process
            pass


def _inherit_architecture(kind: str, arch: str, opts: TrainOptions) -> None:
    """A fine-tune continues the model it starts from: its kind and arch must match, and unless the caller
    names other `arch_params` (width, depth) it takes the starting model's, so that `--init ai/weights/seg`
    needs no `--width` to match the shipped network."""
    start = ModelCard.load(Path(opts.init_from))  # type: ignore[arg-type]
    if (start.kind, start.arch) != (kind, arch):
        raise ValueError(f"--init {opts.init_from} is a {start.kind}/{start.arch} model, not {kind}/{arch}")
    if opts.arch_params is None:
        opts.arch_params = dict(start.arch_params)


def train(kind: str, data_dir: Path | str, arch: str | None = None, epochs: int = 10,
          out_dir: Path | str = "model", **options: Any) -> ModelCard:  # fmt: skip
    """Train a `kind` ('aoi', 'seg', 'cls') network of architecture `arch` and write it to `out_dir`."""
    from ai.architectures import DEFAULT_ARCH, DEFAULT_INPUT

    opts = TrainOptions(epochs=epochs, **options)
    if arch is None and opts.init_from:  # a fine-tune continues its starting model's architecture
        arch = ModelCard.load(Path(opts.init_from)).arch
    arch = arch or DEFAULT_ARCH[kind]
    if opts.init_from:
        _inherit_architecture(kind, arch, opts)
    if (kind, arch) not in DEFAULT_INPUT:
        known = ", ".join(a for k, a in DEFAULT_INPUT if k == kind)
        raise ValueError(f"unknown architecture {arch!r} for {kind!r}; known: {known}")
    opts.input_size = opts.input_size or DEFAULT_INPUT[(kind, arch)]
    if opts.verbose is None:
        opts.verbose = 1 if os.isatty(1) else 2
    _configure_threads(opts.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.random.seed(opts.seed)
    import tensorflow as tf

    tf.random.set_seed(opts.seed)
    started = time.time()
    if kind == "seg":
        from ai.training.seg import train_seg

        card = train_seg(Path(data_dir), arch, out, opts)
    elif kind in ("cls", "aoi"):
        card = _train_labelled(kind, Path(data_dir), arch, out, opts)
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected aoi, seg or cls")
    card.training["seconds"] = round(time.time() - started, 1)
    card.save(out)
    return card


def _train_labelled(kind: str, data_dir: Path, arch: str, out: Path, opts: TrainOptions) -> ModelCard:
    """AOI tiles and cell crops: one label per image, class-balanced sampling."""
    import tf_keras as keras

    from ai.architectures import build
    from ai.data import load_aoi, load_cls, split_by_seed
    from ai.evaluation import select_confidence_threshold
    from ai.metrics import classification_report
    from ai.training.sequences import BalancedImages

    loader, default_classes = (load_cls, CLASS_CODES) if kind == "cls" else (load_aoi, QUALITY_CLASSES)
    manifest_classes = _manifest_classes(data_dir)
    data = loader(data_dir, opts.input_size, manifest_classes or default_classes)
    train_idx, val_idx = split_by_seed(data.seeds, opts.val_fraction)
    if not len(val_idx):  # a single-slide dataset (tests): hold out every fifth image instead
        val_idx = np.arange(0, len(data.labels), 5)
        train_idx = np.setdiff1d(np.arange(len(data.labels)), val_idx)
    tr, va = data.subset(train_idx), data.subset(val_idx)
    n_classes = len(data.classes)
    params = {"n_classes": n_classes, "input_size": opts.input_size, **(opts.arch_params or {})}
    model = build(kind, arch, weights=opts.weights, **params)
    init_weights(model, opts)
    model.compile(optimizer=keras.optimizers.Adam(opts.learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    steps = opts.steps_per_epoch or max(1, len(tr.labels) // opts.batch_size)
    seq = BalancedImages(tr.images, tr.labels, n_classes, opts.batch_size, steps, seed=opts.seed)
    val = (va.images.astype(np.float32), keras.utils.to_categorical(va.labels, n_classes))
    hist = model.fit(seq, validation_data=val, epochs=opts.epochs, verbose=opts.verbose, workers=2,
                     callbacks=callbacks(out, opts.patience, "val_loss", "min"))  # fmt: skip
    probs = model.predict(va.images.astype(np.float32), batch_size=128, verbose=0)
    thresholds: dict[str, float] = {}
    if kind == "cls":
        thresholds["confidence"] = select_confidence_threshold(probs, va.labels)
    critical = CRITICAL_CODES if kind == "cls" else ("optimal", "acceptable")
    report = classification_report(probs, va.labels, data.classes, critical, thresholds.get("confidence", 0.0))
    report.pop("reliability")
    m = data.manifest
    px = float(m.get("crop_pixel_size_um") or m.get("pixel_size_um") or 0.0)
    source_size = int(data.images.shape[1]) if kind == "aoi" else 128
    card = ModelCard(
        kind=kind, arch=arch, classes=list(data.classes), input_size=opts.input_size,
        pixel_size_um=px * 128 / opts.input_size if kind == "cls" and px else px,
        arch_params=params, thresholds=thresholds, metrics={"validation": report},
        training=training_info(data_dir, m, opts, len(train_idx), len(val_idx), crop_pixel_size_um=px,
                                source_size=source_size),
    )  # fmt: skip
    if kind == "aoi":
        card.thresholds["acceptable_weight"] = 0.5
    finish(model, {k: [float(v) for v in vals] for k, vals in hist.history.items()}, card, out)
    return card


def _manifest_classes(data_dir: Path) -> list[str] | None:
    try:
        classes = json.loads((data_dir / "dataset.json").read_text()).get("classes")
    except (OSError, ValueError):
        return None
    return list(classes) if classes else None
