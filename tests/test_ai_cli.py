"""Training on a tiny synthetic dataset, the inference API and the `detect` / `evaluate` commands."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ai.synthetic import blob_fov, write_labelled, write_seg


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from ai.training import train

    root = tmp_path_factory.mktemp("ai_models")
    seg_data = write_seg(root / "seg", n=6, shape=(128, 192), pixel_size_um=0.043)  # cells ~30 px at 1/2 res
    cls_data = write_labelled(root / "cls", "cls", ["BLA", "NGS", "EBO"], per_class=10, size=48)
    common = {"batch_size": 4, "steps_per_epoch": 4, "verbose": 0, "threads": 2}
    train("seg", seg_data, "compact", 2, root / "m_seg", input_size=64, seg_scale=0.5,
          arch_params={"width": 4, "depth": 2}, **common)  # fmt: skip
    train("cls", cls_data, "compact", 2, root / "m_cls", input_size=32, arch_params={"width": 4}, **common)
    return {"root": root, "seg": root / "m_seg", "cls": root / "m_cls", "seg_data": seg_data}


def test_model_folders_have_cards_curves_and_checkpoints(models):
    for kind in ("seg", "cls"):
        card = json.loads((models[kind] / "model.json").read_text())
        assert card["kind"] == kind and len(card["weights_sha256"]) == 64
        assert card["intended_use"].startswith("Research use only")
        assert (models[kind] / "training_curve.png").stat().st_size > 1000
        assert (models[kind] / "checkpoints").is_dir()
    cls_card = json.loads((models["cls"] / "model.json").read_text())
    assert len(cls_card["classes"]) == 23 and "confidence" in cls_card["thresholds"]
    seg_card = json.loads((models["seg"] / "model.json").read_text())
    assert {"foreground", "min_area_um2"} <= set(seg_card["thresholds"])
    assert seg_card["pixel_size_um"] == pytest.approx(0.086)


def test_fine_tune_continues_the_starting_models_architecture(models):
    """`--init` without `--arch`/`--width`: the fine-tune takes the starting model's architecture, width and
    depth (the shipped seg model is neither the default arch nor width), and starting from another kind of
    model is a clear error."""
    from ai.training import train

    common = {"batch_size": 4, "steps_per_epoch": 1, "verbose": 0, "threads": 2, "input_size": 64}
    out = models["root"] / "m_seg_ft"
    card = train("seg", models["seg_data"], None, 1, out, seg_scale=0.5, init_from=str(models["seg"]), **common)
    assert card.arch == "compact" and card.arch_params == {"width": 4, "depth": 2}  # no --arch: the start's
    with pytest.raises(ValueError, match="cls/compact model, not seg/compact"):
        train("seg", models["seg_data"], "compact", 1, out, seg_scale=0.5, init_from=str(models["cls"]), **common)


def test_analyze_fovs_returns_typed_cells(models):
    from ai.inference import CellClassifier, CellSegmenter, analyze_fovs
    from ai.results import CellDetections, Differential

    image, _, _ = blob_fov(np.random.default_rng(5), (128, 192))
    dets = analyze_fovs([image, image], 0.043, CellSegmenter.load(models["seg"]), CellClassifier.load(models["cls"]))
    assert len(dets) == 2 and all(isinstance(d, CellDetections) for d in dets)
    for cell in dets[0].cells:
        x0, y0, x1, y1 = cell.bbox
        assert 0 <= x0 < x1 <= 192 and 0 <= y0 < y1 <= 128
        assert cell.cell_class and 0 <= cell.probability <= 1
    # every cell is reported, but those cut by the image edge are not counted (ai.cell_rules)
    assert Differential.from_detections(dets).total == sum(not c.border for d in dets for c in d.cells)


def test_detect_json_shape(models, tmp_path):
    from integration.cli import app

    image, _, _ = blob_fov(np.random.default_rng(7), (128, 192))
    path = tmp_path / "smear.png"
    cv2.imwrite(str(path), image[..., ::-1])
    args = ["detect", str(path), "--pixel-size", "0.05", "--json", "--seg-model", str(models["seg"]),
            "--cls-model", str(models["cls"]), "--overlay", str(tmp_path / "ov")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["images"] and doc["images"][0]["file"] == str(path)
    for cell in doc["images"][0]["cells"]:
        assert set(cell) == {"bbox", "polygon", "class", "probability", "border"} and isinstance(cell["border"], bool)
        assert len(cell["bbox"]) == 4 and len(cell["polygon"]) >= 3 and cell["polygon"][0] != cell["polygon"][-1]
    assert (tmp_path / "ov" / "smear_cells.png").exists()


def test_detect_without_models_says_train(tmp_path, monkeypatch):
    import ai.models
    from integration.cli import app

    monkeypatch.setattr(ai.models, "DEFAULT_ROOT", tmp_path / "none")
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.zeros((32, 32, 3), np.uint8))
    result = CliRunner().invoke(app, ["detect", str(path), "--pixel-size", "0.1"])
    assert result.exit_code == 2 and "marrowlink train seg" in result.output


def test_evaluate_seg_on_a_dataset_folder_reports_network_and_baseline(models):
    from integration.cli import app

    args = ["evaluate", "seg", "--seeds", "1:4", "--data", str(models["seg_data"]), "--model", str(models["seg"]),
            "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for key in ("network", "baseline_colour_threshold"):
        assert {"sensitivity", "specificity", "precision", "f_beta"} <= set(doc[key])
        assert doc[key]["true_cells"] + doc[key]["small_true_cells"] == 24  # blobs are tiny in µm²


@pytest.mark.slow
def test_evaluate_generates_held_out_data_with_the_simulator(models, tmp_path):
    """`evaluate` without --data asks acquisition.make_dataset for fresh seeds (one FOV here)."""
    from integration.cli import app

    args = ["evaluate", "seg", "--seeds", "3:4", "--fovs-per-seed", "1", "--model", str(models["seg"]), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["n_fovs"] == 1 and doc["network"]["true_cells"] > 0 and doc["network"]["distractors"] > 0
    assert doc["network_by_fov_source"]["scan_list"] == doc["network"]  # the one FOV is a scan-list position
    # the same FOV with pixels under two cells left out of the IoU (ai.metrics tests the rule): same cells
    loose = doc["network_overlaps_ignored"]
    assert loose["all"] == loose["scan_list"] and loose["all"]["true_cells"] == doc["network"]["true_cells"]
    assert doc["sensitivity_per_class"]
    # the readable form keeps the groups (it once printed them as empty braces)
    readable = json.loads(CliRunner().invoke(app, args[:-1]).stdout)
    assert readable["network_by_fov_source"]["scan_list"]["sensitivity"] == doc["network"]["sensitivity"]
    assert readable["network_overlaps_ignored"]["all"]["true_cells"] == doc["network"]["true_cells"]
    assert readable["sensitivity_per_class"] == doc["sensitivity_per_class"]
    # against each cell's whole outline (outlines/): the same true cells
    whole = doc["network_whole_outlines"]
    assert whole["all"] == whole["scan_list"] and whole["all"]["true_cells"] == doc["network"]["true_cells"]


def test_star_network_trains_detects_and_evaluates_against_whole_outlines(models, tmp_path):
    """`--arch compact_star`: cells from centres and ray lengths (they may overlap), through `detect` and
    `evaluate`, which then also counts against each cell's whole outline (outlines/)."""
    from ai.inference import CellSegmenter
    from ai.training import train
    from integration.cli import app

    common = {"batch_size": 4, "steps_per_epoch": 2, "verbose": 0, "threads": 2, "input_size": 64}
    out = tmp_path / "m_star"
    card = train("seg", models["seg_data"], "compact_star", 1, out, seg_scale=0.5,
                 arch_params={"width": 4, "depth": 2}, **common)  # fmt: skip
    assert card.arch == "compact_star" and {"centre", "nms_iou", "seed_distance_um"} <= set(card.thresholds)
    assert "whole cell outlines" in card.metrics["threshold_rule"]
    segmenter = CellSegmenter.load(out)
    assert segmenter.overlapping
    maps = segmenter.probability_maps([np.zeros((128, 192, 3), np.uint8)], 0.043)[0]
    assert maps.shape == (64, 96, 33) and maps[..., 0].min() >= 0 and maps[..., 0].max() <= 1
    args = ["evaluate", "seg", "--seeds", "1:4", "--data", str(models["seg_data"]), "--model", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["network"]["true_cells"] + doc["network"]["small_true_cells"] == 24
    assert doc["network_whole_outlines"]["all"]["true_cells"] == doc["network"]["true_cells"]
    ceiling = doc["strict_ceiling_true_outlines"]["all"]  # blobs never overlap: their outlines score perfectly
    assert ceiling["found"] == ceiling["true_cells"] == doc["network"]["true_cells"] and ceiling["specificity"] == 1
    image = models["seg_data"] / "images" / "1_0.png"
    result = CliRunner().invoke(app, ["detect", str(image), "--pixel-size", "0.05", "--seg-model", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert "cells" in json.loads(result.stdout)["images"][0]
