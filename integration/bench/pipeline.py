"""`marrowlink bench pipeline`: does the unattended pipeline keep up with the scanner?

A Metafer scans a 50-FOV smear about every 2 minutes (30 slides an hour). Whether a site can run the
embedded layout (`serve --watch` alone, jobs in one thread on SQLite) or needs Celery workers on
PostgreSQL depends on slides per hour end to end: export folder dropped → import → analysis → results
stored → ORU (P) acknowledged by the LIS. This benchmark measures that with the real processes a site
runs (`marrowlink serve`, `marrowlink worker`), real orders over MLLP and a LIS stand-in that ACKs, and
says where the time goes per step from the durable job rows (integration.jobs).

Start-up (process start, migrations, model loading) is measured but not timed as throughput: every
layout is started and warmed up first (one small slide per job runner, because `serve` loads the
models on its first analysis), then all slides are dropped at once and the clock runs until the last
one is ``preliminary_sent``. Research use only, not for clinical diagnosis.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

#: A Metafer scans a 50-FOV slide about every 2 minutes.
SCANNER_PACE_SLIDES_PER_HOUR = 30.0
#: Layout name → Celery worker processes (0: jobs run in a thread inside `serve`).
LAYOUTS = {"embedded": 0, "celery1": 1, "celery2": 2}
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Seeds of the timed slides and of the warm-up slides (barcodes VM<seed>, distinct from each other).
FIRST_SEED, WARMUP_SEED = 7001, 7901
STOP_GRACE_S = 20.0


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the JSON)."""
    print(f"[bench pipeline {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- slides and orders ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """A virtual Metafer export made once, copied into each layout's watch folder."""

    folder: Path
    barcode: str
    accession: str


def make_scans(root: Path, count: int, fovs: int, first_seed: int, prefix: str) -> list[Scan]:
    """`count` AML smears (default scan area) with `fovs` FOVs each, written under `root`."""
    from acquisition import plan_scan, simulate_slide, write_metafer_export

    scans = []
    for number in range(count):
        seed = first_seed + number
        folder = root / f"{prefix}{number:04d}"
        slide = simulate_slide(seed, "aml")
        overview = slide.render_overview()
        write_metafer_export(slide, folder, plan_scan(overview, n=fovs), overview=overview)
        scans.append(Scan(folder, slide.barcode, f"MLB{prefix.upper()}{number:04d}"))
    return scans


def order_message(barcode: str, accession: str) -> str:
    """An OML^O21 naming the slide in SAC-3 (as tests/test_pipeline.py `order` sends them)."""
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261206081500||OML^O21^OML_O21|C{accession}|P|2.5.1",
            f"PID|1||P{accession}^^^HOSP^MR||Benchperson^Ada||19610203|F",
            f"ORC|NW|PL{accession}||{accession}||||||||1234^Doctor^Dora",
            f"OBR|1|PL{accession}||48807-2^Bone marrow aspiration report^LN|||20261206073000",
            f"SAC|||{barcode}",
        ]
    )


def send_orders(mllp_port: int, scans: list[Scan]) -> None:
    from hl7.mllp import send_message

    for scan in scans:
        reply = asyncio.run(send_message("127.0.0.1", mllp_port, order_message(scan.barcode, scan.accession)))
        if reply.code != "AA":
            raise RuntimeError(f"order {scan.accession} answered {reply.code}: {reply}")


def stage_copies(scans: list[Scan], watch: Path) -> list[Path]:
    """Copy each export to a hidden name in the watch folder (the watcher skips dot-names)."""
    hidden = []
    for scan in scans:
        target = watch / f".{scan.folder.name}.partial"
        shutil.copytree(scan.folder, target)
        hidden.append(target)
    return hidden


def drop(hidden: list[Path]) -> dict[str, float]:
    """Rename the staged copies to their visible names, as a copy tool finishes; folder name → epoch seconds."""
    dropped = {}
    for path in hidden:
        name = path.name[1 : -len(".partial")]
        dropped[name] = time.time()
        os.rename(path, path.parent / name)
    return dropped


# ---- the LIS ---------------------------------------------------------------------------------------------------


