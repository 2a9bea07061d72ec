"""`marrowlink bench store`: the archive as a site runs it (`marrowlink serve`), beside Orthanc and dcmtk.

DICOMweb (frames, QIDO, STOW) and C-STORE against the production server in its own process tree,
with its default HTTP worker processes, a migrated index and a write token for STOW only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from integration.bench import dicomweb
from integration.bench.dimse import measure_cstore
from integration.bench.load import BENCH_TOKEN, ServeCommand, free_port
from integration.database import open_index
from integration.service import http_worker_count
from integration.settings import load_settings


def serve_command(http_workers: int | None) -> ServeCommand:
    """`marrowlink serve` over a benchmark's data dir: public read, a write token for STOW, free ports."""
    workers = http_worker_count(load_settings(http_workers=http_workers))
    script = Path(sys.executable).parent / "marrowlink"
    program = [str(script)] if script.exists() else [sys.executable, "-m", "integration.cli"]

    def argv(data: Path, http_port: int, dicom_port: int) -> list[str]:
        ports = ["--http-port", str(http_port), "--dicom-port", str(dicom_port), "--mllp-port", str(free_port())]
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


def run_bench(
    *,
    seconds: float,
    rounds: int,
    qido_sizes: tuple[int, ...],
    orthanc: bool,
    cstore: bool,
    http_workers: int | None,
) -> dict[str, Any]:
    serve = serve_command(http_workers)
    result: dict[str, Any] = {
        "dicomweb": dicomweb.run(seconds=seconds, rounds=rounds, qido_sizes=qido_sizes, orthanc=orthanc, serve=serve)
    }
    if cstore:
        result["cstore"] = measure_cstore(open_index=serve.open_index, serve=serve)
    return result
