"""The pipeline's parts in one process: durable jobs (claim, lease, back-off, retry, cancel), the watch
folder (settle, order before or after the scan, done/ and failed/), and idempotent steps. The same code
as real processes, killed with SIGKILL, is in test_pipeline_processes.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from acquisition import plan_scan, simulate_slide, write_metafer_export
from dicom_store import Store
from hl7 import parse_message
from integration.cases import Slide, SlideStage, utcnow
from integration.jobs import Backoff, Job, Jobs, JobState, Step
from integration.orders import CaseOrderHandler
from integration.pipeline import Pipeline
from integration.settings import Settings
from integration.watch import REASON_FILE, WatchFolder


def order(barcode: str, accession: str, *, sac: bool = True) -> str:
    """An OML^O21 as LIS send them: local time without an offset, a Z-segment, the slide in SAC-3 (or not)."""
    segments = [
        f"MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261206081500||OML^O21^OML_O21|C{accession}|P|2.5.1",
        f"PID|1||P{accession}^^^HOSP^MR~X{accession}^^^OTHER^PI||Testperson^Ada||19610203|F",
        f"ORC|NW|PL{accession}||{accession}||||||||1234^Doctor^Dora",
        f"OBR|1|PL{accession}||48807-2^Bone marrow aspiration report^LN|||20261206073000",
        "ZXT|1|site specific",
    ]
    if sac:
        segments.append(f"SAC|||{barcode}")
    return "\r".join(segments)


def place_order(engine, barcode: str, accession: str, *, sac: bool = True) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session, session.begin():
        CaseOrderHandler().handle(session, parse_message(order(barcode, accession, sac=sac)))


def make_export(folder: Path, seed: int, profile: str = "normal", fovs: int = 2) -> str:
    slide = simulate_slide(seed, profile, scan_area_um=(600.0, 300.0))
    overview = slide.render_overview()
    write_metafer_export(slide, folder, plan_scan(overview, n=fovs), overview=overview)
    return slide.barcode


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("exports")
    return {name: (root / name, make_export(root / name, seed)) for name, seed in (("a", 31), ("b", 32))}


def stage(engine, barcode: str) -> str | None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        slide = session.exec(select(Slide).where(Slide.barcode == barcode)).first()
        return slide.stage if slide is not None else None


# ---- jobs ------------------------------------------------------------------------------------------------


def test_a_job_is_claimed_once_retried_with_back_off_then_failed(engine) -> None:  # type: ignore[no-untyped-def]
    jobs = Jobs(engine, lease_s=60, backoff=Backoff(first_s=10, cap_s=15))
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job, created = Jobs.ensure(session, Step.IMPORT, "VM1", folder="/x")
        again, created_again = Jobs.ensure(session, Step.IMPORT, "VM1")
    assert created and not created_again and again.id == job.id
    assert jobs.claim(job.id, "host-a:1") is not None
    assert jobs.claim(job.id, "host-b:2") is None  # held under a live lease
    assert jobs.fail(job.id, "host-b:2", "not mine") is None  # only the holder records an outcome
    failed = jobs.fail(job.id, "host-a:1", "boom")
    assert failed.state == JobState.QUEUED and failed.attempts == 1
    assert jobs.claim(job.id, "host-b:2") is None  # backing off for 10 s
    later = utcnow() + timedelta(seconds=11)
    assert jobs.claim(job.id, "host-b:2", now=later).attempts == 2
    second = jobs.fail(job.id, "host-b:2", "boom again")
    delay = (second.not_before - utcnow()).total_seconds()
    assert 14 < delay <= 15  # doubled, then capped
    for attempt in (3, 4):
        assert jobs.claim(job.id, "host-a:1", now=utcnow() + timedelta(seconds=60)).attempts == attempt
        last = jobs.fail(job.id, "host-a:1", f"boom {attempt}")
    assert last.state == JobState.FAILED and last.reason == "boom 4"
    assert jobs.claim(job.id, "host-a:1", now=utcnow() + timedelta(days=1)) is None
    retried = jobs.retry(job.id)
    assert retried.state == JobState.QUEUED and retried.attempts == 0 and retried.reason == ""
    with pytest.raises(ValueError, match="only failed, cancelled"):
        jobs.retry(job.id)  # a queued job is not retried again
    assert jobs.cancel(job.id).state == JobState.CANCELLED
    assert jobs.claim(job.id, "host-a:1") is None


def test_a_job_whose_runner_died_is_taken_over(engine) -> None:  # type: ignore[no-untyped-def]
    jobs = Jobs(engine, lease_s=300)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job, _ = Jobs.ensure(session, Step.ANALYSE, "VM2")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    assert jobs.claim(job.id, f"{socket.gethostname()}:{dead.pid}") is not None
    assert [j.id for j in jobs.due()] == [job.id]  # the runner on this host is gone: due at once
    taken = jobs.claim(job.id, "me:1")
    assert taken is not None and taken.owner == "me:1" and taken.attempts == 2
    # a runner on another host keeps its job until its lease runs out
    assert jobs.claim(job.id, "other:1") is None
    assert jobs.claim(job.id, "other:1", now=utcnow() + timedelta(seconds=301)) is not None


# ---- the pipeline in one process ---------------------------------------------------------------------------


@pytest.fixture
def pipeline(tmp_path: Path, tiny_models):  # type: ignore[no-untyped-def]
    from integration.database import open_index

    settings = Settings(data_dir=tmp_path / "data", models_dir=tiny_models["root"], lis_destination="127.0.0.1:9")
    engine = open_index(settings.effective_database_url)
    store = Store(engine, settings.blob_dir)
    yield Pipeline(engine, store, settings)
    engine.dispose()


def run_due(pipeline: Pipeline) -> list[str]:
    states = []
    while due := pipeline.jobs.due():
        states += [pipeline.run(job.id) for job in due]
    return states


def test_watch_folder_takes_complete_exports_in_either_order(pipeline, exports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    watch = WatchFolder(tmp_path / "watch", pipeline, settle_s=5.0)
    (a_src, a_barcode), (b_src, b_barcode) = exports["a"], exports["b"]
    place_order(pipeline.engine, a_barcode, "ACC-A")
    # b's order names no slide: its barcode is matched against the accession number
    place_order(pipeline.engine, "", b_barcode, sac=False)

    # a folder being copied: images first, no manifest yet → untouched
    half = watch.root / "slide-a"
    shutil.copytree(a_src, half, ignore=shutil.ignore_patterns("manifest.*"))
    watch.tick(now=0.0)
    watch.tick(now=100.0)
    assert half.is_dir() and not pipeline.jobs.list()
    # the manifest lands: taken only once nothing changed for the settle time
    for manifest in a_src.glob("manifest.*"):
        shutil.copy2(manifest, half / manifest.name)
    watch.tick(now=101.0)
    watch.tick(now=103.0)
    assert half.is_dir() and not pipeline.jobs.list()
    (half / "late-file.txt").write_text("still copying")
    watch.tick(now=107.0)  # changed: the settle time starts again
    assert half.is_dir()
    watch.tick(now=112.5)
    assert not half.exists() and (watch.root / "processing" / "slide-a").is_dir()
    assert stage(pipeline.engine, a_barcode) == SlideStage.SCANNED

    # an unordered scan waits, visibly, and is queued when its order arrives
    shutil.copytree(b_src, watch.root / "slide-b")
    orphan = watch.root / "orphan"
    make_export(orphan, 33, fovs=1)
    for now in (200.0, 206.0):
        watch.tick(now=now)
    waiting = pipeline.jobs.list(states=[JobState.WAITING])
    assert [j.folder for j in waiting] == [str(watch.root / "processing" / "orphan")]
    assert "no order names slide" in waiting[0].reason

    # a broken export goes to failed/ with the reason
    broken = watch.root / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    for now in (300.0, 306.0):
        watch.tick(now=now)
    assert "manifest" in (watch.root / "failed" / "broken" / REASON_FILE).read_text()

    states = run_due(pipeline)
    assert states.count(JobState.DONE) == 4, states  # two imports, two analyses
    watch.tick(now=400.0)
    assert sorted(p.name for p in (watch.root / "done").iterdir()) == ["slide-a", "slide-b"]
    for barcode in (a_barcode, b_barcode):
        assert stage(pipeline.engine, barcode) == SlideStage.PRELIMINARY
    # the same slide dropped again is refused, not imported twice
    shutil.copytree(a_src, watch.root / "slide-a-again")
    for now in (500.0, 506.0):
        watch.tick(now=now)
    assert "already scanned" in (watch.root / "failed" / "slide-a-again" / REASON_FILE).read_text()


def test_steps_are_idempotent_after_a_crash(pipeline, exports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An attempt killed after storing part of its work: the next attempt stores each object once and
    queues one ORU."""
    src, barcode = exports["a"]
    place_order(pipeline.engine, barcode, "ACC-I")
    folder = tmp_path / "in" / "a"
    shutil.copytree(src, folder)
    job = pipeline.register_scan(folder, barcode).job
    assert pipeline.run(job.id) == JobState.DONE
    study = pipeline.jobs.get(job.id).study_instance_uid
    wsi = {i.sop_instance_uid for i in pipeline.store.instances(study)}

    # the import "crashed" after storing: its row says running under a runner that is gone
    with Session(pipeline.engine) as session, session.begin():
        row = session.get(Job, job.id)
        row.state, row.owner, row.lease_until = JobState.RUNNING.value, "gone-host:1", utcnow() - timedelta(seconds=1)
        analyse = session.exec(select(Job).where(Job.step == Step.ANALYSE.value)).one()
        session.delete(analyse)
    assert pipeline.run(job.id) == JobState.DONE
    after = {i.sop_instance_uid for i in pipeline.store.instances(study)}
    assert len(after) == len(wsi)  # the first attempt's series was replaced, not doubled

    analyse = next(j for j in pipeline.jobs.list() if j.step == Step.ANALYSE)
    assert pipeline.run(analyse.id) == JobState.DONE
    # the analysis "crashed" after everything was stored and queued: run again, nothing doubles
    with Session(pipeline.engine) as session, session.begin():
        row = session.get(Job, analyse.id)
        row.state, row.owner, row.lease_until = JobState.RUNNING.value, "gone-host:1", utcnow() - timedelta(seconds=1)
    assert pipeline.run(analyse.id) == JobState.DONE
    modalities = [s.get("Modality") for s in pipeline.store.search("SERIES", [("StudyInstanceUID", study)])]
    assert modalities.count("SR") == 1 and modalities.count("SEG") == 1
    from hl7 import Outbox

    assert len(Outbox(pipeline.engine).entries(limit=10)) == 1
    assert os.path.isdir(folder)