class LisPeer:
    """`hl7.standin.LisStandIn` on its own event loop thread: ACKs every ORU (AA) and notes when it came."""

    def __init__(self) -> None:
        from hl7.standin import LisStandIn

        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-lis", daemon=True)
        self.standin = LisStandIn(on_message=self._on_message)

    def _on_message(self, header: Any, message: str) -> None:
        with self._lock:
            self.received.append((time.time(), message))

    def __enter__(self) -> LisPeer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.standin.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.standin.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    @property
    def port(self) -> int:
        return self.standin.port

    def oru_times(self) -> dict[str, list[float]]:
        """Accession number (ORC-4) → when each ORU^R01 for it arrived (epoch seconds)."""
        found: dict[str, list[float]] = {}
        with self._lock:
            received = list(self.received)
        for moment, message in received:
            segments = [s.split("|") for s in message.replace("\n", "\r").split("\r")]
            msh = next((s for s in segments if s[0] == "MSH"), [])
            if len(msh) < 9 or not msh[8].startswith("ORU"):
                continue
            orc = next((s for s in segments if s[0] == "ORC"), [])
            accession = orc[4].split("^")[0] if len(orc) > 4 else ""
            found.setdefault(accession, []).append(moment)
        return found


# ---- processes -------------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A `marrowlink` process of the layout, its log file and how it is asked to stop."""

    name: str
    process: subprocess.Popen
    log_path: Path
    stop_signal: int

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(f"  {self.name}| {line}" for line in self.log().splitlines()[-lines:])


def marrowlink_program() -> list[str]:
    script = Path(sys.executable).parent / "marrowlink"
    return [str(script)] if script.exists() else [sys.executable, "-m", "integration.cli"]


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This shell's environment without any marrowlink configuration of its own, plus the layout's."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MARROWLINK_") and key not in ("DATABASE_URL", "MARROWLINK_CONFIG")
    }
    return {**inherited, **extra}


def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, stop_signal: int) -> Child:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return Child(name, process, log_path, stop_signal)


def stop_all(children: list[Child]) -> None:
    """SIGINT to serve, SIGTERM to workers; whatever still runs after STOP_GRACE_S is killed."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(child.stop_signal)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            progress(f"{child.name} did not stop within {STOP_GRACE_S:.0f} s: killed")
            try:
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, children: list[Child]) -> float:
    """Poll `condition` until true; seconds waited. Raises when a child exits or the time is up."""
    started = time.monotonic()
    while not condition():
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode} while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def serve_ready(http_port: int, mllp_port: int) -> bool:
    import socket

    import httpx

    try:
        if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1.0).status_code != 200:
            return False
    except httpx.HTTPError:
        return False
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", mllp_port)) == 0


# ---- databases and the broker ---------------------------------------------------------------------------------


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database `mlbench_<hex>` (its URL), dropped WITH (FORCE) afterwards."""
    name = f"mlbench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def queue_consumers(broker: str, queue: str) -> int:
    """How many consumers the job queue has now (0 when it does not exist yet)."""
    from celery import Celery

    app = Celery(broker=broker, set_as_current=False)
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=2)
        try:
            _, _, consumers = connection.default_channel.queue_declare(queue, passive=True)
        except Exception:  # no such queue yet
            return 0
        return int(consumers)


def claim_queue(broker: str, queue: str) -> int:
    """Make sure the run's job queue is ours alone, then drop leftover messages; how many were dropped.

    Each layout uses a queue of its own (MARROWLINK_BROKER_QUEUE), so another marrowlink on the same broker
    (a test run, another benchmark) neither takes this run's job ids nor gives it theirs. Refuse to start
    when the queue has consumers already.
    """
    from celery import Celery

    others = queue_consumers(broker, queue)
    if others:
        raise RuntimeError(f"the broker's queue {queue} has {others} consumer(s) of another run")
    app = Celery(broker=broker, set_as_current=False)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=2)
        try:
            return int(connection.default_channel.queue_purge(queue) or 0)
        except Exception:  # no such queue yet
            return 0


def stages(engine: Engine, barcodes: list[str]) -> dict[str, tuple[str, datetime | None, str]]:
    """Barcode → (stage, when it got there, reason) for the given slides."""
    from integration.cases import Slide

    with Session(engine) as session:
        rows = session.exec(select(Slide).where(col(Slide.barcode).in_(barcodes))).all()
        return {s.barcode: (s.stage, s.stage_at, s.stage_reason) for s in rows}


