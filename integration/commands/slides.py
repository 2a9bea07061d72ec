"""Slide commands: `import-scan` (export folder → DICOM WSI) and `analyze` (AI results for a study)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataOption = Annotated[
    Path | None,
    typer.Option("--data", envvar="MARROWLINK_DATA", help="Data directory (index + blob store)."),
]


def import_scan_command(
    folder: Annotated[Path, typer.Argument(help="Metafer export folder (manifest.json or manifest.csv + images).")],
    accession: Annotated[str | None, typer.Option("--accession", help="Accession number of the case.")] = None,
    data: DataOption = None,
) -> None:
    """Validate a Metafer export folder and store it as DICOM VL Whole Slide Microscopy images."""
    from acquisition.metafer import MetaferExportError
    from dicom_store import StoreError
    from integration.scans import ScanImportError, import_scan
    from integration.service import build_components
    from integration.settings import load_settings

    settings = load_settings(data_dir=data)
    components = build_components(settings)
    try:
        result = import_scan(
            folder,
            components.store,
            uid_root=settings.uid_root,
            accession_number=accession,
            engine=components.engine,
            zone=settings.zone,
        )
    except (MetaferExportError, ScanImportError, StoreError) as exc:
        typer.secho(f"import failed, nothing stored: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    finally:
        components.engine.dispose()
    typer.echo(
        f"stored slide {result.container_identifier}: {len(result.sop_instance_uids)} instances, "
        f"{result.fovs} FOVs\nstudy {result.study_instance_uid}\nseries {result.series_instance_uid}"
    )


def analyze_command(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID of the slide scan.")],
    data: DataOption = None,
    seg_model: Annotated[Path | None, typer.Option(help="Segmentation model folder (default: shipped).")] = None,
    cls_model: Annotated[Path | None, typer.Option(help="Classification model folder (default: shipped).")] = None,
    aoi_model: Annotated[Path | None, typer.Option(help="AOI model folder (default: shipped).")] = None,
    send: Annotated[bool, typer.Option(help="Queue the preliminary ORU^R01 to the configured LIS.")] = True,
) -> None:
    """Run the AI on a stored slide and store SEG, bulk annotations and a preliminary TID 1500 SR."""
    from rich.progress import Progress

    from ai.models import ModelError
    from dicom_store import NotFound, StoreError
    from integration.analysis import AnalysisModels
    from integration.service import build_components
    from integration.settings import load_settings
    from integration.workflow import Workflow

    settings = load_settings(data_dir=data)
    components = build_components(settings)
    try:
        models = AnalysisModels.load(
            seg_model or settings.model_dir("seg"),
            cls_model or settings.model_dir("cls"),
            aoi_model or settings.model_dir("aoi"),
        )
        from dicom_store.slides import StoredSlide
        from integration.analysis import analysis_windows

        regions = len(analysis_windows(StoredSlide.find(components.store, study).regions()))
        with Progress() as progress:
            task = progress.add_task("analysing regions", total=regions)
            run = Workflow(components.engine, components.store, settings).analyse(
                study, models, actor="cli", send=send, progress=lambda n: progress.advance(task, n)
            )
    except (ModelError, NotFound, StoreError) as exc:
        typer.secho(f"analysis failed, nothing stored: {exc}", fg=typer.colors.RED, err=True)
        components.engine.dispose()
        raise typer.Exit(2) from exc
    queued = run.outbox_id
    components.engine.dispose()
    _print_differential(run)
    typer.echo(f"stored {len(run.stored)} result instances; SR {run.sr_instance_uid}")
    if queued is not None:
        typer.echo(f"preliminary ORU^R01 queued for {settings.lis_destination} (outbox id {queued})")
    typer.echo("AI-generated, research use only, not for clinical diagnosis.")


def _print_differential(run) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    differential = run.differential
    table = Table(title=f"Slide {run.container_identifier}: {run.cells} cells in {run.regions} regions")
    table.add_column("class")
    table.add_column("count", justify="right")
    table.add_column("%", justify="right")
    for code, count in differential.counts.items():
        if count:
            critical = " (critical)" if differential.critical.get(code) else ""
            table.add_row(code + critical, str(count), f"{differential.percent.get(code, 0.0):.1f}")
    ratio = "n/a" if differential.me_ratio is None else f"{differential.me_ratio:.2f}"
    table.caption = f"counted {differential.total_classed} of {differential.total}; M:E {ratio}"
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("import-scan")(import_scan_command)
    app.command("analyze")(analyze_command)
