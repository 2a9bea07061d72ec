"""Architectures, a training step, save/load, model cards and their integrity checks."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

import ai
from ai.architectures import build
from ai.models import ModelCard, ModelError, default_model_dir, load_model, save_model


def test_importing_ai_does_not_import_tensorflow():
    import subprocess

    code = "import sys, ai, ai.results, ai.metrics, ai.models, ai.inference; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert ai.CellDetections and ai.Differential


@pytest.mark.parametrize(
    ("kind", "arch", "params", "shape", "out"),
    [
        ("aoi", "compact", {"input_size": 64}, (2, 64, 64, 3), (2, 6)),
        ("seg", "compact", {"width": 4}, (2, 64, 96, 3), (2, 64, 96, 2)),
        ("seg", "compact_star", {"width": 4, "rays": 16}, (2, 64, 96, 3), (2, 64, 96, 17)),
        ("cls", "compact", {"input_size": 96, "width": 8}, (2, 96, 96, 3), (2, 23)),
    ],
)
def test_compact_architectures_output_shapes(kind, arch, params, shape, out):
    model = build(kind, arch, **params)
    y = model(np.zeros(shape, np.float32), training=False)
    assert tuple(y.shape) == out
    if kind != "seg":
        np.testing.assert_allclose(np.asarray(y).sum(axis=1), 1.0, rtol=1e-5)


def test_star_network_training_steps_lower_its_loss():
    """compact_star learns the centre map and the ray lengths of one star-convex cell (ai.star targets)."""
    import tf_keras as keras

    from ai.star import pole_maps, star_targets
    from ai.training.losses import star_loss

    keras.utils.set_random_seed(0)
    layers = np.zeros((1, 32, 32), np.uint16)
    yy, xx = np.mgrid[0:32, 0:32]
    layers[0][(yy - 16) ** 2 + (xx - 15) ** 2 <= 49] = 1
    centre, poles = star_targets(layers, rays=8)
    y = np.concatenate([centre[..., None], pole_maps(poles, (32, 32))], axis=-1)[None].repeat(4, axis=0)
    x, _ = _seg_batch()
    model = build("seg", "compact_star", width=4, depth=2, rays=8)
    model.compile(keras.optimizers.Adam(1e-2), star_loss)
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, epochs=8, batch_size=4, verbose=0)
    assert float(model.evaluate(x, y, verbose=0)) < before


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        build("seg", "nope")


def _seg_batch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (4, 32, 32, 3)).astype(np.float32)
    y = np.zeros((4, 32, 32, 2), np.float32)
    y[:, 8:24, 8:24, 0] = 1
    y[:, 12:20, 12:20, 1] = 1
    x[:, 8:24, 8:24] = [120, 60, 150]
    return x, y


def test_training_steps_lower_the_segmentation_loss():
    import tf_keras as keras

    from ai.training.losses import segmentation_loss

    keras.utils.set_random_seed(0)
    model = build("seg", "compact", width=4, depth=2)
    model.compile(keras.optimizers.Adam(1e-2), segmentation_loss)
    x, y = _seg_batch()
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, epochs=8, batch_size=4, verbose=0)
    assert float(model.evaluate(x, y, verbose=0)) < before


def test_centre_errors_where_cells_touch_cost_more_than_inside_a_cell():
    """Two touching cells: a centre map that bridges them (the merge that loses a cell) must cost more
    than an error of the same size and number of pixels inside a cell."""
    from ai.postprocess import centre_targets
    from ai.training.losses import segmentation_loss

    labels = np.zeros((32, 48), np.int32)
    labels[8:24, 6:24] = 1
    labels[8:24, 24:42] = 2
    truth = np.stack([(labels > 0).astype(np.float32), centre_targets(labels)], axis=-1)
    seam = (labels > 0) & (truth[..., 1] < 0.3) & (np.abs(np.arange(48) - 23.5) < 2)[None, :]
    core = np.zeros_like(seam)
    core[np.nonzero(truth[..., 1] > 0.6)[0][: seam.sum()], np.nonzero(truth[..., 1] > 0.6)[1][: seam.sum()]] = True
    assert seam.sum() == core.sum() > 0

    def loss(wrong: np.ndarray) -> float:
        pred = np.clip(truth.copy(), 0.02, 0.98)
        pred[..., 1][wrong] = np.where(truth[..., 1][wrong] < 0.5, 0.9, 0.1)
        return float(segmentation_loss(truth[None], pred[None]))

    assert loss(seam) > loss(core)


def _saved(tmp_path: Path, kind="cls", arch="compact", params=None) -> tuple[Path, object]:
    params = params or {"input_size": 48, "width": 4}
    model = build(kind, arch, **params)
    card = ModelCard(kind, arch, [f"C{i}" for i in range(23)], 48, 0.2, arch_params=params)
    folder = tmp_path / f"{kind}_{arch}"
    save_model(model, card, folder)
    return folder, model


def test_save_load_gives_identical_predictions(tmp_path):
    folder, model = _saved(tmp_path)
    loaded, card = load_model(folder, "cls")
    x = np.random.default_rng(1).integers(0, 255, (3, 48, 48, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    assert len(card.weights_sha256) == 64 and card.intended_use.startswith("Research use only")


def test_sha256_mismatch_is_detected(tmp_path):
    folder, _ = _saved(tmp_path)
    card = ModelCard.load(folder)
    card.weights_sha256 = "0" * 64
    card.save(folder)
    with pytest.raises(ModelError, match=r"weights\.h5: sha256 .* does not match"):
        load_model(folder)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    folder, _ = _saved(tmp_path)
    (folder / "weights.h5").write_bytes(b"not an hdf5 file")
    card = ModelCard.load(folder)
    card.weights_sha256 = ""  # get past the checksum to the loader itself
    card.save(folder)
    with pytest.raises(ModelError, match=r"weights\.h5: cannot load these weights"):
        load_model(folder)


def test_wrong_shape_weights_are_a_clear_error(tmp_path):
    folder, _ = _saved(tmp_path)
    card = ModelCard.load(folder)
    card.arch_params = {"input_size": 48, "width": 8}  # the weights were trained at width 4
    card.save(folder)
    with pytest.raises(ModelError, match=r"weights\.h5: cannot load these weights into a cls/compact"):
        load_model(folder)


def test_wrong_kind_and_missing_default_are_clear_errors(tmp_path, monkeypatch):
    folder, _ = _saved(tmp_path)
    with pytest.raises(ModelError, match="a cls model, but a seg model is needed"):
        load_model(folder, "seg")
    models = importlib.import_module("ai.models")
    monkeypatch.setattr(models, "DEFAULT_ROOT", tmp_path / "nothing")
    with pytest.raises(ModelError, match="marrowlink train seg"):
        default_model_dir("seg")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "arch", "params", "shape"),
    [
        ("seg", "unet16", {}, (1, 64, 64, 3)),
        ("cls", "xception", {"input_size": 72}, (2, 72, 72, 3)),
    ],
)
def test_paper_architectures_train_save_load(tmp_path, kind, arch, params, shape):
    """The seed's UNet16 (VGG16 encoder) and Xception: build, one training step, save, load, same output."""
    import tf_keras as keras

    from ai.training.losses import segmentation_loss

    model = build(kind, arch, weights=None, **params)
    x = np.random.default_rng(0).integers(0, 255, shape).astype(np.float32)
    if kind == "seg":
        y = np.zeros((*shape[:3], 2), np.float32)
        model.compile(keras.optimizers.Adam(1e-4), segmentation_loss)
    else:
        y = keras.utils.to_categorical([0, 5], 23)
        model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    model.train_on_batch(x, y)
    assert model.output_shape[-1] == (2 if kind == "seg" else 23)
    card = ModelCard(kind, arch, ["x"], shape[1], 0.2, arch_params=params)
    save_model(model, card, tmp_path / arch)
    loaded, _ = load_model(tmp_path / arch, kind)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(loaded(x, training=False)), atol=1e-6)


@pytest.mark.parametrize("kind", ["aoi", "seg", "cls"])
def test_shipped_models_load_and_match_their_cards(kind):
    from ai.models import DEFAULT_ROOT

    if not (DEFAULT_ROOT / kind / "model.json").exists():
        pytest.skip(f"no {kind} model shipped yet (marrowlink train {kind} --out ai/weights/{kind})")
    model, card = load_model(None, kind)
    assert card.kind == kind and card.intended_use.startswith("Research use only")
    assert card.training.get("seeds") and card.metrics
    size = card.input_size if kind != "seg" else 64
    out = model(np.zeros((1, size, size, 3), np.float32), training=False)
    channels = {"aoi": len(card.classes), "cls": len(card.classes), "seg": 2}[kind]
    if card.arch == "compact_star":  # centre probability + log ray lengths (ai.star)
        channels = 1 + card.arch_params["rays"]
    assert out.shape[-1] == channels