def failures(engine: Engine, barcodes: list[str]) -> list[str]:
    """Failed slides and failed jobs of the given slides, as readable lines."""
    from integration.jobs import Job, JobState

    with Session(engine) as session:
        jobs = session.exec(select(Job).where(col(Job.barcode).in_(barcodes))).all()
        found = [f"job {j.key} failed: {j.reason}" for j in jobs if j.state == JobState.FAILED.value]
    found += [f"slide {b} failed: {r}" for b, (s, _, r) in stages(engine, barcodes).items() if s == "failed"]
    return found


def retried(engine: Engine, barcodes: list[str]) -> set[str]:
    """Jobs of the given slides whose attempt failed and that wait for another, as readable lines."""
    from integration.jobs import Job, JobState

    with Session(engine) as session:
        jobs = session.exec(select(Job).where(col(Job.barcode).in_(barcodes))).all()
        return {f"job {j.key} attempt {j.attempts} failed: {j.reason}" for j in jobs
                if j.state == JobState.QUEUED.value and j.reason}  # fmt: skip


def all_sent(engine: Engine, barcodes: list[str]) -> bool:
    broken = failures(engine, barcodes)
    if broken:
        raise RuntimeError("; ".join(broken))
    now = stages(engine, barcodes)
    return all(now.get(b, ("",))[0] == "preliminary_sent" for b in barcodes)


def progress_check(
    engine: Engine,
    barcodes: list[str],
    label: str,
    since: float,
    retries: list[str],
    guard: Callable[[], None] | None = None,
) -> Callable[[], bool]:
    """A condition for `wait_until`: every slide preliminary_sent (raises when one failed for good); says on
    stderr how many are, and which attempts failed and are retried (noted in `retries`). `guard` is called
    every few seconds besides."""
    seen = [0]
    guarded = [0.0]

    def check() -> bool:
        if guard is not None and time.monotonic() - guarded[0] > 3.0:
            guarded[0] = time.monotonic()
            guard()
        for line in sorted(retried(engine, barcodes) - set(retries)):
            retries.append(line)
            progress(f"{label}: {line[:300]} (retried after a back-off)")
        done = all_sent(engine, barcodes)
        count = sum(1 for s, _, _ in stages(engine, barcodes).values() if s == "preliminary_sent")
        if count != seen[0]:
            seen[0] = count
            progress(f"{label}: {count}/{len(barcodes)} preliminary_sent, {time.time() - since:.1f} s")
        return done

    return check


def step_stats(engine: Engine, barcodes: list[str]) -> dict[str, dict[str, Any]]:
    """Per step (import, analyse): how long the jobs ran (median, max), how long they waited to start, tries."""
    from acquisition.timestamps import stored_utc
    from integration.jobs import Job, JobState, Step

    with Session(engine) as session:
        jobs = session.exec(select(Job).where(col(Job.barcode).in_(barcodes))).all()
    result: dict[str, dict[str, Any]] = {}
    for step in (Step.IMPORT.value, Step.ANALYSE.value):
        mine = [j for j in jobs if j.step == step]
        ran = [j.seconds for j in mine if j.state == JobState.DONE.value and j.seconds is not None]
        waited = [
            (stored_utc(j.started_at) - stored_utc(j.created_at)).total_seconds()
            for j in mine
            if j.started_at is not None
        ]
        result[step] = {
            "jobs": len(mine),
            "done": len(ran),
            "median_s": _round(statistics.median(ran)) if ran else None,
            "max_s": _round(max(ran)) if ran else None,
            "median_wait_s": _round(statistics.median(waited)) if waited else None,
            "max_attempts": max((j.attempts for j in mine), default=0),
        }
    return result


