"""`marrowlink bench …`: speed and memory against peers measured in the same run, JSON out.

Benchmarks, never timed tests: absolute times on shared machines are noisy, so every result carries
the peer's number from the same run and the ratio between them. The benchmarks themselves live in
`integration.bench`; this module is the only one that imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

bench = typer.Typer(help="Benchmarks (JSON): wsi, store, ai, mllp, pipeline. Peers run in the same process tree.")

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (default: readable).")]


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        typer.echo(f"{key}: {value}")


@bench.command("wsi")
def bench_wsi(
    as_json: JsonOption = False,
    fovs: Annotated[int, typer.Option(help="FOVs in the slide.")] = 50,
    seed: Annotated[int, typer.Option(help="Virtual slide seed.")] = 1,
    peers: Annotated[bool, typer.Option(help="Also run OrthancWSIDicomizer and wsidicomizer.")] = True,
    repeat: Annotated[int, typer.Option(help="Runs of each converter, taking turns; medians are reported.", min=1)] = 3,
) -> None:
    """Encode one slide (overview + FOVs) as DICOM WSI, beside OrthancWSIDicomizer and wsidicomizer."""
    from integration.bench.wsi import run_bench

    _emit(run_bench(fovs=fovs, seed=seed, peers=peers, repeat=repeat), as_json)


@bench.command("store")
def bench_store(
    as_json: JsonOption = False,
    seconds: Annotated[float, typer.Option(help="Seconds per frames load round.")] = 4.0,
    rounds: Annotated[int, typer.Option(help="Frames load rounds (median reported).")] = 3,
    qido_sizes: Annotated[str, typer.Option(help="Index sizes for QIDO latency, comma-separated.")] = "10000,100000",
    orthanc: Annotated[bool, typer.Option(help="Measure Orthanc on the same data in the same run.")] = True,
    cstore: Annotated[bool, typer.Option(help="Also measure C-STORE MB/s beside dcmtk storescp.")] = True,
    http_workers: Annotated[
        int | None, typer.Option(help="HTTP processes of the served marrowlink (default: as `serve` chooses).")
    ] = None,
) -> None:
    """WADO-RS frames/s and p50/p99, QIDO p50 at 10k/100k, STOW and C-STORE MB/s, beside Orthanc and dcmtk.

    Ours is `marrowlink serve` in its own process tree, with its default HTTP worker processes (or
    --http-workers), as a site runs it.
    """
    from integration.bench.store import run_bench

    sizes = tuple(int(v) for v in qido_sizes.split(",") if v.strip())
    result = run_bench(
        seconds=seconds, rounds=rounds, qido_sizes=sizes, orthanc=orthanc, cstore=cstore, http_workers=http_workers
    )
    _emit(result, as_json)


@bench.command("ai")
def bench_ai(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    fovs: Annotated[int, typer.Option(help="FOVs for the compact pipeline.")] = 10,
    paper_fovs: Annotated[int, typer.Option(help="FOVs for the paper architectures (slow on CPU).")] = 2,
) -> None:
    """Inference speed: FOVs/s for seg+cls (compact and paper archs), AOI s per overview, peak memory."""
    from integration.bench.ai import run_bench, simulated_fovs

    images, source = simulated_fovs(max(fovs, paper_fovs))
    result = run_bench(fovs, paper_fovs, images, source)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench.command("mllp")
def bench_mllp(
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
    messages: Annotated[int, typer.Option(help="ORU messages to send.")] = 3000,
    orders: Annotated[int, typer.Option(help="Inbound orders to receive.")] = 300,
    destinations: Annotated[int, typer.Option(help="LIS peers (one in-order sender each).")] = 1,
    database_url: Annotated[str | None, typer.Option(help="Index DB (default: SQLite in a temp dir).")] = None,
) -> None:
    """Benchmark HL7: ORU/s end to end (outbox + MLLP + ACKs over loopback) and inbound orders/s."""
    import tempfile

    from integration.bench.mllp import run_bench
    from integration.database import open_index
    from integration.orders import CaseOrderHandler

    with tempfile.TemporaryDirectory(prefix="marrowlink-bench-") as tmp:
        engine = open_index(database_url or f"sqlite:///{Path(tmp) / 'index.sqlite3'}")
        try:
            result = run_bench(engine, CaseOrderHandler(), messages=messages, orders=orders, destinations=destinations)
        finally:
            engine.dispose()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>20}: {value}")


@bench.command("pipeline")
def bench_pipeline(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    slides: Annotated[int, typer.Option(help="Slides dropped at once per layout.", min=1)] = 3,
    fovs: Annotated[int, typer.Option(help="FOVs per slide (the scanner pace assumes 50).", min=1)] = 50,
    layouts: Annotated[str, typer.Option(help="Layouts, comma-separated: embedded, celery1, celery2.")] = (
        "embedded,celery1,celery2"
    ),
    broker: Annotated[str, typer.Option(help="Celery broker of the celery layouts.")] = (
        "amqp://guest:guest@127.0.0.1:5672//"
    ),
    database_url: Annotated[
        str,
        typer.Option(
            help="PostgreSQL admin URL for the celery layouts: a throw-away database mlbench_<hex> is created "
            "on its server for each and dropped afterwards."
        ),
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    models_dir: Annotated[
        Path | None, typer.Option(help="Models folder (seg/, cls/, aoi/) as MARROWLINK_MODELS_DIR; default: shipped.")
    ] = None,
) -> None:
    """Slides per hour end to end (drop → import → analysis → ORU acknowledged by a LIS) in each layout:
    `serve` alone on SQLite, and `serve` with 1 or 2 Celery workers on PostgreSQL; where the time goes per
    step. Progress goes to stderr."""
    from integration.bench.pipeline import run_bench

    names = tuple(name.strip() for name in layouts.split(",") if name.strip())
    try:
        result = run_bench(
            slides=slides, fovs=fovs, layouts=names, broker=broker, database_url=database_url, models_dir=models_dir
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _emit(result, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(bench, name="bench")
