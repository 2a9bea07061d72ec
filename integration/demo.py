"""`marrowlink demo`: the whole workflow on a virtual slide, through the real interfaces.

An order arrives over MLLP (OML^O21), the virtual Metafer scans a smear of the ordered profile and
drops the export into the watch folder (``<data>/demo/watch``), and the unattended pipeline does the
rest as it would for a real scanner: the scan is imported as DICOM WSI, the AI analyses it, the results
are stored as SEG/ANN/SR and the preliminary ORU^R01 goes to a LIS (a stand-in inside the process unless
one is configured). Then the
server keeps running: the log prints the review page and the demo accounts' passwords, and a person who
logs in, reviews and signs sees the final ORU^R01 reach the LIS stand-in in the same log. Research use
only, not for clinical diagnosis.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from integration.service import Components

log = logging.getLogger("marrowlink.demo")


@dataclass(frozen=True)
class DemoCase:
    seed: int
    profile: str
    fovs: int

    @property
    def accession_number(self) -> str:
        return f"DEMO-{self.seed:05d}"

    @property
    def barcode(self) -> str:
        # The virtual Metafer labels slide N as VM<N>; the order names the same barcode in SAC-3.
        return f"VM{self.seed:08d}"


def demo_order(case: DemoCase) -> str:
    """An OML^O21 (IHE LTW) for the demo case, built with hl7apy."""
    message = Message("OML_O21", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT)
    message.msh.msh_3 = "DEMO-LIS"
    message.msh.msh_4 = "DEMO-HOSPITAL"
    message.msh.msh_5 = "MARROWLINK"
    message.msh.msh_9 = "OML^O21^OML_O21"
    message.msh.msh_10 = f"DEMO{case.seed:05d}"
    message.msh.msh_11 = "P"
    patient = message.add_group("OML_O21_PATIENT")
    patient.pid.pid_3 = f"DEMO{case.seed:05d}^^^DEMO-HOSPITAL^MR"
    patient.pid.pid_5 = f"Demo^{case.profile.upper()}"
    patient.pid.pid_7 = "19600101"
    patient.pid.pid_8 = "F"
    order = message.add_group("OML_O21_ORDER")
    order.orc.orc_1 = "NW"
    order.orc.orc_2 = f"PL{case.seed:05d}"
    order.orc.orc_3 = f"FL{case.seed:05d}"
    order.orc.orc_4 = case.accession_number
    request = order.add_group("OML_O21_OBSERVATION_REQUEST")
    request.obr.obr_1 = "1"
    request.obr.obr_2 = f"PL{case.seed:05d}"
    request.obr.obr_3 = f"FL{case.seed:05d}"
    request.obr.obr_4 = "BMDIFF^Bone marrow differential^L"
    specimen = request.add_group("OML_O21_SPECIMEN")
    specimen.spm.spm_1 = "1"
    specimen.spm.spm_2 = f"SP{case.seed:05d}"
    specimen.spm.spm_4 = "BMA^Bone marrow aspirate^L"
    container = specimen.add_segment("SAC")
    container.sac_3 = case.barcode
    return message.to_er7()


async def start_lis_standin(components: Components, stack: AsyncExitStack) -> None:
    """A LIS inside the process when none is configured, so the demo shows the ORU arriving."""
    if components.settings.lis_destination:
        return
    from hl7.standin import LisStandIn

    statuses = {"P": "preliminary", "F": "final", "C": "corrected"}

    def received(header, text) -> None:  # type: ignore[no-untyped-def]
        obr = next((s.split("|") for s in text.replace("\n", "\r").split("\r") if s.startswith("OBR|")), [])
        status = statuses.get(obr[25], obr[25]) if len(obr) > 25 else ""
        log.info(
            "LIS stand-in received %s %s%s (MSH-10 %s)", header.message_code, header.trigger_event,
            f", result {status}" if status else "", header.control_id,
        )  # fmt: skip

    standin = LisStandIn(on_message=received)
    await standin.start()
    stack.push_async_callback(standin.stop)
    components.settings.lis_destination = f"127.0.0.1:{standin.port}"


def run_demo(components: Components, case: DemoCase) -> None:
    """Order → scan dropped into the watch folder → the pipeline imports, analyses and sends the ORU; each
    step is logged as the slide reaches it (runs once the server is up)."""
    from hl7.mllp import send_message
    from integration.scans import study_uid_for

    settings = components.settings
    passwords = demo_users(components)
    log.info("1/5 order %s for slide %s over MLLP :%d", case.accession_number, case.barcode, settings.mllp_port)
    reply = asyncio.run(send_message("127.0.0.1", settings.mllp_port, demo_order(case)))
    log.info("    answer: %s", getattr(reply, "code", reply))

    study = study_uid_for(case.accession_number, settings.uid_root)
    if components.store.study_exists(study):
        log.info("2/5 slide already scanned and imported (study %s)", study)
    else:
        export = _scan(settings.data_dir / "demo" / f"scan-{case.seed}", case)
        watch = settings.watch_dir or settings.data_dir / "demo" / "watch"
        log.info("2/5 the scanner drops %s into the watch folder %s", export.name, watch)
        _drop(export, watch)
    _follow(components, case)
    _summary(settings, study, passwords)


#: What the demo says when the slide reaches a stage (the pipeline does the work: integration.pipeline).
_STAGES = {
    "scanned": "3/5 the watch folder took the export; import queued",
    "imported": "3/5 imported as DICOM WSI; analysis queued",
    "analysing": "4/5 analysing the captured regions",
    "preliminary": "5/5 results stored (SEG, annotations, SR); ORU^R01 (P) queued",
    "preliminary_sent": "    the LIS acknowledged the ORU^R01 (P)",
}
_ORDER = ("ordered", "scanned", "imported", "analysing", "preliminary", "preliminary_sent")


def _follow(components: Components, case: DemoCase, timeout: float = 900.0) -> None:
    """Log the slide's stages until its preliminary result reached the LIS (or a step failed)."""
    import time

    from sqlmodel import Session, select

    from integration.cases import Slide
    from integration.jobs import Job, JobState

    said: set[str] = set()
    goal = "preliminary_sent" if components.settings.lis_destination else "preliminary"
    deadline = time.monotonic() + timeout
    stage = ""
    while time.monotonic() < deadline:
        with Session(components.engine) as session:
            slide = session.exec(select(Slide).where(Slide.barcode == case.barcode)).first()
            failed = session.exec(
                select(Job).where(Job.barcode == case.barcode, Job.state == JobState.FAILED.value)
            ).first()
        stage = slide.stage if slide is not None else ""
        for name, text in _STAGES.items():
            if name not in said and _reached(stage, name):
                said.add(name)
                log.info(text)
        if failed is not None:
            log.warning("the %s step failed: %s (see `marrowlink jobs list`)", failed.step, failed.reason)
            return
        if _reached(stage, goal) or (stage and stage not in _ORDER and stage != "failed"):
            return  # there, or people have taken over (in review, signed …)
        time.sleep(0.5)
    log.warning("the slide is still %s after %.0f s (see `marrowlink jobs list`)", stage, timeout)


