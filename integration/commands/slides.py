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
    folder: Annotated[Path, typer.Argument(help="Metafer export folder (manifest.json + images).")],
    accession: Annotated[str | None, typer.Option("--accession", help="Accession number of the case.")] = None,
    data: DataOption = None,
) -> None:
    """Validate a Metafer export folder and store it as DICOM VL Whole Slide Microscopy images."""
    from acquisition.metafer import MetaferExportError
    from dicom_store import StoreError
    from integration.scans import ImportError_, import_scan
    from integration.service import build_components
    from integration.settings import load_settings

    settings = load_settings(data_dir=data)
    components = build_components(settings)
    try:
        result = import_scan(
            folder, components.store, uid_root=settings.uid_root, accession_number=accession, engine=components.engine
        )
    except (MetaferExportError, ImportError_, StoreError) as exc:
        typer.secho(f"import failed, nothing stored: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    finally:
        components.engine.dispose()
    typer.echo(
        f"stored slide {result.container_identifier}: {len(result.sop_instance_uids)} instances, "
        f"{result.fovs} FOVs\nstudy {result.study_instance_uid}\nseries {result.series_instance_uid}"
    )


def register(app: typer.Typer) -> None:
    app.command("import-scan")(import_scan_command)
