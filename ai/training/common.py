"""What every training run shares: its options, its start from a trained model, its callbacks and its record.

A module of its own so that the per-kind trainers (`ai.training.seg`, the labelled trainer in
`ai.training`) import it and never each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai.models import ModelCard, save_model


@dataclass
class TrainOptions:
    epochs: int = 10
    batch_size: int = 32
    steps_per_epoch: int | None = None
    learning_rate: float = 2e-3
    patience: int = 6
    input_size: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    weights: str | None = None  # 'imagenet' where it can be downloaded
    arch_params: dict[str, Any] | None = None
    verbose: int | None = None
    seg_scale: float = 0.25  # working resolution relative to the 40x FOV
    threads: int | None = None
    init_from: str | None = None  # a model folder of the same arch: fine-tune from its weights


def init_weights(model, opts: TrainOptions) -> None:
    """Start from a trained model of the same architecture (fine-tuning on new data)."""
    if opts.init_from:
        folder = Path(opts.init_from)
        model.load_weights(str(folder / ModelCard.load(folder).weights_file))


def callbacks(out_dir: Path, patience: int, monitor: str, mode: str):
    import tf_keras as keras

    ckpt = out_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.ModelCheckpoint(
            str(ckpt / "best.weights.h5"), monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=max(2, patience // 2)),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv")),
    ]


def finish(model, history, card: ModelCard, out: Path) -> None:
    from ai.plots import training_curve

    card.training["epochs_run"] = len(next(iter(history.values()), []))
    (out / "history.json").write_text(json.dumps(history, default=float))
    training_curve(history, out / "training_curve.png", title=f"{card.kind}/{card.arch}")
    save_model(model, card, out)


def training_info(data_dir: Path, manifest: dict, opts: TrainOptions, n_train: int, n_val: int, **extra) -> dict:
    return {
        "data_dir": str(data_dir),
        "seeds": manifest.get("seeds"),
        "profiles": manifest.get("profiles"),
        "generator_version": manifest.get("generator_version"),
        "n_train": n_train,
        "n_validation": n_val,
        "validation": "last ~10% of slide seeds of the training dataset",
        "epochs": opts.epochs,
        "batch_size": opts.batch_size,
        "learning_rate": opts.learning_rate,
        "weights_init": opts.init_from or opts.weights or "random",
        "augmentation": "flips, 90° rotations, scale ±12-15%, OD stain mixing, HSV, brightness/contrast/"
        "white balance, gamma, Gaussian blur, noise, JPEG q40-95",
        **extra,
    }
