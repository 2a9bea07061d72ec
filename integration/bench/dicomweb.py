"""DICOMweb benchmarks, ours and Orthanc's side by side on the same data in one run.

- WADO-RS frames/s and p50/p99 with 8 concurrent clients (wrk) on a multi-frame JPEG WSI, random frames,
  ``Accept: multipart/related; type="application/octet-stream"; transfer-syntax=*`` (what DMV sends);
  Orthanc's DICOMweb plugin with the same Accept, and Orthanc's raw REST route
  ``/instances/{id}/frames/{n}/raw`` (the practical ceiling, docs/architecture.md §7).
- QIDO-RS p50 with 10k and 100k instances in the index (rows inserted directly, for speed).

Servers run as subprocesses so that the load generator and the server are separate processes, as in
production. ``marrowlink bench store`` passes a ``ServeCommand``: ours is then ``marrowlink serve`` as a
site runs it (its HTTP worker processes, migrated index). ``run()`` returns a dict;
``python -m integration.bench.dicomweb --json`` prints it (there with ``--workers`` processes of a
bare uvicorn over the app).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from integration.bench.load import (
    ACCEPT,
    BENCH_TOKEN,
    ORTHANC,
    OrthancPeer,
    ServeCommand,
    ServerUnderTest,
    check_frame,
    wrk_frames,
)

_ROOT = "1.2.826.0.1.3680043.8.498."


def make_wsi(path: Path, frames: int = 4720, tile: int = 256, seed: int = 0) -> dict[str, str]:
    """A TILED_FULL JPEG WSI level of ``frames`` tiles of about 8 KB (64 distinct tiles, cycled)."""
    import imagecodecs
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage, generate_uid

    rng = np.random.default_rng(seed)
    distinct = []
    for _ in range(64):
        pixels = np.full((tile, tile, 3), (228, 196, 210), np.uint8)
        noise = rng.integers(-16, 16, (tile // 4, tile // 4, 3))
        pixels = np.clip(pixels + np.kron(noise, np.ones((4, 4, 1))).astype(int), 0, 255).astype(np.uint8)
        distinct.append(imagecodecs.jpeg8_encode(pixels, level=80))
    across = int(np.ceil(np.sqrt(frames)))
    ds = Dataset()
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid(_ROOT) for _ in range(3))
    ds.FrameOfReferenceUID = generate_uid(_ROOT)
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "BENCH^WSI", "BENCH", "BENCH1"
    ds.StudyDate, ds.StudyTime, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20261125", "120000", "SM", 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns = across * tile
    ds.TotalPixelMatrixRows = int(np.ceil(frames / across)) * tile
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = tile
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([distinct[i % 64] for i in range(frames)])
    ds["PixelData"].VR = "OB"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID}


def fill_index(engine, instances: int, per_study: int = 10) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """``instances`` index rows (one series per study) inserted in bulk; returns UIDs to query for."""
    from dicom_store.models import Instance, Series, Study

    now = datetime.now(UTC)
    studies, series, rows = [], [], []
    for s in range(instances // per_study):
        study_uid, series_uid = f"{_ROOT}1.{s + 1}", f"{_ROOT}2.{s + 1}"
        name = f"PATIENT{s % 5000:04d}^GIVEN"
        studies.append(
            {
                "study_instance_uid": study_uid,
                "patient_id": f"P{s:06d}",
                "patient_name": name,
                "patient_name_search": name.replace("^", " "),
                "study_date": f"2026{(s % 12) + 1:02d}{(s % 28) + 1:02d}",
                "accession_number": f"A{s:07d}",
                "created_at": now,
            }
        )
        series.append(
            {
                "series_instance_uid": series_uid,
                "study_instance_uid": study_uid,
                "modality": "SM" if s % 3 else "SR",
                "created_at": now,
            }
        )
        for i in range(per_study):
            rows.append(
                {
                    "sop_instance_uid": f"{_ROOT}3.{s + 1}.{i + 1}",
                    "series_instance_uid": series_uid,
                    "study_instance_uid": study_uid,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.77.1.6",
                    "instance_number": i + 1,
                    "number_of_frames": 1,
                    "transfer_syntax_uid": "1.2.840.10008.1.2.4.50",
                    "path": f"bench/{s}/{i}.dcm",
                    "size": 1,
                    "created_at": now,
                }
            )
    with engine.begin() as connection:
        connection.execute(Study.__table__.insert(), studies)  # type: ignore[attr-defined]
        connection.execute(Series.__table__.insert(), series)  # type: ignore[attr-defined]
        for start in range(0, len(rows), 20000):
            connection.execute(Instance.__table__.insert(), rows[start : start + 20000])  # type: ignore[attr-defined]
    middle = len(studies) // 2
    return {
        "study": studies[middle]["study_instance_uid"],
        "series": series[middle]["series_instance_uid"],
        "patient_id": studies[middle]["patient_id"],
        "sop": f"{_ROOT}3.{middle + 1}.5",
    }


# ---- our server ------------------------------------------------------------------------------------------


def _open_index(serve: ServeCommand | None) -> Any:
    """The index the server under test expects: the production one (migrated) or the bare tables."""
    from integration.database import open_index

    return serve.open_index if serve is not None else open_index


def bench_frames(
    folder: Path,
    *,
    frames: int = 4720,
    seconds: float = 5.0,
    connections: int = 8,
    orthanc: bool = True,
    stack: str = "api",
    rounds: int = 3,
    serve: ServeCommand | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Ours and Orthanc's raw route measured in alternation (``rounds`` times each), both servers up.

    On a shared machine the load changes from second to second; alternating short runs and reporting
    the median and the best of each keeps the ratio meaningful. Orthanc's DICOMweb frames route is
    measured once (it serves a few frames per second).
    """
    data = folder / "frames-data"
    (data / "blobs").mkdir(parents=True)
    wsi = data / "wsi.dcm"
    uids = make_wsi(wsi, frames)
    from dicom_store.store import Store

    engine = _open_index(serve)(f"sqlite:///{data}/index.sqlite3")
    Store(engine, data / "blobs").store_file(wsi)
    engine.dispose()
    first = _first_frame(wsi)
    path = f"/studies/{uids['study']}/series/{uids['series']}/instances/{uids['instance']}/frames/"
    result: dict[str, Any] = {
        "frames_in_instance": frames,
        "frame_bytes": len(first),
        "connections": connections,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "accept": ACCEPT,
    }
    server = ServerUnderTest(data, stack, command=serve, workers=workers)
    result["http_processes"] = server.workers
    peer = OrthancPeer(folder) if orthanc and Path(ORTHANC).exists() else None
    try:
        check_frame(f"{server.url}{path}1", ACCEPT, first)
        host = f"http://127.0.0.1:{server.port}"
        ours_runs, raw_runs = [], []

        def ours() -> dict[str, float]:
            return wrk_frames(
                host,
                server.prefix + path,
                "",
                frames,
                seconds=seconds,
                connections=connections,
                server_pid=server.pids,
            )

        ours()  # warm-up: page cache, frame-table cache, connections
        raw = None
        if peer is not None:
            orthanc_id = peer.upload(wsi)
            check_frame(f"{peer.url}/instances/{orthanc_id}/frames/0/raw", "*/*", first)  # 0-based

            def raw() -> dict[str, float]:
                return wrk_frames(
                    peer.url,
                    f"/instances/{orthanc_id}/frames/",
                    "/raw",
                    frames,
                    seconds=seconds,
                    connections=connections,
                    first=0,
                    server_pid=peer.process.pid,
                )

            raw()
        for _ in range(rounds):
            ours_runs.append(ours())
            if raw is not None:
                raw_runs.append(raw())
        result["marrowlink"] = _summary(ours_runs) | {
            "stack": "marrowlink serve" if serve is not None and stack == "api" else stack
        }
        # the same HTTP server in as many processes, with a handler that does nothing
        ceiling = ServerUnderTest(data, "ceiling", workers=server.workers)
        try:
            host = f"http://127.0.0.1:{ceiling.port}"
            result["uvicorn_constant_answer"] = wrk_frames(
                host,
                ceiling.prefix + path,
                "",
                frames,
                seconds=seconds,
                connections=connections,
                server_pid=ceiling.pids,
            )
        finally:
            ceiling.stop()
        if peer is not None:
            result["orthanc_raw"] = _summary(raw_runs)
            result["orthanc_dicomweb"] = wrk_frames(
                peer.url, f"/dicom-web{path}", "", frames, seconds=max(seconds, 8), connections=connections
            )
            ours_fps, raw_fps = result["marrowlink"]["frames_per_s"], result["orthanc_raw"]["frames_per_s"]
            result["ratio_vs_orthanc_raw"] = round(ours_fps / raw_fps, 2)
            result["ratio_vs_orthanc_raw_best"] = round(
                result["marrowlink"]["best_frames_per_s"] / result["orthanc_raw"]["best_frames_per_s"], 2
            )
            cpu_ours = result["marrowlink"]["server_cpu_us_per_request"]
            cpu_raw = result["orthanc_raw"]["server_cpu_us_per_request"]
            if cpu_ours and cpu_raw:
                result["cpu_per_frame_orthanc_raw_over_ours"] = round(cpu_raw / cpu_ours, 2)
            result["ratio_vs_orthanc_dicomweb"] = round(
                ours_fps / max(result["orthanc_dicomweb"]["frames_per_s"], 0.01), 1
            )
    finally:
        server.stop()
        if peer is not None:
            peer.stop()
    return result


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Median of the runs (frames/s, p50, p99), plus the best frames/s and every run's frames/s."""
    rates = [r["frames_per_s"] for r in runs]
    cpu = [r["server_cpu_us_per_request"] for r in runs if "server_cpu_us_per_request" in r]
    return {
        "server_cpu_us_per_request": round(statistics.median(cpu), 1) if cpu else None,
        "frames_per_s": round(statistics.median(rates), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        "best_frames_per_s": max(rates),
        "runs_frames_per_s": rates,
        "non_2xx": sum(int(r["non_2xx"]) for r in runs),
    }


def _first_frame(path: Path) -> bytes:
    import pydicom

    from dicom_store.frames import read_frame, scan_pixel_data

    with open(path, "rb") as handle:
        ds = pydicom.dcmread(handle, stop_before_pixels=True)
        position = handle.tell()
        layout = scan_pixel_data(
            handle,
            position,
            path.stat().st_size,
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            number_of_frames=int(ds.NumberOfFrames),
            frame_bytes=None,
        )
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_frame(fd, layout, 1)
    finally:
        os.close(fd)


def bench_stow(
    folder: Path,
    *,
    frames: int = 4720,
    copies: int = 4,
    orthanc: bool = True,
    serve: ServeCommand | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """STOW-RS MB/s: ``copies`` WSI levels (distinct UIDs) in one multipart request, ours and Orthanc's."""
    data = folder / "stow-data"
    (data / "blobs").mkdir(parents=True)
    _open_index(serve)(f"sqlite:///{data}/index.sqlite3").dispose()
    parts = []
    for copy in range(copies):
        path = data / f"level{copy}.dcm"
        make_wsi(path, frames, seed=copy)
        parts.append(path.read_bytes())
        path.unlink()
    boundary = "bench-stow-boundary-7f3a"
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Authorization": f"Bearer {BENCH_TOKEN}",
    }
    megabytes = len(body) / 1e6
    result: dict[str, Any] = {"request_mb": round(megabytes, 1), "instances": copies}

    body_path = data / "stow-body.bin"
    body_path.write_bytes(body)
    del body, parts

    def post(url: str) -> float:
        """curl as the client: a Python client is slower than either server (measured: httpx ~35 MB/s)."""
        command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url, "-H", "Expect:"]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        command += ["--data-binary", f"@{body_path}"]
        start = time.perf_counter()
        status = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout.strip()
        elapsed = time.perf_counter() - start
        if status != "200":
            raise AssertionError(f"STOW to {url} answered {status}")
        return elapsed

    server = ServerUnderTest(data, "api", command=serve, workers=workers)
    try:
        elapsed = post(f"{server.url}/studies")
        result["marrowlink"] = {"mb_per_s": round(megabytes / elapsed, 1), "seconds": round(elapsed, 2)}
    finally:
        server.stop()
    if orthanc and Path(ORTHANC).exists():
        peer_folder = folder / "stow-orthanc"
        peer_folder.mkdir()
        peer = OrthancPeer(peer_folder)
        try:
            elapsed = post(f"{peer.url}/dicom-web/studies")
            result["orthanc_dicomweb"] = {"mb_per_s": round(megabytes / elapsed, 1), "seconds": round(elapsed, 2)}
        finally:
            peer.stop()
        result["ratio_vs_orthanc"] = round(result["marrowlink"]["mb_per_s"] / result["orthanc_dicomweb"]["mb_per_s"], 2)
    return result