def phases(
    engine: Engine, scans: list[Scan], dropped: dict[str, float], orus: dict[str, list[float]]
) -> dict[str, float | None]:
    """Median seconds of each phase of a slide's way, from drop to its stage recorded as preliminary_sent:
    the watch folder taking it (settle time and ticks), each step's wait in the queue and its run, the ORU
    reaching the LIS after the analysis, and the scheduler noting the ACK."""
    from acquisition.timestamps import stored_utc
    from integration.jobs import Job, Step

    def at(moment: datetime | None) -> float | None:
        return stored_utc(moment).timestamp() if moment is not None else None

    barcodes = [s.barcode for s in scans]
    with Session(engine) as session:
        jobs = {(j.step, j.barcode): j for j in session.exec(select(Job).where(col(Job.barcode).in_(barcodes)))}
    now = stages(engine, barcodes)
    spans: dict[str, list[float]] = {}
    for scan in scans:
        imp, ana = jobs.get((Step.IMPORT.value, scan.barcode)), jobs.get((Step.ANALYSE.value, scan.barcode))
        if imp is None or ana is None:
            continue
        acked = orus.get(scan.accession, [None])[0]
        marks = [
            ("taken_by_watch", dropped[scan.folder.name], at(imp.created_at)),
            ("import_queued", at(imp.created_at), at(imp.started_at)),
            ("import", at(imp.started_at), at(imp.finished_at)),
            ("analyse_queued", at(ana.created_at), at(ana.started_at)),
            ("analyse", at(ana.started_at), at(ana.finished_at)),
            ("oru_acked_after_analysis", at(ana.finished_at), acked),
            ("sent_recorded_after_ack", acked, at(now.get(scan.barcode, ("", None, ""))[1])),
        ]
        for name, start, end in marks:
            if start is not None and end is not None:
                spans.setdefault(name, []).append(end - start)
    return {name: _round(statistics.median(values)) for name, values in spans.items()}


def _round(value: float) -> float:
    return round(value, 2) + 0.0  # never -0.0


# ---- one layout --------------------------------------------------------------------------------------------------


def run_layout(
    layout: str,
    scans: list[Scan],
    warmups: list[Scan],
    *,
    fovs: int,
    broker: str,
    admin_url: str,
    models_dir: Path | None,
    timeout_s: float,
) -> dict[str, Any]:
    """Start the layout, warm it up, drop every slide at once and time until the last is preliminary_sent;
    a layout that fails reports {"error": …} (with what it measured before) instead of raising."""
    workers = LAYOUTS[layout]
    result: dict[str, Any] = {"layout": layout, "slides": len(scans), "fovs_per_slide": fovs, "workers": workers,
                              "job_runner": "1 job thread inside serve" if workers == 0 else
                              f"{workers} Celery worker process(es), solo pool"}  # fmt: skip
    try:
        _run_layout(result, layout, scans, warmups, fovs=fovs, broker=broker, admin_url=admin_url,
                    models_dir=models_dir, timeout_s=timeout_s)  # fmt: skip
    except Exception as exc:  # setting up or cleaning up (no database, no broker, a drop that failed …)
        result.setdefault("error", f"{type(exc).__name__}: {exc}")
        progress(f"{layout}: FAILED: {type(exc).__name__}: {exc}")
    return result


