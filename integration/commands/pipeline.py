"""`marrowlink watch`, `worker` and `jobs …`: the unattended pipeline from a shell.

`serve --watch DIR` does what `watch DIR` does inside the full service; `worker` is a Celery worker
for the scaled-out layout (docs/deployment.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

jobs_app = typer.Typer(help="Pipeline jobs (import, analyse): list them, retry a failed one, cancel one.")

DataOption = Annotated[
    Path | None,
    typer.Option("--data", envvar="MARROWLINK_DATA", help="Data directory (index + blob store)."),
]

JobId = Annotated[int, typer.Argument(help="Job id (see `jobs list`).")]


def watch_command(
    folder: Annotated[Path, typer.Argument(help="Folder the scanner's export folders are dropped into.")],
    data: DataOption = None,
) -> None:
    """Import, analyse and report every export folder dropped into FOLDER, until Ctrl-C (no HTTP, DICOM or MLLP
    listeners: `serve --watch FOLDER` runs the same inside the full service)."""
    import asyncio
    import signal

    from hl7 import OutboxDispatcher
    from integration.runner import start_pipeline
    from integration.service import build_components, configure_logging
    from integration.settings import load_settings

    configure_logging()
    settings = load_settings(data_dir=data, watch_dir=folder)
    components = build_components(settings)
    runtime = start_pipeline(components.engine, components.store, settings, watch=folder)

    async def send_results_until_stopped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        dispatcher = OutboxDispatcher(components.engine)  # results go out from here too (senders hold a lease)
        await dispatcher.start()
        try:
            await stop.wait()
        finally:
            await dispatcher.stop()

    try:
        asyncio.run(send_results_until_stopped())
    finally:
        runtime.stop()
        components.engine.dispose()


def worker_command(
    data: DataOption = None,
    name: Annotated[str | None, typer.Option(help="Celery node name (default marrowlink-PID@HOST).")] = None,
) -> None:
    """A Celery worker for import and analysis jobs (needs MARROWLINK_BROKER and a shared DATABASE_URL and data dir)."""
    from integration.settings import load_settings

    settings = load_settings(data_dir=data)
    if not settings.broker_url:
        typer.secho("marrowlink worker needs a broker: set MARROWLINK_BROKER (amqp://… or redis://…)",
                    fg=typer.colors.RED, err=True)  # fmt: skip
        raise typer.Exit(2)
    if not settings.database_url:
        typer.secho("marrowlink worker needs the shared index: set DATABASE_URL (postgresql+psycopg://…)",
                    fg=typer.colors.RED, err=True)  # fmt: skip
        raise typer.Exit(2)
    from integration.broker import celery_app, run_worker
    from integration.pipeline import Pipeline
    from integration.service import build_components, configure_logging

    configure_logging()
    components = build_components(settings)  # migrates; workers and serve take turns (advisory lock)
    pipeline = Pipeline(components.engine, components.store, settings)
    pipeline.models()  # loaded once, before the first job
    run_worker(celery_app(settings), pipeline, name=name)


def _jobs(data: Path | None):  # type: ignore[no-untyped-def]
    from integration.database import open_index
    from integration.jobs import Jobs
    from integration.settings import load_settings

    settings = load_settings(data_dir=data)
    return Jobs(open_index(settings.effective_database_url, max_connections=3))


@jobs_app.command("list")
def jobs_list(
    state: Annotated[list[str] | None, typer.Option(help="Only jobs in this state (repeatable).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    data: DataOption = None,
) -> None:
    """The newest jobs: step, slide, state, attempts and why one waits or failed."""
    from integration.jobs import job_dict

    jobs = _jobs(data)
    try:
        rows = [job_dict(job) for job in jobs.list(states=state or (), limit=limit)]
    finally:
        jobs.engine.dispose()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    typer.echo(f"{'ID':>5}  {'STEP':<8} {'SLIDE':<16} {'STATE':<10} {'TRIES':<6} {'SECONDS':>8}  REASON")
    for row in rows:
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else "-"
        tries = f"{row['attempts']}/{row['max_attempts']}"
        typer.echo(f"{row['id']:>5}  {row['step']:<8} {row['slide']:<16} {row['state']:<10} {tries:<6} "
                   f"{seconds:>8}  {row['reason']}")  # fmt: skip


@jobs_app.command("slides")
def jobs_slides(
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    data: DataOption = None,
) -> None:
    """Every ordered slide and where it stands (ordered, scanned, imported, … preliminary_sent, … final_sent)."""
    from integration.pipeline import slide_rows

    jobs = _jobs(data)
    try:
        rows = slide_rows(jobs.engine, limit=limit)
    finally:
        jobs.engine.dispose()
    for row in rows:
        line = f"{row['slide']:<16} {row['accession']:<16} {row['stage']:<17} {row['since']}  {row['reason']}"
        typer.echo(json.dumps(row) if as_json else line)


def _change(job_id: int, action: str, data: Path | None) -> None:
    jobs = _jobs(data)
    try:
        job = getattr(jobs, action)(job_id)
    except (LookupError, ValueError) as exc:
        typer.secho(f"not {action}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    finally:
        jobs.engine.dispose()
    typer.echo(f"job {job.id} ({job.step} {job.barcode}) is {job.state}")


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[int, typer.Argument(help="Job id (see `jobs list`).")], data: DataOption = None
) -> None:
    """Run a failed or cancelled job again (the running service or a worker picks it up)."""
    _change(job_id, "retry", data)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[int, typer.Argument(help="Job id (see `jobs list`).")], data: DataOption = None
) -> None:
    """Do not run this job (a waiting, queued, running or failed one)."""
    _change(job_id, "cancel", data)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_command)
    app.command("worker")(worker_command)
    app.add_typer(jobs_app, name="jobs")
