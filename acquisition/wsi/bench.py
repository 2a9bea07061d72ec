"""`marrowlink bench wsi`: encoding one slide (overview + FOVs) beside two peer dicomizers.

Each converter runs in its own process (wall time and peak RSS from wait4), on the same pixels:
ours reads the Metafer export (FOV JPEGs + overview); OrthancWSIDicomizer gets the FOVs packed into
one JPEG mosaic plus the overview (it takes one image per run, so the two runs are summed) and builds
its full pyramid; wsidicomizer gets the mosaic as a tiled JPEG TIFF (it copies those tiles without
re-encoding, which favours it) and adds the missing pyramid levels. wsidicomizer pins an older
wsidicom than ours, so it runs from its own virtual environment, created on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WSIDICOMIZER = "wsidicomizer==0.26.1"
PEER_VENV = Path(os.environ.get("MARROWLINK_BENCH_VENV", Path.home() / ".cache" / "marrowlink" / "wsidicomizer-venv"))

_OURS = """
import sys, time
from pathlib import Path
from acquisition.metafer import read_metafer_export
from acquisition.wsi import SlideContext
from integration.scans import encode_manifest
manifest = read_metafer_export(sys.argv[1])
context = SlideContext(container_identifier=manifest.barcode, uid_root="1.2.826.0.1.3680043.8.498.")
datasets = encode_manifest(manifest, context)
out = Path(sys.argv[2])
for i, ds in enumerate(datasets):
    ds.save_as(out / f"{i}.dcm", enforce_file_format=True)
"""


def _run(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{command[0]} failed ({code}): {stderr[-2000:]}")
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


_PREPARE = """
import sys
from pathlib import Path
from acquisition.wsi.bench import make_input, make_mosaic
folder = Path(sys.argv[1])
export = make_input(folder, fovs=int(sys.argv[2]), seed=int(sys.argv[3]))
if sys.argv[4] == "1":
    make_mosaic(export, folder)
"""


def read_overview_path(export: Path) -> Path:
    from acquisition.metafer import read_metafer_export

    overview = read_metafer_export(export).overview
    if overview is None:
        raise RuntimeError(f"{export}: no overview")
    return overview.file


def make_input(folder: Path, *, fovs: int, seed: int) -> Path:
    from acquisition import plan_scan, simulate_slide, write_metafer_export

    slide = simulate_slide(seed, "normal")
    overview = slide.render_overview()
    positions = plan_scan(overview, n=fovs)
    write_metafer_export(slide, folder / "export", positions, overview=overview, ground_truth=False)
    return folder / "export"


def make_mosaic(export: Path, folder: Path) -> tuple[Path, Path, Path]:
    """The FOVs packed into one image (JPEG for Orthanc, tiled JPEG TIFF for wsidicomizer)."""
    import imagecodecs
    import tifffile

    from acquisition.metafer import read_metafer_export
    from acquisition.wsi.tiles import decode_image

    manifest = read_metafer_export(export)
    fovs = manifest.fovs
    across = int(np.ceil(np.sqrt(len(fovs) * 1496 / 2048)))
    down = int(np.ceil(len(fovs) / across))
    mosaic = np.full((down * 1496, across * 2048, 3), 255, np.uint8)
    for index, fov in enumerate(fovs):
        r, c = divmod(index, across)
        mosaic[r * 1496 : (r + 1) * 1496, c * 2048 : (c + 1) * 2048] = decode_image(fov.file.read_bytes())
    jpeg = folder / "mosaic.jpg"
    jpeg.write_bytes(imagecodecs.jpeg8_encode(mosaic, level=90))
    tiff = folder / "mosaic.tiff"
    tifffile.imwrite(
        tiff,
        mosaic,
        tile=(256, 256),
        compression="jpeg",
        compressionargs={"level": 90},
        photometric="rgb",
        resolution=(1e4 / fovs[0].pixel_size_um, 1e4 / fovs[0].pixel_size_um),
        resolutionunit="CENTIMETER",
    )
    return jpeg, tiff, manifest.overview.file


def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", WSIDICOMIZER, "tifffile"], check=True)
    return python


def run_bench(fovs: int = 50, seed: int = 1, peers: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {"fovs": fovs, "seed": seed, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="marrowlink-bench-wsi-") as tmp:
        folder = Path(tmp)
        # Inputs are made in a child process: a child forked from a parent that holds the simulated
        # slide would start with the parent's resident memory and spoil every peak-RSS number.
        subprocess.run(
            [sys.executable, "-c", _PREPARE, str(folder), str(fovs), str(seed), "1" if peers else "0"], check=True
        )
        export = folder / "export"
        out = folder / "ours"
        out.mkdir()
        result["marrowlink"] = _run([sys.executable, "-c", _OURS, str(export), str(out)])
        result["marrowlink"]["output_mb"] = round(sum(p.stat().st_size for p in out.iterdir()) / 1e6, 1)
        if peers:
            jpeg, tiff = folder / "mosaic.jpg", folder / "mosaic.tiff"
            overview = read_overview_path(export)
            result["peer_input"] = {"mosaic_pixels": list(imagecodecs_shape(jpeg)), "overview": overview.name}
            orthanc = shutil.which("OrthancWSIDicomizer")
            if orthanc:
                runs = []
                for name, image in (("mosaic", jpeg), ("overview", overview)):
                    target = folder / f"orthanc-{name}"
                    target.mkdir()
                    runs.append(
                        _run(
                            [
                                orthanc,
                                str(image),
                                "--folder",
                                str(target),
                                "--tile-width",
                                "256",
                                "--tile-height",
                                "256",
                                "--compression",
                                "jpeg",
                                "--jpeg-quality",
                                "90",
                                "--pyramid",
                                "1",
                                "--threads",
                                str(os.cpu_count() or 1),
                                "--max-size",
                                "0",
                            ]
                        )
                    )
                result["orthanc_wsi_dicomizer"] = {
                    "seconds": round(sum(r["seconds"] for r in runs), 3),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                }
            try:
                python = peer_python()
                target = folder / "wsidicomizer"
                result["wsidicomizer"] = _run(
                    [
                        str(python.parent / "wsidicomizer"),
                        "-i",
                        str(tiff),
                        "-o",
                        str(target),
                        "--add-missing-levels",
                        "-w",
                        str(os.cpu_count() or 1),
                    ]
                )
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                result["wsidicomizer"] = {"error": str(exc)[-500:]}
        peer_times = [
            v["seconds"]
            for k, v in result.items()
            if k in ("orthanc_wsi_dicomizer", "wsidicomizer") and isinstance(v, dict) and "seconds" in v
        ]
        if peer_times:
            result["speedup_vs_fastest_peer"] = round(min(peer_times) / result["marrowlink"]["seconds"], 2)
        result["targets"] = {"speedup_vs_fastest_peer": ">= 2", "marrowlink_seconds": "<= 2 (50 FOVs, 2 cores)"}
    return result


def imagecodecs_shape(path: Path) -> tuple[int, ...]:
    import imagecodecs

    return tuple(int(v) for v in imagecodecs.imread(path.read_bytes()).shape)


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_bench(), indent=2))
