"""C-STORE throughput of our SCP against dcmtk's storescp, measured side by side in one run.

``marrowlink bench store --json`` calls :func:`measure_cstore` with a ``ServeCommand``: our receiver
is then ``marrowlink serve`` in its own process, as a site runs it, like storescp in its own. The
sender is dcmtk ``storescu -R -xy`` for both receivers (the WSI goes in its JPEG syntax, no
transcoding), so the ratio compares receivers only; absolute MB/s on a shared machine are noisy, the
ratio much less.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage, generate_uid
from sqlalchemy import Engine

from integration.bench.load import ServeCommand, free_port, wait_listening

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
_ROOT = "1.2.826.0.1.3680043.8.498."


def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def _tiles(count: int, tile: int = 256) -> list[bytes]:
    """A few distinct JPEG tiles of realistic size (noise keeps them from compressing to nothing)."""
    import imagecodecs

    rng = np.random.default_rng(7)
    tiles = []
    for _ in range(count):
        pixels = np.full((tile, tile, 3), (225, 195, 205), dtype=np.uint8)
        pixels += rng.integers(0, 30, pixels.shape, dtype=np.uint8)
        tiles.append(imagecodecs.jpeg8_encode(pixels, level=85))
    return tiles


def write_wsi_series(folder: Path, *, size_mb: float = 61, instances: int = 8) -> list[Path]:
    """A WSI series of ``instances`` multi-frame JPEG instances, about ``size_mb`` MB in all."""
    folder.mkdir(parents=True, exist_ok=True)
    tiles = _tiles(16)
    tile_bytes = statistics.mean(len(t) for t in tiles)
    frames = max(1, int(size_mb * 1e6 / instances / tile_bytes))
    study, series = generate_uid(_ROOT), generate_uid(_ROOT)
    paths = []
    for number in range(1, instances + 1):
        ds = Dataset()
        ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
        ds.SOPInstanceUID = generate_uid(_ROOT)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "BENCH^WSI", "BENCH", "BENCH1"
        ds.Modality, ds.InstanceNumber = "SM", number
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        ds.DimensionOrganizationType = "TILED_FULL"
        side = int(np.ceil(np.sqrt(frames)))
        ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = side * 256
        ds.NumberOfFrames = frames
        ds.Rows = ds.Columns = 256
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = encapsulate([tiles[i % len(tiles)] for i in range(frames)])
        ds["PixelData"].VR = "OB"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        path = folder / f"wsi-{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _send(port: int, files: list[Path], called_ae: str) -> float:
    """Seconds dcmtk storescu takes to send ``files`` over one association."""
    started = time.perf_counter()
    done = subprocess.run(
        [STORESCU, "-R", "-xy", "-aec", called_ae, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def _ours_once(work: Path, files: list[Path], open_index: Callable[[str], Engine], warm: list[Path]) -> float:
    from dicom_store.dimse import DimseServer
    from dicom_store.store import Store

    run = Path(tempfile.mkdtemp(dir=work))
    engine = open_index(f"sqlite:///{run / 'index.sqlite3'}")
    server = DimseServer(Store(engine, run / "blobs"), host="127.0.0.1", port=free_port())
    server.start()
    try:
        _send(server.address[1], warm, server.ae_title)
        return _send(server.address[1], files, server.ae_title)
    finally:
        server.stop()
        engine.dispose()
        shutil.rmtree(run, ignore_errors=True)


def _served_once(work: Path, files: list[Path], serve: ServeCommand, warm: list[Path]) -> float:
    """Into ``marrowlink serve`` (its own process, all its HTTP workers up before the clock starts)."""

    run = Path(tempfile.mkdtemp(dir=work))
    serve.open_index(f"sqlite:///{run / 'index.sqlite3'}").dispose()
    http_port, dicom_port = free_port(), free_port()
    with open(run.parent / f"serve-{dicom_port}.log", "wb") as log:
        process = subprocess.Popen(
            serve.argv(run, http_port, dicom_port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=serve.environment(),
        )
    try:
        _wait_for_port(dicom_port, timeout=60)
        wait_listening(http_port, serve.http_workers, process)
        _send(dicom_port, warm, "MARROWLINK")
        return _send(dicom_port, files, "MARROWLINK")
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(run, ignore_errors=True)


def _dcmtk_once(work: Path, files: list[Path], warm: list[Path]) -> float:
    out = Path(tempfile.mkdtemp(dir=work))
    port = free_port()
    # TCP_NODELAY=1: without it Nagle's algorithm holds dcmtk to about 90 MB/s (docs/architecture.md §7).
    process = subprocess.Popen(
        [STORESCP, "-aet", "STORESCP", "+xa", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        _wait_for_port(port)
        _send(port, warm, "STORESCP")
        return _send(port, files, "STORESCP")
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(out, ignore_errors=True)


def measure_cstore(
    work_dir: Path | None = None,
    *,
    size_mb: float = 61,
    instances: int = 8,
    repeats: int = 5,
    open_index: Callable[[str], Engine] | None = None,
    serve: ServeCommand | None = None,
) -> dict[str, Any]:
    """C-STORE MB/s of a multi-frame JPEG WSI series into our SCP and into dcmtk storescp.

    Runs alternate between the two receivers (so drifting machine load hits both alike); each
    receiver's MB/s is the median of ``repeats`` runs. Every run of ours uses a fresh store (the
    duplicate policy would refuse a second copy) on a SQLite index made by ``open_index(url)``,
    created before the clock starts. With ``serve``, ours is that server in its own process (its
    AE title must be MARROWLINK); without, a ``DimseServer`` in this process. Before the clock starts
    each receiver gets one small instance over its own association (a server that has run a while,
    as at a site: no first-use costs such as statement compilation in the timed run).
    """
    if open_index is None:
        from integration.database import open_index
    for tool in (STORESCU, STORESCP):
        if not Path(tool).exists():
            raise FileNotFoundError(f"dcmtk's {tool} is needed (apt-get install dcmtk)")
    work = Path(tempfile.mkdtemp(prefix="bench-dimse-", dir=work_dir))
    try:
        files = write_wsi_series(work / "wsi", size_mb=size_mb, instances=instances)
        warm = write_wsi_series(work / "warm", size_mb=0.5, instances=1)
        total = sum(p.stat().st_size for p in files)
        ours, dcmtk = [], []
        for _ in range(repeats):
            if serve is not None:
                ours.append(_served_once(work, files, serve, warm))
            else:
                ours.append(_ours_once(work, files, open_index, warm))
            dcmtk.append(_dcmtk_once(work, files, warm))
        ours_mb_s = total / 1e6 / statistics.median(ours)
        dcmtk_mb_s = total / 1e6 / statistics.median(dcmtk)
        return {
            "benchmark": "c-store",
            "sender": "dcmtk storescu -R -xy (one association; one small instance before, untimed)",
            "receiver": "marrowlink serve (own process)" if serve is not None else "DimseServer in the bench process",
            "instances": instances,
            "bytes": total,
            "frames_per_instance": _frames_per_instance(files[0]),
            "repeats": repeats,
            "marrowlink_mb_s": round(ours_mb_s, 1),
            "dcmtk_storescp_mb_s": round(dcmtk_mb_s, 1),
            "ratio_vs_dcmtk": round(ours_mb_s / dcmtk_mb_s, 2),
            "marrowlink_seconds": [round(t, 3) for t in ours],
            "dcmtk_storescp_seconds": [round(t, 3) for t in dcmtk],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _frames_per_instance(path: Path) -> int:
    import pydicom

    return int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)


if __name__ == "__main__":  # pragma: no cover - manual run: python -m integration.bench.dimse
    import json

    print(json.dumps(measure_cstore(), indent=2))
