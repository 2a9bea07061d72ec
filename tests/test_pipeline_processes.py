"""The pipeline as a hospital runs it: real `marrowlink serve --watch` and `marrowlink worker` processes,
orders over MLLP, a LIS peer (hl7apy) receiving the ORUs, PostgreSQL with RabbitMQ or Redis for the
scaled-out layout, and processes killed with SIGKILL in the middle of their work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlmodel import Session, select

from dicom_store import Store
from hl7.mllp import send_message
from integration.cases import Slide, SlideStage, get_case
from integration.jobs import Job, JobState, Step
from integration.review import latest_report, run_cells
from integration.settings import Settings
from integration.workflow import Signer, Workflow
from tests.conftest import free_port
from tests.lis_peer import Hl7apyLis
from tests.servers import marrowlink_server
from tests.test_pipeline import make_export, order

MARROWLINK = str(Path(sys.executable).parent / "marrowlink")
RABBITMQ = os.environ.get("MARROWLINK_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")
VL_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"
REDIS = os.environ.get("MARROWLINK_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """Four virtual scans: normal, APL (critical cells), AML, hairy-cell leukaemia."""
    root = tmp_path_factory.mktemp("scans")
    profiles = ("normal", "apl", "aml", "hcl")
    return [(root / f"s{i}", make_export(root / f"s{i}", 41 + i, profile)) for i, profile in enumerate(profiles)]


def pipeline_env(tiny_models, lis_port: int, **extra: str) -> dict[str, str]:
    return {
        "MARROWLINK_MODELS_DIR": str(tiny_models["root"]),
        "MARROWLINK_LIS_DESTINATION": f"127.0.0.1:{lis_port}",
        "MARROWLINK_TIMEZONE": "Europe/Berlin",
        "MARROWLINK_WATCH_SETTLE_S": "1",
        "MARROWLINK_WATCH_INTERVAL_S": "0.3",
        "MARROWLINK_HTTP_WORKERS": "1",
        **extra,
    }


def send_orders(mllp_port: int, slides: list[tuple[Path, str]]) -> None:
    for number, (_, barcode) in enumerate(slides):
        reply = asyncio.run(send_message("127.0.0.1", mllp_port, order(barcode, f"ACC{number}{barcode[-4:]}")))
        assert reply.code == "AA", reply


def drop(folder: Path, watch: Path) -> None:
    """As a copy tool would: into a hidden name, then renamed (the watcher also copes without the rename)."""
    shutil.copytree(folder, watch / f".{folder.name}.partial")
    os.rename(watch / f".{folder.name}.partial", watch / folder.name)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.3)


def stages(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return {s.barcode: s.stage for s in session.exec(select(Slide)).all()}


def all_sent(engine, slides: list[tuple[Path, str]]) -> bool:  # type: ignore[no-untyped-def]
    now = stages(engine)
    return all(now.get(barcode) == SlideStage.PRELIMINARY_SENT for _, barcode in slides)


def check_stored_once(engine, data_dir: Path, slides: list[tuple[Path, str]]) -> None:  # type: ignore[no-untyped-def]
    """Each slide: one WSI series, one SR series, one SEG series in its study."""
    store = Store(engine, data_dir / "blobs")
    with Session(engine) as session:
        studies = {s.barcode: s.study_instance_uid for s in session.exec(select(Slide)).all()}
    for _, barcode in slides:
        series = store.search("SERIES", [("StudyInstanceUID", studies[barcode])])
        modalities = sorted(str(s.get("Modality")) for s in series)
        assert modalities.count("SR") == 1 and modalities.count("SM") == 1, (barcode, modalities)


# ---- one machine: serve --watch on SQLite ---------------------------------------------------------------------


def test_serve_watch_runs_the_pipeline_unattended(tmp_path: Path, exports, tiny_models) -> None:  # type: ignore[no-untyped-def]
    watch, data = tmp_path / "watch", tmp_path / "data"
    watch.mkdir()
    data.mkdir()
    slides = exports[:2]  # normal and APL
    lis_port = free_port()
    with Hl7apyLis(lis_port) as lis, marrowlink_server(
        data, env=pipeline_env(tiny_models, lis_port), args=["--watch", str(watch)]
    ) as server:  # fmt: skip
        engine = create_engine(f"sqlite:///{data / 'index.sqlite3'}")
        send_orders(server.mllp_port, slides)
        # a folder still being copied (images, no manifest) is left alone
        half = watch / "half"
        shutil.copytree(slides[0][0], half, ignore=shutil.ignore_patterns("manifest.*"))
        time.sleep(3)
        assert half.is_dir() and stages(engine)[slides[0][1]] == SlideStage.ORDERED
        shutil.rmtree(half)
        for folder, _ in slides:
            drop(folder, watch)
        wait_until(lambda: all_sent(engine, slides), 240, "both slides preliminary_sent", server.log)
        assert sorted(p.name for p in (watch / "done").iterdir()) == sorted(f.name for f, _ in slides)
        assert len(lis.received) == 2 and lis.log.invalid == []
        check_stored_once(engine, data, slides)

        # people take over: a review moves the slide to in_review, the sign-off to signed, the LIS's ACK of
        # the ORU F to final_sent (the running service sends it and notices the ACK)
        barcode = slides[0][1]
        accession = f"ACC0{barcode[-4:]}"
        workflow = Workflow(
            engine, Store(engine, data / "blobs"), Settings(data_dir=data, lis_destination=f"127.0.0.1:{lis_port}")
        )
        with Session(engine) as session:
            run = latest_report(session, get_case(session, accession).id)
            cells = [c.id for c in run_cells(session, run.id) if c.current_class is None]
        workflow.reclassify(cells[0], "LYT", actor="user:tech")
        assert stages(engine)[barcode] == SlideStage.IN_REVIEW
        for cell in cells[1:]:
            workflow.delete_cell(cell, actor="user:tech")
        workflow.sign(accession, Signer("ppath", "Pathologist^Paula", "Lab"), actor="user:ppath")
        assert stages(engine)[barcode] == SlideStage.SIGNED
        wait_until(lambda: stages(engine)[barcode] == SlideStage.FINAL_SENT, 60, "the ORU F acknowledged", server.log)
        assert len(lis.received) == 3
        engine.dispose()
    log = server.log()
    assert "pipeline: 1 job thread(s) in this process; watching" in log


def test_serve_killed_during_an_import_resumes_without_duplicates(tmp_path: Path, exports, tiny_models) -> None:  # type: ignore[no-untyped-def]
    watch, data = tmp_path / "watch", tmp_path / "data"
    watch.mkdir()
    data.mkdir()
    big = tmp_path / "big"
    barcode = make_export(big, 51, "aml", fovs=6)
    lis_port = free_port()
    env = pipeline_env(tiny_models, lis_port)
    # the import takes a fraction of a second: a failpoint holds it after its instances are stored, before
    # the job is marked done, so that the kill lands in the middle
    first = {**env, "MARROWLINK_FAILPOINTS": "import.stored=120"}
    with Hl7apyLis(lis_port) as lis:
        with marrowlink_server(data, env=first, args=["--watch", str(watch)], log_name="first.log") as server:
            engine = create_engine(f"sqlite:///{data / 'index.sqlite3'}")
            send_orders(server.mllp_port, [(big, barcode)])
            drop(big, watch)

            def importing() -> bool:
                with Session(engine) as session:
                    job = session.exec(select(Job).where(Job.step == Step.IMPORT.value)).first()
                    return job is not None and job.state == JobState.RUNNING.value

            wait_until(lambda: importing() and "failpoint import.stored" in server.log(), 60, "the import", server.log)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            with Session(engine) as session:
                job = session.exec(select(Job).where(Job.step == Step.IMPORT.value)).one()
                assert job.state == JobState.RUNNING.value  # killed in the middle, not after
        with marrowlink_server(data, env=env, args=["--watch", str(watch)], log_name="second.log") as server:
            wait_until(lambda: all_sent(engine, [(big, barcode)]), 240, "the slide to be sent", server.log)
            check_stored_once(engine, data, [(big, barcode)])
            with Session(engine) as session:
                job = session.exec(select(Job).where(Job.step == Step.IMPORT.value)).one()
                assert job.attempts == 2 and job.state == JobState.DONE.value
            assert (watch / "done" / "big").is_dir()
        # the same number of WSI instances as a clean import makes
        clean = Store(create_engine(f"sqlite:///{tmp_path / 'clean.sqlite3'}"), tmp_path / "clean")
        from integration.database import migrate

        migrate(clean.engine)
        from integration.scans import import_scan

        expected = len(import_scan(watch / "done" / "big", clean, uid_root="1.2.3.").sop_instance_uids)
        store = Store(engine, data / "blobs")
        wsi = [i for i in store.instances() if i.sop_class_uid == VL_WHOLE_SLIDE]
        assert len(wsi) == expected
        assert len(lis.received) == 1
        engine.dispose()


# ---- scale-out: PostgreSQL, a broker, two workers, one killed ------------------------------------------------------


@contextmanager
def workers(count: int, env: dict[str, str], data: Path, logs: Path) -> Iterator[list[subprocess.Popen]]:
    environment = {**os.environ, **env}
    environment.pop("MARROWLINK_CONFIG", None)
    processes = []
    try:
        for number in range(count):
            command = [MARROWLINK, "worker", "--data", str(data), "--name", f"test{number}@%h"]
            with open(logs / f"worker-{number}.log", "wb") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _drop_queue(broker: str, queue: str) -> None:
    from celery import Celery

    app = Celery(broker=broker, set_as_current=False)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=2)
        with contextlib.suppress(Exception):  # Redis removes an empty list by itself
            connection.default_channel.queue_delete(queue)


@pytest.mark.postgres
@pytest.mark.parametrize("broker", [RABBITMQ, REDIS], ids=["rabbitmq", "redis"])
def test_workers_share_the_work_and_survive_a_killed_worker(  # type: ignore[no-untyped-def]
    broker: str, postgres_url: str, tmp_path: Path, exports, tiny_models
) -> None:
    queue = f"marrowlink.test.{uuid.uuid4().hex[:12]}"  # its own queue: other runs on this broker stay apart
    watch, data = tmp_path / "watch", tmp_path / "data"
    watch.mkdir()
    data.mkdir()
    lis_port = free_port()
    # a short lease, so that Redis (which gives a killed worker's message back only after an hour) hands
    # the job on through serve's scheduler within seconds
    env = pipeline_env(tiny_models, lis_port, MARROWLINK_BROKER=broker, DATABASE_URL=postgres_url,
                       MARROWLINK_JOB_LEASE_S="8", MARROWLINK_BROKER_QUEUE=queue)  # fmt: skip
    engine = create_engine(postgres_url)
    with Hl7apyLis(lis_port) as lis, marrowlink_server(
        data, env=env, database_url=postgres_url, args=["--watch", str(watch)]
    ) as server, workers(2, env, data, tmp_path) as pool:  # fmt: skip

        def logs() -> str:
            return server.log() + "".join((tmp_path / f"worker-{n}.log").read_text() for n in range(2))

        send_orders(server.mllp_port, exports)
        for folder, _ in exports:
            drop(folder, watch)

        def analysing() -> subprocess.Popen | None:
            with Session(engine) as session:
                running = session.exec(
                    select(Job).where(Job.step == Step.ANALYSE.value, Job.state == JobState.RUNNING.value)
                ).all()
            pids = {int(j.owner.rpartition(":")[2]) for j in running}
            return next((p for p in pool if p.pid in pids), None)

        wait_until(lambda: analysing() is not None, 180, "a worker to analyse a slide", logs)
        victim = analysing()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        wait_until(lambda: all_sent(engine, exports), 300, "all four slides preliminary_sent", logs)
        check_stored_once(engine, data, exports)
        assert len(lis.received) == 4 and len(set(lis.received)) == 4, lis.received
        with Session(engine) as session:
            analyses = session.exec(select(Job).where(Job.step == Step.ANALYSE.value)).all()
        assert all(j.state == JobState.DONE.value for j in analyses)
        assert max(j.attempts for j in analyses) == 2  # the killed one ran again, elsewhere
        assert "Celery workers via" in server.log()
    engine.dispose()
    _drop_queue(broker, queue)


def test_watch_alone_imports_analyses_and_reports(tmp_path: Path, exports, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """`marrowlink watch DIR` without the listeners: the order reaches the index another way (here the
    order handler on the same data dir, as `serve` on another machine would), the results go out from it."""
    from integration.database import open_index
    from tests.test_pipeline import place_order

    watch, data = tmp_path / "watch", tmp_path / "data"
    watch.mkdir()
    folder, barcode = exports[1]
    engine = open_index(f"sqlite:///{data / 'index.sqlite3'}")
    place_order(engine, barcode, "ACC-WATCH")
    lis_port = free_port()
    environment = {**os.environ, **pipeline_env(tiny_models, lis_port)}
    environment.pop("MARROWLINK_CONFIG", None)
    with Hl7apyLis(lis_port) as lis, open(tmp_path / "watch.log", "wb") as log:
        process = subprocess.Popen([MARROWLINK, "watch", str(watch), "--data", str(data)], stdout=log,
                                   stderr=subprocess.STDOUT, env=environment)  # fmt: skip
        try:
            drop(folder, watch)
            wait_until(lambda: all_sent(engine, [(folder, barcode)]), 180, "the slide to be sent",
                       lambda: (tmp_path / "watch.log").read_text())  # fmt: skip
            assert len(lis.received) == 1
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0  # a clean stop
    assert (watch / "done" / folder.name).is_dir()
    engine.dispose()
