"""`marrowlink bench …`: speed and memory against peers measured in the same run, JSON out.

Benchmarks, never timed tests: absolute times on shared machines are noisy, so every result carries
the peer's number from the same run and the ratio between them.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

bench = typer.Typer(help="Benchmarks (JSON): wsi, store, ai, mllp. Peers run in the same process tree.")

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
    from acquisition.wsi.bench import run_bench

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
    from dicom_store import bench_dicomweb

    sizes = tuple(int(v) for v in qido_sizes.split(",") if v.strip())
    serve = _serve_command(http_workers)
    result: dict = {
        "dicomweb": bench_dicomweb.run(seconds=seconds, rounds=rounds, qido_sizes=sizes, orthanc=orthanc, serve=serve)
    }
    if cstore:
        from dicom_store.bench_dimse import measure_cstore

        result["cstore"] = measure_cstore(open_index=serve.open_index, serve=serve)
    _emit(result, as_json)


def _serve_command(http_workers: int | None):  # type: ignore[no-untyped-def]
    """`marrowlink serve` over a benchmark's data dir: public read, a write token for STOW, free ports."""
    import sys
    from pathlib import Path

    from dicom_store.dicomweb.loadtest import BENCH_TOKEN, ServeCommand, _free_port
    from integration.database import open_index
    from integration.service import http_worker_count
    from integration.settings import load_settings

    workers = http_worker_count(load_settings(http_workers=http_workers))

    script = Path(sys.executable).parent / "marrowlink"
    program = [str(script)] if script.exists() else [sys.executable, "-m", "integration.cli"]

    def argv(data: Path, http_port: int, dicom_port: int) -> list[str]:
        ports = ["--http-port", str(http_port), "--dicom-port", str(dicom_port), "--mllp-port", str(_free_port())]
        return [*program, "serve", "--data", str(data), *ports, "--http-workers", str(workers)]

    tokens = [{"token": BENCH_TOKEN, "user": "bench", "roles": ["integrator"]}]
    env: dict[str, str | None] = {
        # the data dir's SQLite index, whatever this shell's configuration names
        "DATABASE_URL": None,
        "MARROWLINK_DATABASE_URL": None,
        "MARROWLINK_CONFIG": None,
        "MARROWLINK_TOKENS": json.dumps(tokens),
        "MARROWLINK_DICOMWEB_PUBLIC_READ": "true",
        "MARROWLINK_AE_TITLE": "MARROWLINK",
        "MARROWLINK_DUPLICATE_POLICY": "reject",
        "MARROWLINK_MAX_REQUEST_BYTES": str(8 << 30),
    }
    return ServeCommand(argv=argv, open_index=open_index, http_workers=workers, env=env)


def _register_peers() -> None:
    """The ai and hl7 benchmarks live with their packages' commands; they are offered here too."""
    from integration.commands.ai import bench_ai_command
    from integration.commands.hl7 import bench_mllp

    bench.command("ai")(bench_ai_command)
    bench.command("mllp")(bench_mllp)


def register(app: typer.Typer) -> None:
    _register_peers()
    app.add_typer(bench, name="bench")
