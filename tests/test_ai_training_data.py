"""Segmentation training data: one example builder and one crop function, shared by the Keras sequence and
the GPU trainer (scripts/seg_torch.py), whose Keras side (arrays in parts, layer order) is tested here too."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ai.augment import segmentation_crop
from ai.data import contact_pixels, load_seg, seg_example

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("seg_torch", ROOT / "scripts" / "seg_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _two_cells_touching() -> np.ndarray:
    ids = np.zeros((40, 60), np.int32)
    ids[10:30, 5:25] = 1
    ids[10:30, 25:45] = 2  # shares the column boundary x = 24|25 with cell 1
    ids[2:6, 50:54] = 3  # alone
    return ids


def test_contact_pixels_mark_where_cells_meet_and_nowhere_else():
    contact = contact_pixels(_two_cells_touching())
    ys, xs = np.nonzero(contact)
    assert set(np.unique(xs)) == {23, 24, 25, 26}  # 2 px either side of the shared edge
    assert ys.min() == 10 and ys.max() == 29
    assert not contact[2:6, 50:54].any()  # the lone cell has no neighbour


def test_seg_example_targets():
    ids = _two_cells_touching()
    image = np.full((40, 60, 3), 200, np.uint8)
    small, target = seg_example(image, ids, 1.0, contacts=True)
    assert small.shape == (40, 60, 3) and target.shape == (40, 60, 3) and target.dtype == np.uint8
    assert np.array_equal(target[..., 0] > 0, ids > 0)
    assert target[20, 15, 1] == 255 and target[20, 24, 1] < 40  # centre ramp peaks inside, dips at the seam
    assert np.array_equal(target[..., 2] > 0, contact_pixels(ids))
    half_image, half = seg_example(image, ids, 0.5)
    assert half_image.shape == (20, 30, 3) and half.shape == (20, 30, 2)


def test_hard_crops_centre_on_contacts_and_return_two_channels():
    ids = np.zeros((300, 400), np.int32)
    ids[200:240, 300:340] = 1
    ids[200:240, 340:380] = 2
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    _, target = seg_example(image, ids, 1.0, contacts=True)
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(20):
        x, y = segmentation_crop(rng, image, target, 64, augment=False, hard=1.0)
        assert x.shape == (64, 64, 3) and y.shape == (64, 64, 2)
        hits += bool(y[..., 0].any())
    assert hits == 20  # every hard crop holds the pair; a random 64 px window rarely would
    x, y = segmentation_crop(np.random.default_rng(2), image[:50, :50], target[:50, :50], 64)
    assert x.shape == (64, 64, 3) and y.shape == (64, 64, 2)  # padded where the FOV is smaller


@pytest.mark.slow
def test_gpu_trainer_renders_what_make_dataset_and_load_seg_give(tmp_path):
    """The GPU trainer renders its slides itself: the same FOVs, JPEG, scale and targets as the CPU path."""
    from acquisition import make_dataset

    make_dataset("seg", tmp_path / "seg", [4], fovs_per_seed=4)
    data = load_seg(tmp_path / "seg", 0.25)
    rendered = _script().render_seed(4)  # the order of make-dataset's FOVs of that seed
    assert len(rendered) == len(data.images) == 4
    for (image, target, seed), ref_image, ref_target in zip(rendered, data.images, data.targets, strict=True):
        assert seed == 4
        assert np.array_equal(image, ref_image)
        assert np.array_equal(target[..., :2], ref_target)
    # packed to travel (JPEG + 16-bit ids at working scale): the same targets, the image within JPEG's error
    script = _script()
    script.pack(SimpleNamespace(data=str(tmp_path / "seg"), out=str(tmp_path / "packed"), seeds="4:5"))
    packed = [script._read_one(p) for p in sorted((tmp_path / "packed").glob("*.jpg"))]
    assert [p[2] for p in packed] == [4, 4, 4, 4]
    for (image, target, _), ref_image, ref_target in zip(packed, data.images, data.targets, strict=True):
        assert np.array_equal(target[..., :2], ref_target)
        assert np.abs(image.astype(int) - ref_image).mean() < 3


def test_gpu_trainer_arrays_load_into_the_keras_model_in_parts(tmp_path, monkeypatch):
    """Arrays in Keras layer order, written in parts (as they come back from a GPU machine), give the same
    network back; a file of the wrong size is refused."""
    import tf_keras as keras

    from ai.architectures import build

    script = _script()
    model = build("seg", "compact", width=4, depth=2)
    layers = [la for la in model.layers if isinstance(la, keras.layers.Conv2D | keras.layers.BatchNormalization)]
    rng = np.random.default_rng(3)
    arrays = [rng.normal(0, 0.3, w.shape).astype(np.float32) for la in layers for w in la.weights]
    arrays = [np.abs(a) + 0.5 if a.ndim == 1 else a for a in arrays]  # positive BN variances
    it = iter(arrays)
    for la in layers:
        la.set_weights([next(it) for _ in la.weights])
    monkeypatch.setattr(script, "PART_BYTES", 4096)
    script.save_arrays(tmp_path / "run", arrays, {"width": 4, "depth": 2})
    assert len(list((tmp_path / "run").glob("weights_*.npz"))) > 3
    again, meta = script.keras_model(tmp_path / "run")
    assert meta["width"] == 4
    x = rng.integers(0, 255, (1, 32, 48, 3)).astype(np.float32)
    assert np.allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    script.save_arrays(tmp_path / "short", arrays[:-2], {"width": 4, "depth": 2})
    with pytest.raises(ValueError, match="arrays for a model of"):
        script.keras_model(tmp_path / "short")