def _run_layout(
    result: dict[str, Any],
    layout: str,
    scans: list[Scan],
    warmups: list[Scan],
    *,
    fovs: int,
    broker: str,
    admin_url: str,
    models_dir: Path | None,
    timeout_s: float,
) -> None:
    from integration.bench.load import free_port

    workers = LAYOUTS[layout]
    children: list[Child] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"marrowlink-bench-{layout}-")))
        data, watch = tmp / "data", tmp / "watch"
        data.mkdir()
        watch.mkdir()
        lis = stack.enter_context(LisPeer())
        env = {
            "MARROWLINK_LIS_DESTINATION": f"127.0.0.1:{lis.port}",
            "MARROWLINK_WATCH_SETTLE_S": "1",
            "MARROWLINK_WATCH_INTERVAL_S": "0.3",
            "MARROWLINK_HTTP_WORKERS": "1",
            "MARROWLINK_AE_TITLE": "MARROWLINK",
            # the benchmark's listeners answer on loopback only
            "MARROWLINK_DICOM_HOST": "127.0.0.1",
            "MARROWLINK_MLLP_HOST": "127.0.0.1",
        }
        if models_dir is not None:
            env["MARROWLINK_MODELS_DIR"] = str(models_dir.resolve())
        queue = f"marrowlink.bench.{uuid.uuid4().hex[:12]}"
        if workers:
            purged = claim_queue(broker, queue)
            if purged:
                progress(f"{layout}: purged {purged} leftover message(s) from the job queue")
            database_url = stack.enter_context(throwaway_database(admin_url))
            env |= {"MARROWLINK_BROKER": broker, "DATABASE_URL": database_url, "MARROWLINK_BROKER_QUEUE": queue}
        else:
            database_url = f"sqlite:///{(data / 'index.sqlite3').resolve()}"
        environment = child_environment(env)
        program = marrowlink_program()
        stack.callback(stop_all, children)  # runs before the database is dropped and the folders removed
        try:
            http_port, dicom_port, mllp_port = free_port(), free_port(), free_port()
            ports = ["--http-port", str(http_port), "--dicom-port", str(dicom_port), "--mllp-port", str(mllp_port)]
            argv = [*program, "serve", "--data", str(data), *ports, "--watch", str(watch)]
            progress(f"{layout}: starting serve" + (f" and {workers} worker(s)" if workers else ""))
            children.append(spawn("serve", argv, environment, tmp / "serve.log", signal.SIGINT))
            started = time.monotonic()
            wait_until(lambda: serve_ready(http_port, mllp_port), 180, "serve to answer", children)
            startup: dict[str, Any] = {"serve_s": _round(time.monotonic() - started)}
            if workers:
                startup["workers_s"] = start_workers(workers, program, data, environment, tmp, children)
            result["startup"] = startup

            def guard() -> None:
                """Another run's workers on the job queue would take this run's job ids (see `claim_queue`)."""
                consumers = queue_consumers(broker, queue)
                if consumers != workers and "warning" not in result:
                    result["warning"] = (
                        f"the job queue had {consumers} consumers during the run, not {workers}: another run used "
                        "the same broker, and these numbers may be wrong"
                    )
                    progress(f"{layout}: {result['warning']}")

            engine = create_engine(database_url)
            stack.callback(engine.dispose)

            progress(f"{layout}: ready {startup}; warming up with {len(warmups)} small slide(s)")
            send_orders(mllp_port, warmups)
            started = time.monotonic()
            drop(stage_copies(warmups, watch))
            barcodes = [s.barcode for s in warmups]
            retries = result.setdefault("retries", [])
            checks = guard if workers else None
            done = progress_check(engine, barcodes, f"{layout} warm-up", time.time(), retries, checks)
            wait_until(done, 900, "the warm-up slides", children)
            result["warmup_s"] = _round(time.monotonic() - started)

            send_orders(mllp_port, scans)
            hidden = stage_copies(scans, watch)
            progress(f"{layout}: dropping {len(scans)} slide(s) of {fovs} FOVs at once")
            dropped = drop(hidden)
            first_drop = min(dropped.values())
            barcodes = [s.barcode for s in scans]

            done = progress_check(engine, barcodes, layout, first_drop, retries, checks)
            wait_until(done, timeout_s, f"{len(scans)} slide(s) to be preliminary_sent", children)
            result |= measured(engine, lis, scans, dropped, first_drop)
            if workers:
                guard()
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            progress(f"{layout}: FAILED: {result['error']}")
            for child in children:
                progress(f"{child.name} log (last lines):\n{child.tail()}")
        finally:
            progress(f"{layout}: stopping")


def start_workers(
    count: int, program: list[str], data: Path, environment: dict[str, str], tmp: Path, children: list[Child]
) -> list[float]:
    """Start `count` Celery workers at once; seconds each took until it logged that it is ready."""
    started = time.monotonic()
    mine = []
    for number in range(count):
        argv = [*program, "worker", "--data", str(data), "--name", f"bench{number}@%h"]
        child = spawn(f"worker{number}", argv, environment, tmp / f"worker-{number}.log", signal.SIGTERM)
        children.append(child)
        mine.append(child)
    seconds: list[float] = []
    for child in mine:
        # marrowlink logs "ready on <broker>" once the models are loaded; Celery's "<name> ready." once it consumes
        wait_until(lambda c=child: "ready." in c.log(), 300, f"{child.name} to log that it is ready", children)
        seconds.append(_round(time.monotonic() - started))
    return seconds


