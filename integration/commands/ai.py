"""AI commands: `train`, `detect`, `evaluate` (and the benchmark behind `marrowlink bench ai`).

TensorFlow and the simulator are imported inside the commands, so `marrowlink --help` stays instant.
`evaluate` is the one place that joins `acquisition` (held-out data) and `ai` (metrics): `ai` itself
never imports `acquisition`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from integration.commands.seeds import NetworkKind, parse_seeds


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def train_command(
    kind: Annotated[NetworkKind, typer.Argument(help="aoi, seg or cls")],
    data: Annotated[Path, typer.Option(help="Dataset folder from `marrowlink make-dataset`.")],
    out: Annotated[Path, typer.Option(help="Model folder to write (weights, model.json, curves).")],
    arch: Annotated[
        str | None,
        typer.Option(
            help="compact (CPU default), compact_star (seg: overlapping cells); paper: unet16 (seg), "
            "xception (cls). With --init: the starting model's."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 32,
    steps_per_epoch: Annotated[int | None, typer.Option()] = None,
    input_size: Annotated[int | None, typer.Option(help="Network input side (crops/tiles/seg patches).")] = None,
    learning_rate: Annotated[float, typer.Option()] = 2e-3,
    patience: Annotated[int, typer.Option(help="Early stopping patience (epochs).")] = 6,
    weights: Annotated[str | None, typer.Option(help="'imagenet' to start from ImageNet where downloadable.")] = None,
    width: Annotated[int | None, typer.Option(help="Width of the compact architectures.")] = None,
    threads: Annotated[int | None, typer.Option(help="TensorFlow threads (default: all cores).")] = None,
    init: Annotated[Path | None, typer.Option(help="Fine-tune from this model folder (same arch).")] = None,
) -> None:
    """Train a network on a simulator dataset and write a model folder with its model card."""
    from ai.models import ModelError
    from ai.training import train

    try:
        card = train(
            kind.value, data, arch, epochs, out, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
            input_size=input_size, learning_rate=learning_rate, patience=patience, weights=weights,
            arch_params={"width": width} if width else None, threads=threads,
            init_from=str(init) if init else None,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, ModelError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"model": str(out), "kind": card.kind, "arch": card.arch, "thresholds": card.thresholds,
                           "validation": _brief(card.metrics.get("validation", {}))}, indent=2))  # fmt: skip


def _brief(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}


def detect_command(
    images: Annotated[list[Path], typer.Argument(help="PNG/JPEG/TIFF photos of stained smears.")],
    pixel_size: Annotated[float, typer.Option("--pixel-size", help="Pixel size of the images in µm.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    overlay: Annotated[Path | None, typer.Option(help="Write PNGs with cell outlines into this folder.")] = None,
    seg_model: Annotated[Path | None, typer.Option(help="Segmentation model folder (default: shipped).")] = None,
    cls_model: Annotated[Path | None, typer.Option(help="Classification model folder (default: shipped).")] = None,
) -> None:
    """Find and classify nucleated cells in any smear photo (resampled to the models' scale)."""
    from ai.data import read_rgb
    from ai.inference import SUPPORTED_PIXEL_SIZE_UM, CellClassifier, CellSegmenter, analyze_fovs
    from ai.models import ModelError

    low, high = SUPPORTED_PIXEL_SIZE_UM
    if not low <= pixel_size <= high:
        _fail(f"--pixel-size {pixel_size:g} µm is outside the supported range {low:g}-{high:g} µm per pixel")
    try:
        seg, cls = CellSegmenter.load(seg_model), CellClassifier.load(cls_model)
    except ModelError as exc:
        _fail(str(exc))
    results = []
    for path in images:
        try:
            image = read_rgb(path)
        except ValueError as exc:
            _fail(str(exc))
        det = analyze_fovs([image], pixel_size, seg, cls)[0]
        results.append({"file": str(path), "cells": [c.to_json() for c in det.cells]})
        if overlay is not None:
            from ai.plots import overlay_png

            overlay.mkdir(parents=True, exist_ok=True)
            overlay_png(image, [c.polygon for c in det.cells], [c.cell_class or "" for c in det.cells],
                        overlay / f"{path.stem}_cells.png")  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"images": results}))
        return
    typer.echo("Research use only, not for clinical diagnosis.")
    for res in results:
        cut = sum(c["border"] for c in res["cells"])
        typer.echo(f"\n{res['file']}: {len(res['cells'])} cells, {cut} cut by the image edge (not counted)")
        typer.echo(f"{'#':>4}  {'class':<13}{'prob':>6}  bbox")
        for i, c in enumerate(res["cells"], start=1):
            edge = "  (edge)" if c["border"] else ""
            typer.echo(f"{i:>4}  {c['class']:<13}{c['probability']:>6.2f}  {c['bbox']}{edge}")