def _reached(stage: str, name: str) -> bool:
    return stage in _ORDER and _ORDER.index(stage) >= _ORDER.index(name)


def _drop(export: Path, watch: Path) -> None:
    """As a scanner's export tool should: copy under a hidden name, then rename (the watcher takes it whole)."""
    import shutil

    watch.mkdir(parents=True, exist_ok=True)
    target = watch / export.name
    if target.exists():
        return
    hidden = watch / f".{export.name}.partial"
    shutil.rmtree(hidden, ignore_errors=True)
    shutil.copytree(export, hidden)
    hidden.rename(target)


def _scan(folder: Path, case: DemoCase) -> Path:
    from acquisition import plan_scan, simulate_slide, write_metafer_export

    if (folder / "manifest.json").exists() or (folder / "manifest.csv").exists():
        return folder
    log.info("2/5 virtual Metafer: %s smear, 10x pre-scan, %d FOVs at 40x", case.profile, case.fovs)
    slide = simulate_slide(case.seed, case.profile)
    overview = slide.render_overview()
    positions = plan_scan(overview, n=case.fovs)
    write_metafer_export(slide, folder, positions, overview=overview)
    return folder


#: Demo accounts: (login, role, DICOM name); passwords are made anew on every run and printed.
DEMO_USERS = (("demo-tech", "technologist", "Technologist^Demo"), ("demo-path", "pathologist", "Pathologist^Demo"))


def demo_users(components: Components) -> dict[str, str]:
    """Create (or reset) the demo accounts with fresh passwords; returns login → password."""
    import secrets

    from integration.users import Users

    users = Users(components.engine)
    passwords = {}
    for login, role, name in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        if users.get(login) is None:
            users.add(login, password, role, name=name, organization="marrowlink demo lab", actor="demo")
        else:
            users.set_password(login, password, actor="demo")
        passwords[login] = password
    return passwords


def _summary(settings, study: str, passwords: dict[str, str] | None = None) -> None:  # type: ignore[no-untyped-def]
    base = settings.base_url
    if passwords:
        log.info("review: %s/review  (log in as demo-path / %s to sign, or demo-tech / %s to pre-classify)",
                 base, passwords["demo-path"], passwords["demo-tech"])  # fmt: skip
    log.info("study %s", study)
    log.info("DICOMweb: %s/dicomweb/studies/%s/series  (QIDO)", base, study)
    log.info("DIMSE: %s@%s:%d   HL7 MLLP: :%d", settings.ae_title, "127.0.0.1", settings.dicom_port, settings.mllp_port)
    log.info("research use only, not for clinical diagnosis")
