"""Virtual Metafer commands: `simulate-scan` and `make-dataset`. Research use only, not for clinical diagnosis.

numpy, OpenCV and the simulator are imported inside the commands, so `marrowlink --help` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from integration.commands.seeds import NetworkKind, parse_seeds


def _area(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        w, h = (float(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"scan area must look like WIDTHxHEIGHT in µm, got {text!r}") from None
    return w, h


def _profile(name: str, allow_mixed: bool) -> str:
    from acquisition.simulator import PROFILES

    known = [*PROFILES, *(["mixed"] if allow_mixed else [])]
    if name not in known:
        raise typer.BadParameter(f"unknown profile {name!r}; known: {', '.join(known)}")
    return name


def _aoi_scorer(folder: Path):  # type: ignore[no-untyped-def]
    """The AOI network as a `plan_scan` scorer (TensorFlow loads only here)."""
    from ai.inference import AoiModel

    model = AoiModel.load(folder)
    return lambda tiles: model.good_score(model.score_tiles(tiles))


def simulate_scan(
    out: Annotated[Path, typer.Option(help="Export folder to create (must not exist or be empty).")],
    seed: Annotated[int, typer.Option(help="Slide seed: the same seed gives the same slide, byte for byte.")] = 0,
    profile: Annotated[
        str,
        typer.Option(help="Case profile: normal, aml, apl, hcl, lymphoma, metastasis, myeloma, inv16 (or balanced)."),
    ] = "normal",
    fovs: Annotated[int, typer.Option(help="Number of 40x FOVs (top-N AOI positions).")] = 50,
    scan_area: Annotated[str | None, typer.Option(help="Scan area WIDTHxHEIGHT in µm (default 7000x3500).")] = None,
    ground_truth: Annotated[bool, typer.Option(help="Also write ground_truth/ (masks, labels).")] = True,
    aoi_model: Annotated[
        Path | None, typer.Option(help="AOI model folder: plan with the network instead of the ground-truth oracle.")
    ] = None,
) -> None:
    """Simulate a Metafer scan: 10x overview, AOI planning, 40x FOVs, export folder.

    Planning uses the ground-truth oracle unless `--aoi-model` names a trained AOI network (closed loop).
    """
    from tqdm import tqdm

    from acquisition import plan_scan, simulate_slide, write_metafer_export

    profile = _profile(profile, allow_mixed=False)
    area = _area(scan_area)
    if out.exists() and any(out.iterdir()):
        typer.echo(f"error: {out} exists and is not empty", err=True)
        raise typer.Exit(2)
    slide = simulate_slide(seed, profile, **({"scan_area_um": area} if area else {}))
    with tqdm(total=fovs + 2, desc=f"scan {slide.barcode}", unit="img") as bar:
        overview = slide.render_overview()
        bar.update(1)
        positions = plan_scan(overview, _aoi_scorer(aoi_model) if aoi_model else None, fovs)
        done = [0]

        def step(n: int) -> None:
            bar.update(n - done[0])
            done[0] = n

        manifest = write_metafer_export(slide, out, positions, overview=overview, ground_truth=ground_truth,
                                        progress=step)  # fmt: skip
        bar.update(fovs + 2 - bar.n)
    good = sum(1 for p in positions if p.label in ("optimal", "acceptable"))
    typer.echo(f"{manifest}: {len(positions)} FOVs ({good} in optimal/acceptable tiles), slide {slide.barcode}")


def make_dataset_command(
    kind: Annotated[NetworkKind, typer.Argument(help="aoi (grid tiles), seg (FOVs + masks) or cls (cell crops)")],
    out: Annotated[Path, typer.Option(help="Dataset folder to write.")],
    seeds: Annotated[str, typer.Option(help="Slide seeds, A:B (B exclusive) or A,B,C.")],
    profile: Annotated[str, typer.Option(help="A case profile, or 'mixed' (cycle through all by seed).")] = "mixed",
    fovs_per_seed: Annotated[int, typer.Option(help="FOVs per slide (seg, cls).")] = 8,
    scan_area: Annotated[str | None, typer.Option(help="Scan area WIDTHxHEIGHT in µm (default 7000x3500).")] = None,
    balance: Annotated[bool, typer.Option(help="cls: equal class frequencies on every slide.")] = True,
) -> None:
    """Write a training/evaluation set from the virtual Metafer (formats in docs/simulator.md)."""
    from tqdm import tqdm

    from acquisition.datasets import make_dataset, units

    seed_list = parse_seeds(seeds)
    profile = _profile(profile, allow_mixed=True)
    if out.exists() and any(out.iterdir()):
        typer.echo(f"error: {out} exists and is not empty", err=True)
        raise typer.Exit(2)
    with tqdm(total=units(kind.value, seed_list, fovs_per_seed), desc=f"make-dataset {kind.value}") as bar:
        make_dataset(kind.value, out, seed_list, profiles=[profile], fovs_per_seed=fovs_per_seed,
                     scan_area_um=_area(scan_area), balance=balance, progress=bar.update)  # fmt: skip
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    typer.echo(f"{out}: {json.dumps(counts)}")


def register(app: typer.Typer) -> None:
    app.command("simulate-scan")(simulate_scan)
    app.command("make-dataset")(make_dataset_command)