def bench_qido(
    folder: Path,
    sizes: tuple[int, ...] = (10_000, 100_000),
    repeats: int = 100,
    *,
    serve: ServeCommand | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """p50/p99 of typical QIDO searches with ``sizes`` instances indexed (sequential client, keep-alive)."""
    results: dict[str, Any] = {}
    for size in sizes:
        data = folder / f"qido-{size}"
        (data / "blobs").mkdir(parents=True)
        engine = _open_index(serve)(f"sqlite:///{data}/index.sqlite3")
        uids = fill_index(engine, size)
        engine.dispose()
        server = ServerUnderTest(data, "api", command=serve, workers=workers)
        queries = {
            "studies_by_patient_id": ("/studies", {"PatientID": uids["patient_id"]}),
            "studies_by_name_wildcard": ("/studies", {"PatientName": "PATIENT01*", "limit": "25"}),
            "studies_modalities_sm": ("/studies", {"ModalitiesInStudy": "SM", "limit": "25"}),
            "series_of_study": (f"/studies/{uids['study']}/series", {}),
            "instances_of_series": (f"/studies/{uids['study']}/series/{uids['series']}/instances", {}),
            "instance_by_uid": ("/instances", {"SOPInstanceUID": uids["sop"]}),
        }
        per_query: dict[str, Any] = {}
        all_times: list[float] = []
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for name, (path, params) in queries.items():
                    times = []
                    for attempt in range(repeats + 5):
                        start = time.perf_counter()
                        response = client.get(path, params=params)
                        elapsed = (time.perf_counter() - start) * 1000
                        response.raise_for_status()
                        if not response.json():
                            raise AssertionError(f"QIDO {name} matched nothing")
                        if attempt >= 5:
                            times.append(elapsed)
                    times.sort()
                    per_query[name] = {
                        "p50_ms": round(statistics.median(times), 2),
                        "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
                    }
                    all_times += times
        finally:
            server.stop()
        results[str(size)] = {"p50_ms": round(statistics.median(all_times), 2), "queries": per_query}
    return results


def run(
    workdir: Path | None = None,
    *,
    frames: int = 4720,
    seconds: float = 4.0,
    rounds: int = 3,
    connections: int = 8,
    qido_sizes: tuple[int, ...] = (10_000, 100_000),
    orthanc: bool = True,
    stack: str = "api",
    stow: bool = True,
    serve: ServeCommand | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Everything, in one run on this machine; absolute numbers are noisy, ratios are the point.

    ``serve``: run ours as the production server (see ``ServeCommand``); else ``workers`` processes of
    a bare uvicorn over the app.
    """
    folder = Path(tempfile.mkdtemp(prefix="bench-dicomweb-", dir=workdir))
    ours = {"serve": serve, "workers": workers}
    try:
        return {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "wado_frames": bench_frames(
                folder,
                frames=frames,
                seconds=seconds,
                connections=connections,
                orthanc=orthanc,
                stack=stack,
                rounds=rounds,
                **ours,
            ),
            "stow": bench_stow(folder, frames=frames, orthanc=orthanc, **ours) if stow else {},
            "qido": bench_qido(folder, qido_sizes, **ours) if qido_sizes else {},
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4720)
    parser.add_argument("--seconds", type=float, default=4.0, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of ours and Orthanc's raw route")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--qido", default="10000,100000", help="index sizes, comma-separated; empty to skip")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--no-stow", action="store_true")
    parser.add_argument("--stack", choices=["api", "dicomweb"], default="api")
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    parser.add_argument("--json", action="store_true", help="print JSON (default: indented JSON anyway)")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.qido.split(",") if s.strip())
    result = run(
        frames=args.frames,
        seconds=args.seconds,
        rounds=args.rounds,
        connections=args.connections,
        qido_sizes=sizes,
        orthanc=not args.no_orthanc,
        stack=args.stack,
        stow=not args.no_stow,
        workers=args.workers,
    )
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
