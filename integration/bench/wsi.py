"""`marrowlink bench wsi`: encoding one slide (overview + FOVs) beside two peer dicomizers.

Each converter runs cold in its own process (wall time, CPU time and peak RSS from wait4), on the
same pixels: ours reads the Metafer export (FOV JPEGs + overview) and writes the instances to files;
OrthancWSIDicomizer gets the FOVs packed into one JPEG mosaic plus the overview (it takes one image per
run, so the two runs are summed) and builds its full pyramid; wsidicomizer gets the mosaic as a tiled
JPEG TIFF (it copies those tiles without re-encoding, which favours it) and adds the missing pyramid
levels. wsidicomizer pins an older wsidicom than ours, so it runs from its own virtual environment,
created on first use. With `repeat` > 1 (`python -m integration.bench.wsi --repeat 3`) the converters
take turns and the medians are reported, so a load change on a shared machine hits all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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
from acquisition.wsi.manifest import encode_manifest
manifest = read_metafer_export(sys.argv[1])
context = SlideContext(container_identifier=manifest.barcode, uid_root="1.2.826.0.1.3680043.8.498.")
datasets = encode_manifest(manifest, context)
out = Path(sys.argv[2])
for i, ds in enumerate(datasets):
    ds.save_as(out / f"{i}.dcm", enforce_file_format=True)
"""


# Each converter is started by this small launcher, not by the bench process itself: Linux hands a
# child the peak RSS of the process that forked it (wait4's ru_maxrss folds in the forking process's
# high-water mark at exec), so a bench process that once held a big image would inflate every number.
_LAUNCH = """
import json, os, sys, time
start = time.perf_counter()
quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ, file_actions=quiet)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    json.dump({"code": os.waitstatus_to_exitcode(status), "seconds": seconds,
               "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}, out)
"""


def _run(command: list[str]) -> dict[str, Any]:
    """Wall seconds, CPU seconds (user + system, all threads) and peak RSS (MB) of one child process.

    CPU seconds are the steadier number on a shared machine: wall time also counts the time other
    processes held the cores.
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        launched = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCH, report.name, *command], stderr=subprocess.PIPE, check=False
        )
        stderr = launched.stderr.decode(errors="replace")
        try:
            measured = json.loads(Path(report.name).read_text())
        except ValueError:
            raise RuntimeError(f"{command[0]} could not be started: {stderr[-2000:]}") from None
    if launched.returncode != 0 or measured["code"] != 0:
        raise RuntimeError(f"{command[0]} failed ({measured['code']}): {stderr[-2000:]}")
    return {
        "seconds": round(measured["seconds"], 3),
        "cpu_seconds": round(measured["cpu"], 3),
        "peak_rss_mb": round(measured["maxrss_kb"] / 1024, 1),
    }


_PREPARE = """
import sys
from pathlib import Path
from integration.bench.wsi import make_input, make_mosaic
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


def _orthanc(orthanc: str, images: list[tuple[str, Path]], folder: Path) -> dict[str, Any]:
    """OrthancWSIDicomizer takes one image per run: the mosaic, then the overview; summed."""
    runs = []
    folder.mkdir()
    for name, image in images:
        target = folder / name
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
    return {
        "seconds": round(sum(r["seconds"] for r in runs), 3),
        "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 3),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall and CPU seconds over the repeats, the highest peak RSS; every run's wall time."""
    summary = {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }
    if len(runs) > 1:
        summary["runs_seconds"] = [r["seconds"] for r in runs]
    return summary


def run_bench(fovs: int = 50, seed: int = 1, peers: bool = True, repeat: int = 1) -> dict[str, Any]:
    """Each converter `repeat` times, interleaved (ours, Orthanc, wsidicomizer, ours, ...), so that
    a change in the machine's load falls on all of them alike; medians are reported."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    result: dict[str, Any] = {"fovs": fovs, "seed": seed, "cpus": os.cpu_count(), "repeat": repeat}
    with tempfile.TemporaryDirectory(prefix="marrowlink-bench-wsi-") as tmp:
        folder = Path(tmp)
        # Inputs are made in a child process: a child forked from a parent that holds the simulated
        # slide would start with the parent's resident memory and spoil every peak-RSS number.
        subprocess.run(
            [sys.executable, "-c", _PREPARE, str(folder), str(fovs), str(seed), "1" if peers else "0"], check=True
        )
        export = folder / "export"

        def ours(target: Path) -> dict[str, Any]:
            target.mkdir()
            return _run([sys.executable, "-c", _OURS, str(export), str(target)])

        tools: dict[str, Any] = {"marrowlink": ours}
        if peers:
            jpeg, tiff = folder / "mosaic.jpg", folder / "mosaic.tiff"
            overview = read_overview_path(export)
            result["peer_input"] = {"mosaic_pixels": list(jpeg_shape(jpeg)), "overview": overview.name}
            orthanc = shutil.which("OrthancWSIDicomizer")
            if orthanc:
                tools["orthanc_wsi_dicomizer"] = lambda target: _orthanc(
                    orthanc, [("mosaic", jpeg), ("overview", overview)], target
                )
            try:
                python = peer_python()
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                result["wsidicomizer"] = {"error": str(exc)[-500:]}
            else:
                tools["wsidicomizer"] = lambda target: _run(
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
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in tools}
        output = 0
        for attempt in range(repeat):
            for name, tool in list(tools.items()):
                target = folder / f"{name}-{attempt}"
                # Write back what the previous converter (or the input preparation) left dirty in the
                # page cache first, so that no run pays for another's output.
                os.sync()
                try:
                    runs[name].append(tool(target))
                except RuntimeError as exc:
                    if name == "marrowlink":
                        raise
                    result[name] = {"error": str(exc)[-500:]}
                    del tools[name], runs[name]
                    continue
                if name == "marrowlink" and attempt == 0:
                    output = sum(p.stat().st_size for p in target.iterdir())
                shutil.rmtree(target, ignore_errors=True)
        for name, measured in runs.items():
            result[name] = _summary(measured)
        result["marrowlink"]["output_mb"] = round(output / 1e6, 1)
        for field, key in (("seconds", "speedup_vs_fastest_peer"), ("cpu_seconds", "cpu_ratio_vs_leanest_peer")):
            peers = [
                v[field]
                for k, v in result.items()
                if k in ("orthanc_wsi_dicomizer", "wsidicomizer") and isinstance(v, dict) and field in v
            ]
            if peers:
                result[key] = round(min(peers) / result["marrowlink"][field], 2)
        result["targets"] = {"speedup_vs_fastest_peer": ">= 2", "marrowlink_seconds": "<= 2 (50 FOVs, 2 cores)"}
    return result


def jpeg_shape(path: Path) -> tuple[int, int, int]:
    """(rows, columns, components) from a JPEG's frame header, without decoding it in this process."""
    data = path.read_bytes()
    at = 2
    while at + 4 <= len(data):
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            rows, columns = (int.from_bytes(data[at + i : at + i + 2], "big") for i in (5, 7))
            return rows, columns, data[at + 9]
        at += 2 + length
    raise ValueError(f"{path}: no JPEG frame header")


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fovs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each converter, interleaved; medians")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run_bench(args.fovs, args.seed, not args.no_peers, args.repeat), indent=2))