def measured(
    engine: Engine, lis: LisPeer, scans: list[Scan], dropped: dict[str, float], first_drop: float
) -> dict[str, Any]:
    """The layout's numbers once every slide is preliminary_sent."""
    from acquisition.timestamps import stored_utc

    barcodes = [s.barcode for s in scans]
    now = stages(engine, barcodes)
    finished = max(stored_utc(at).timestamp() for _, at, _ in now.values() if at is not None)
    wall = finished - first_drop
    # the ORU of the last slide may be acknowledged a moment before the scheduler's tick records it
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(lis.oru_times()) < len(scans):
        time.sleep(0.1)
    orus = lis.oru_times()
    to_ack = [orus[s.accession][0] - dropped[s.folder.name] for s in scans if s.accession in orus]
    return {
        "wall_s": _round(wall),
        "slides_per_hour": _round(len(scans) / wall * 3600) if wall > 0 else None,
        "steps": step_stats(engine, barcodes),
        "phases_median_s": phases(engine, scans, dropped, orus),
        "median_drop_to_oru_ack_s": _round(statistics.median(to_ack)) if to_ack else None,
        "max_drop_to_oru_ack_s": _round(max(to_ack)) if to_ack else None,
        "orus_received": sum(len(orus.get(s.accession, [])) for s in scans),
    }


# ---- the whole run ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Which CPU (and GPU, when nvidia-smi names one) the timings come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = None
    if shutil.which("nvidia-smi"):
        try:
            names = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.split("\n")  # fmt: skip
            gpu = ", ".join(n.strip() for n in names if n.strip()) or None
        except (OSError, subprocess.SubprocessError):
            gpu = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu}


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def run_bench(
    *,
    slides: int = 3,
    fovs: int = 50,
    layouts: tuple[str, ...] = ("embedded", "celery1", "celery2"),
    broker: str = DEFAULT_BROKER,
    database_url: str = DEFAULT_ADMIN_URL,
    models_dir: Path | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Slides per hour end to end in each layout, and where the time goes; see the module docstring."""
    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown layout(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    if slides < 1 or fovs < 1:
        raise ValueError("--slides and --fovs must be at least 1")
    limit = timeout_s or 600.0 + 20.0 * slides * fovs
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        # stopped from outside: the layout's processes are stopped and its database dropped on the way out
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run_all(slides=slides, fovs=fovs, layouts=layouts, broker=broker, database_url=database_url,
                        models_dir=models_dir, timeout_s=limit)  # fmt: skip
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run_all(
    *,
    slides: int,
    fovs: int,
    layouts: tuple[str, ...],
    broker: str,
    database_url: str,
    models_dir: Path | None,
    timeout_s: float,
) -> dict[str, Any]:
    host = machine()
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "scanner_pace_slides_per_hour": SCANNER_PACE_SLIDES_PER_HOUR,
        "slides": slides,
        "fovs_per_slide": fovs,
        "machine": host,
        "commit": git_commit(),
        "layouts": {},
    }
    with tempfile.TemporaryDirectory(prefix="marrowlink-bench-scans-") as tmp:
        progress(f"making {slides} virtual AML export(s) of {fovs} FOVs (not timed)")
        started = time.monotonic()
        scans = make_scans(Path(tmp) / "slides", slides, fovs, FIRST_SEED, "s")
        warmups = make_scans(Path(tmp) / "warmup", max(LAYOUTS[n] for n in layouts) or 1, 1, WARMUP_SEED, "w")
        result["exports_made_s"] = _round(time.monotonic() - started)
        for name in layouts:
            runners = max(1, LAYOUTS[name])
            try:
                result["layouts"][name] = run_layout(
                    name, scans, warmups[:runners], fovs=fovs, broker=broker, admin_url=database_url,
                    models_dir=models_dir, timeout_s=timeout_s,
                )  # fmt: skip
            except Exception as exc:  # set-up or clean-up of the layout failed (no database, no broker, …)
                progress(f"{name}: FAILED: {type(exc).__name__}: {exc}")
                result["layouts"][name] = {"layout": name, "error": f"{type(exc).__name__}: {exc}"}
            for key in ("cpu", "cpu_count", "gpu"):
                result["layouts"][name][key] = host[key]
    embedded = result["layouts"].get("embedded", {}).get("slides_per_hour")
    result["embedded_keeps_up"] = embedded >= SCANNER_PACE_SLIDES_PER_HOUR if embedded is not None else None
    result["note"] = (
        "Research use only, not for clinical diagnosis. Timings are from this machine "
        f"({host['cpu']}, {host['cpu_count']} CPUs{', ' + host['gpu'] if host['gpu'] else ''}) in one run; "
        "start-up and a warm-up slide per job runner are excluded from wall_s. The scanner pace assumes "
        "a 50-FOV slide every 2 minutes: compare only runs with --fovs 50."
    )
    return result