# ---- the REST API, /metrics and /readyz ------------------------------------------------------------------------


@pytest.mark.parametrize("broker", [None, "amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:guest@127.0.0.1:9//"])
def test_jobs_over_http_metrics_and_readiness(tmp_path: Path, broker: str | None) -> None:
    import httpx

    from api import ApiConfig, create_app
    from integration.database import open_index
    from integration.review_service import ReviewAdapter
    from tests.test_dicomweb_support import serve

    settings = Settings(data_dir=tmp_path, broker_url=broker)
    engine = open_index(settings.effective_database_url)
    store = Store(engine, settings.blob_dir)
    jobs = Jobs(engine)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        failed, _ = Jobs.ensure(session, Step.IMPORT, "VM9", folder="/nowhere")
        waiting, _ = Jobs.ensure(session, Step.IMPORT, "VM10", state=JobState.WAITING.value, reason="no order yet")
    jobs.claim(failed.id, "me:1")
    jobs.fail(failed.id, "me:1", "import: the export has no overview image", permanent=True)
    tokens = [
        {"token": "viewer-token-0001", "user": "vic", "roles": ["viewer"]},
        {"token": "tech-token-00001", "user": "tom", "roles": ["technologist"]},
    ]
    app = create_app(store, ApiConfig(tokens=tokens), ReviewAdapter(engine, store, settings))
    viewer = {"Authorization": "Bearer viewer-token-0001"}
    tech = {"Authorization": "Bearer tech-token-00001"}
    with serve(app) as url:
        listed = httpx.get(f"{url}/api/jobs", headers=viewer).json()
        assert [(j["slide"], j["state"]) for j in listed] == [("VM10", "waiting"), ("VM9", "failed")]
        assert listed[1]["reason"] == "import: the export has no overview image"
        assert httpx.get(f"{url}/api/jobs?state=failed", headers=viewer).json()[0]["id"] == failed.id
        assert httpx.get(f"{url}/api/jobs?state=lost", headers=viewer).status_code == 422
        assert httpx.get(f"{url}/api/jobs").status_code == 401
        assert httpx.post(f"{url}/api/jobs/{failed.id}/retry", headers=viewer).status_code == 403
        retried = httpx.post(f"{url}/api/jobs/{failed.id}/retry", headers=tech)
        assert retried.status_code == 200 and retried.json()["state"] == "queued"
        assert httpx.post(f"{url}/api/jobs/{failed.id}/retry", headers=tech).status_code == 409
        assert httpx.post(f"{url}/api/jobs/999/cancel", headers=tech).status_code == 404
        assert httpx.post(f"{url}/api/jobs/{waiting.id}/cancel", headers=tech).json()["state"] == "cancelled"

        metrics = httpx.get(f"{url}/metrics").text
        assert 'marrowlink_jobs{state="queued",step="import"} 1.0' in metrics
        assert 'marrowlink_jobs{state="cancelled",step="import"} 1.0' in metrics
        assert "marrowlink_jobs_queue_depth 1.0" in metrics
        ready = httpx.get(f"{url}/readyz", timeout=30)
        if broker is None:
            assert ready.status_code == 200 and "broker" not in ready.json()
        elif ":5672" in broker:
            assert ready.status_code == 200 and ready.json()["broker"] == "ok"
            assert "marrowlink_broker_queue_messages" in metrics
        else:  # nothing listens there: not ready, and it says why
            assert ready.status_code == 503 and ready.json()["broker"].startswith("error:")
    engine.dispose()


def test_a_broker_message_for_another_database_and_missing_models_are_refused(tmp_path: Path) -> None:
    from integration.database import open_index

    settings = Settings(data_dir=tmp_path, models_dir=tmp_path / "no-models")
    engine = open_index(settings.effective_database_url)
    pipeline = Pipeline(engine, Store(engine, settings.blob_dir), settings)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job, _ = Jobs.ensure(session, Step.ANALYSE, "VM77", study_instance_uid="1.2.3")
    # job ids repeat across databases: a message naming another job under this id is not run
    assert pipeline.run(job.id, key="analyse:VM-OF-ANOTHER-SITE") is None
    assert pipeline.jobs.get(job.id).state == JobState.QUEUED
    # models that cannot load are a setting to fix, not a moment to wait out: failed at once, saying what to do
    assert pipeline.run(job.id, key="analyse:VM77") == JobState.FAILED
    failed = pipeline.jobs.get(job.id)
    assert failed.attempts == 1 and "MARROWLINK_MODELS_DIR" in failed.reason
    engine.dispose()
