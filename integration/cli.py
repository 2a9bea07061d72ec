"""The `marrowlink` command line.

Heavy imports (TensorFlow, pynetdicom, FastAPI) happen inside the commands, so `--help` is instant.
Every command that touches the store takes `--data DIR` (or MARROWLINK_DATA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="marrowlink",
    help="AI bone-marrow smear differentials over DICOM and HL7. Research use only, not for clinical diagnosis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataOption = Annotated[
    Path | None,
    typer.Option("--data", envvar="MARROWLINK_DATA", help="Data directory (index + blob store)."),
]


@app.command()
def serve(
    data: DataOption = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (REST, DICOMweb, review pages).")] = None,
    dicom_port: Annotated[int | None, typer.Option(help="DIMSE SCP port.")] = None,
    mllp_port: Annotated[int | None, typer.Option(help="HL7 MLLP listener port.")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP bind address.")] = None,
    http_workers: Annotated[
        int | None,
        typer.Option(help="HTTP server processes on the HTTP port (0: one per CPU core, at most 8).", min=0, max=64),
    ] = None,
    watch: Annotated[
        Path | None,
        typer.Option(help="Watch folder: export folders dropped here are imported, analysed and reported."),
    ] = None,
) -> None:
    """Run everything: HTTP, DIMSE SCP, MLLP listener (HTTP in N processes), the pipeline. Ctrl-C stops it."""
    from integration.service import run_service
    from integration.settings import load_settings

    settings = load_settings(
        data_dir=data,
        http_port=http_port,
        dicom_port=dicom_port,
        mllp_port=mllp_port,
        http_host=host,
        http_workers=http_workers,
        watch_dir=watch,
    )
    run_service(settings)


@app.command()
def demo(
    data: DataOption = None,
    seed: Annotated[int, typer.Option(help="Virtual slide seed (the demo case number).")] = 7,
    profile: Annotated[str, typer.Option(help="Case profile: normal, aml, apl, hcl, lymphoma, ...")] = "aml",
    fovs: Annotated[int, typer.Option(help="40x fields of view to capture.")] = 20,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving when done.")] = True,
    http_port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
    dicom_port: Annotated[int | None, typer.Option(help="DIMSE SCP port.")] = None,
    mllp_port: Annotated[int | None, typer.Option(help="HL7 MLLP listener port.")] = None,
) -> None:
    """The whole workflow on a virtual slide: HL7 order, scan, DICOM import, AI analysis, ORU to a LIS."""
    from integration.demo import DemoCase, run_demo, start_lis_standin
    from integration.service import run_service
    from integration.settings import load_settings

    settings = load_settings(data_dir=data, http_port=http_port, dicom_port=dicom_port, mllp_port=mllp_port)
    if settings.watch_dir is None:  # the demo's scanner drops its export here; the pipeline does the rest
        settings.watch_dir = settings.data_dir / "demo" / "watch"
        settings.watch_settle_s = 1.0  # the demo drops whole folders (a rename)
    case = DemoCase(seed=seed, profile=profile, fovs=fovs)
    code = run_service(
        settings,
        starters=[start_lis_standin],
        after_start=lambda components: run_demo(components, case),
        exit_after=not serve_after,
    )
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("marrowlink"))


from integration.commands import register_all  # noqa: E402  (after the core commands, for help order)

register_all(app)


def main() -> None:
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:  # settings from flags, environment or MARROWLINK_CONFIG
        if exc.title != "Settings":  # a programming error elsewhere: keep its traceback
            raise
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        typer.echo(f"marrowlink: bad settings: {problems}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
