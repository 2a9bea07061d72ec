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
) -> None:
    """Encode one slide (overview + FOVs) as DICOM WSI, beside OrthancWSIDicomizer and wsidicomizer."""
    from acquisition.wsi.bench import run_bench

    _emit(run_bench(fovs=fovs, seed=seed, peers=peers), as_json)


@bench.command("store")
def bench_store(
    as_json: JsonOption = False,
    seconds: Annotated[float, typer.Option(help="Seconds per frames load round.")] = 4.0,
    rounds: Annotated[int, typer.Option(help="Frames load rounds (median reported).")] = 3,
    qido_sizes: Annotated[str, typer.Option(help="Index sizes for QIDO latency, comma-separated.")] = "10000,100000",
    orthanc: Annotated[bool, typer.Option(help="Measure Orthanc on the same data in the same run.")] = True,
    cstore: Annotated[bool, typer.Option(help="Also measure C-STORE MB/s beside dcmtk storescp.")] = True,
) -> None:
    """WADO-RS frames/s and p50/p99, QIDO p50 at 10k/100k, STOW and C-STORE MB/s, beside Orthanc and dcmtk."""
    from dicom_store import bench_dicomweb
    from integration.database import open_index

    sizes = tuple(int(v) for v in qido_sizes.split(",") if v.strip())
    result: dict = {"dicomweb": bench_dicomweb.run(seconds=seconds, rounds=rounds, qido_sizes=sizes, orthanc=orthanc)}
    if cstore:
        from dicom_store.bench_dimse import measure_cstore

        result["cstore"] = measure_cstore(open_index=open_index)
    _emit(result, as_json)


def _register_peers() -> None:
    """The ai and hl7 benchmarks live with their packages' commands; they are offered here too."""
    from integration.commands.ai import bench_ai_command
    from integration.commands.hl7 import bench_mllp

    bench.command("ai")(bench_ai_command)
    bench.command("mllp")(bench_mllp)


def register(app: typer.Typer) -> None:
    _register_peers()
    app.add_typer(bench, name="bench")
