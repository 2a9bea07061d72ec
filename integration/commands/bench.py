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


def register(app: typer.Typer) -> None:
    app.add_typer(bench, name="bench")