def evaluate_command(
    kind: Annotated[NetworkKind, typer.Argument(help="aoi, seg or cls")],
    seeds: Annotated[str, typer.Option(help="Held-out simulator seeds, A:B (B exclusive) or A,B,C.")],
    profile: Annotated[str | None, typer.Option(help="Case profile (default: the simulator's mix).")] = None,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: shipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plots: Annotated[Path | None, typer.Option(help="Write confusion-matrix / reliability PNGs here.")] = None,
    data: Annotated[Path | None, typer.Option(help="Use this existing dataset folder instead of generating.")] = None,
    top_n: Annotated[int, typer.Option(help="AOI: positions per overview.")] = 50,
    fovs_per_seed: Annotated[int, typer.Option(help="seg/cls: FOVs generated per slide seed.")] = 2,
) -> None:
    """Evaluate a model on freshly simulated held-out data (seeds training never used)."""
    from ai.models import ModelError

    seed_list = parse_seeds(seeds)
    with tempfile.TemporaryDirectory(prefix="marrowlink-eval-") as tmp:
        folder = data or _make_dataset(kind.value, Path(tmp) / kind.value, seed_list, profile, fovs_per_seed)
        try:
            result = _evaluate(kind.value, folder, model, top_n)
        except ModelError as exc:
            _fail(str(exc))
    result.update({"kind": kind.value, "seeds": seeds, "profile": profile})
    if plots is not None:
        _plots(result, plots)
    if as_json:
        typer.echo(json.dumps(result, default=float))
    else:
        typer.echo(json.dumps(_brief_nested(result), indent=2, default=float))


def _brief_nested(result: dict) -> dict:
    """The readable form: the lists left out, one level of groups kept (per FOV source, overlaps ignored)."""

    def brief(v: dict) -> dict:
        if v and all(isinstance(x, dict) for x in v.values()):
            return {k: _brief(x) for k, x in v.items()}
        return _brief(v)

    return {k: (brief(v) if isinstance(v, dict) else v) for k, v in result.items() if k != "confusion_matrix"}


def _make_dataset(kind: str, out: Path, seeds: list[int], profile: str | None, fovs_per_seed: int) -> Path:
    """Held-out data from the virtual Metafer, exactly as `marrowlink make-dataset` writes it."""
    from acquisition import make_dataset

    typer.echo(f"generating {kind} data for {len(seeds)} seeds ...", err=True)
    try:
        make_dataset(kind, out, seeds, profiles=[profile] if profile else None, fovs_per_seed=fovs_per_seed)
    except ValueError as exc:
        _fail(str(exc))
    return out


def _evaluate(kind: str, folder: Path, model: Path | None, top_n: int) -> dict:
    from ai import evaluation

    if kind == "seg":
        from ai.inference import CellSegmenter

        return evaluation.evaluate_seg_dataset(CellSegmenter.load(model), folder)
    if kind == "cls":
        from ai.data import load_cls
        from ai.inference import CellClassifier

        classifier = CellClassifier.load(model)
        data = load_cls(folder, 128, None)
        labels = [data.classes[i] for i in data.labels]
        return evaluation.evaluate_cls(classifier, data.images, labels)
    from ai.data import load_aoi
    from ai.inference import AoiModel

    aoi = AoiModel.load(model)
    data = load_aoi(folder, aoi.card.input_size, None)
    return evaluation.evaluate_aoi(aoi, list(data.images), [data.classes[i] for i in data.labels], data.seeds, top_n)


def _plots(result: dict, folder: Path) -> None:
    from ai import plots

    folder.mkdir(parents=True, exist_ok=True)
    if "confusion_matrix" in result:
        plots.confusion_matrix_png(result["confusion_matrix"], result["classes"],
                                   folder / f"{result['kind']}_confusion.png", title=f"{result['kind']} {result['seeds']}")  # fmt: skip # noqa: E501
    if "reliability" in result:
        plots.reliability_png(result["reliability"], folder / f"{result['kind']}_reliability.png", result["ece"])


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("detect")(detect_command)
    app.command("evaluate")(evaluate_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `marrowlink`")
