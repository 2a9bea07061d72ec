"""The case workflow end to end: order → scan → analyse (SR + ORU P) → review → sign (SR VERIFIED + ORU F)
→ reopen → sign again (a new SR referencing its predecessor + ORU C). Real store, real outbox, real SRs.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest
from sqlmodel import Session, select

from acquisition import plan_scan, simulate_slide, write_metafer_export
from ai.dicom import read_differential_report
from dicom_store import Store
from hl7 import parse_message
from hl7.tables import OutboxMessage, OutboxPayload
from integration.analysis import AnalysisModels
from integration.cases import CaseStatus, audit_entries, get_case
from integration.orders import CaseOrderHandler
from integration.review import run_cells
from integration.scans import import_scan
from integration.settings import Settings
from integration.workflow import Conflict, Invalid, NotFound, Signer, Workflow

SIGNER = Signer("ppath", "Pathologist^Paula", "Marrow Lab")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    slide = simulate_slide(21, "aml", scan_area_um=(600.0, 300.0))
    overview = slide.render_overview()
    folder = tmp_path_factory.mktemp("export")
    write_metafer_export(slide, folder, plan_scan(overview, n=2), overview=overview)
    return folder, slide.barcode


def _order(barcode: str) -> str:
    return "\r".join(
        [
            "MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261206000847||OML^O21^OML_O21|WF1|P|2.5.1",
            "PID|1||PAT7731^^^HOSP^MR||Testperson^Ada||19610203|F",
            "ORC|NW|PL-WF||ACC-WF||||||||1234^Doctor^Dora",
            "OBR|1|PL-WF||48807-2^Bone marrow aspiration report^LN|||20261206000847",
            f"SAC|||{barcode}",
        ]
    )


def _oru(engine, status: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The queued ORUs with result status `status` (OBR-25), as text."""
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxMessage, OutboxPayload).where(OutboxMessage.id == OutboxPayload.outbox_id)
        ).all()
    texts = [payload.payload for _, payload in rows]
    return [t for t in texts if next(s for s in t.split("\r") if s.startswith("OBR")).split("|")[25] == status]


def _obr3(oru: str) -> str:
    return next(s for s in oru.split("\r") if s.startswith("OBR")).split("|")[3]


def test_review_sign_and_correct(export, engine, tmp_path: Path, tiny_models) -> None:  # type: ignore[no-untyped-def]
    folder, barcode = export
    settings = Settings(data_dir=tmp_path, lis_destination="127.0.0.1:9", uid_root="1.2.826.0.1.3680043.8.498.")
    with Session(engine) as session:
        CaseOrderHandler().handle(session, parse_message(_order(barcode)))
        session.commit()
    store = Store(engine, tmp_path / "blobs")
    study = import_scan(folder, store, uid_root=settings.uid_root, engine=engine).study_instance_uid
    workflow = Workflow(engine, store, settings)
    models = AnalysisModels.load(tiny_models["seg"], tiny_models["cls"], tiny_models["seg"] / "missing")

    run = workflow.analyse(study, models, actor="test")
    assert run.outbox_id is not None and len(_oru(engine, "P")) == 1
    with Session(engine) as session:
        assert get_case(session, "ACC-WF").status == CaseStatus.PRELIMINARY
    assert workflow.differential("ACC-WF").counts == run.differential.counts  # the cells are the AI's result

    with Session(engine) as session:
        from integration.review import latest_report

        case = get_case(session, "ACC-WF")
        run_id = latest_report(session, case.id, statuses=("preliminary",)).id
        cells = run_cells(session, run_id)
        recorded = run_cells(session, run_id, include_deleted=True)
    # every cell is recorded; those cut by an image edge are kept but do not count (as in the AI's result)
    assert len(recorded) == run.cells > 2
    assert len(cells) == run.differential.total == sum(not c.border for c in recorded)
    with pytest.raises(Invalid, match="not one of the 23"):
        workflow.reclassify(cells[0].id, "XYZ", actor="user:tech")
    with pytest.raises(NotFound):
        workflow.reclassify(10**9, "BLA", actor="user:tech")

    # Review: one cell made a blast, one deleted, one added; every unidentified cell classified.
    workflow.reclassify(cells[0].id, "BLA", actor="user:tech")
    workflow.delete_cell(cells[1].id, actor="user:tech")
    with pytest.raises(Conflict, match="deleted"):
        workflow.reclassify(cells[1].id, "NGS", actor="user:tech")
    region = (cells[2].region_column, cells[2].region_row, cells[2].region_width, cells[2].region_height)
    added = workflow.add_cell("ACC-WF", region, [[10, 10], [40, 10], [40, 40], [10, 40]], "EOS", actor="user:tech")
    with pytest.raises(Invalid, match="leaves"):
        workflow.add_cell("ACC-WF", region, [[-5, 10], [40, 10], [40, 40]], "EOS", actor="user:tech")
    unidentified = [c for c in cells[2:] if c.current_class is None]
    if unidentified:
        with pytest.raises(Conflict, match="unidentified"):
            workflow.sign("ACC-WF", SIGNER, actor="user:ppath")
        for cell in unidentified:
            workflow.reclassify(cell.id, "NGS", actor="user:tech")
    expected = workflow.differential("ACC-WF")
    assert expected.counts["BLA"] >= 1 and expected.counts["EOS"] >= 1 and expected.total == run.differential.total

    signed = workflow.sign("ACC-WF", SIGNER, actor="user:ppath")
    assert signed.status == "final" and signed.predecessor_sr_uid == ""
    sr = store.get_dataset(signed.sr_instance_uid)
    assert sr.VerificationFlag == "VERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "Pathologist^Paula"
    report = read_differential_report(sr)
    assert {k: v for k, v in report["counts"].items() if v} == {k: v for k, v in expected.counts.items() if v}
    assert report["total"] == expected.total
    final_oru = _oru(engine, "F")
    assert len(final_oru) == 1 and _obr3(final_oru[0]) == _obr3(_oru(engine, "P")[0])
    assert "MANUAL^Manual count" in final_oru[0] and "Pathologist Paula" in final_oru[0]
    with pytest.raises(Conflict, match="final"):
        workflow.sign("ACC-WF", SIGNER, actor="user:ppath")  # signed is signed: correct it instead
    with pytest.raises(Conflict, match="reopen"):
        workflow.reclassify(cells[0].id, "PMO", actor="user:tech")

    # A correction: reopen, change, sign again: a new SR that supersedes the final one, and an ORU C.
    workflow.reopen("ACC-WF", actor="user:ppath", reason="promyelocyte, not a blast")
    workflow.reclassify(cells[0].id, "PMO", actor="user:ppath")
    workflow.delete_cell(added.id, actor="user:ppath")
    corrected = workflow.sign("ACC-WF", SIGNER, actor="user:ppath")
    assert corrected.status == "corrected" and corrected.predecessor_sr_uid == signed.sr_instance_uid
    sr2 = hd.sr.Comprehensive3DSR.from_dataset(store.get_dataset(corrected.sr_instance_uid))
    predecessors = [
        item.ReferencedSOPInstanceUID
        for study_item in sr2.PredecessorDocumentsSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    assert predecessors == [signed.sr_instance_uid]
    assert store.get_dataset(signed.sr_instance_uid).SOPInstanceUID == signed.sr_instance_uid  # never overwritten
    assert read_differential_report(sr2)["counts"]["BLA"] == expected.counts["BLA"] - 1
    correction = _oru(engine, "C")
    assert len(correction) == 1 and _obr3(correction[0]) == _obr3(final_oru[0])
    with Session(engine) as session:
        assert get_case(session, "ACC-WF").status == CaseStatus.CORRECTED
        actions = [a.action for a in audit_entries(session)]
    for action in ("cell.reclassified", "cell.deleted", "cell.added", "case.signed.final", "case.reopened",
                   "case.signed.corrected"):  # fmt: skip
        assert action in actions


def test_sign_and_correct_from_the_shell(export, tmp_path: Path, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """`marrowlink users add`, `sign`, `correct` on a data directory, as an operator would run them."""
    import os
    import subprocess
    import sys

    from integration.database import open_index

    folder, barcode = export
    data = tmp_path / "data"
    data.mkdir()
    engine = open_index(f"sqlite:///{data / 'index.sqlite3'}")
    settings = Settings(data_dir=data, uid_root="1.2.826.0.1.3680043.8.498.")
    with Session(engine) as session:
        CaseOrderHandler().handle(session, parse_message(_order(barcode)))
        session.commit()
    store = Store(engine, data / "blobs")
    study = import_scan(folder, store, uid_root=settings.uid_root, engine=engine).study_instance_uid
    models = AnalysisModels.load(tiny_models["seg"], tiny_models["cls"], tiny_models["seg"] / "missing")
    workflow = Workflow(engine, store, settings)
    workflow.analyse(study, models, actor="test")
    marrowlink = str(Path(sys.executable).parent / "marrowlink")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARROWLINK_") and k != "DATABASE_URL"}

    def run(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        return subprocess.run([marrowlink, *args, "--data", str(data)], capture_output=True, text=True, env=env,
                              timeout=300)  # fmt: skip

    added = run("users", "add", "ppath", "--role", "pathologist", "--name", "Pathologist^Paula", "--password",
                "path-pass-1")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert run("users", "add", "tom", "--role", "technologist", "--password", "tech-pass-1").returncode == 0
    refused = run("sign", "ACC-WF", "--user", "tom")
    assert refused.returncode == 2 and "not an active pathologist" in refused.stderr
    with Session(engine) as session:
        from integration.review import latest_report

        run_id = latest_report(session, get_case(session, "ACC-WF").id, statuses=("preliminary",)).id
        unidentified = [c.id for c in run_cells(session, run_id) if c.current_class is None]
    if unidentified:
        early = run("sign", "ACC-WF", "--user", "ppath")
        assert early.returncode == 2 and "unidentified" in early.stderr
        for cell_id in unidentified:
            workflow.delete_cell(cell_id, actor="user:tom")
    signed = run("sign", "ACC-WF", "--user", "ppath")
    assert signed.returncode == 0 and "final report" in signed.stdout, signed.stderr
    again = run("sign", "ACC-WF", "--user", "ppath")
    assert again.returncode == 2 and "final" in again.stderr
    assert run("correct", "ACC-WF", "--user", "ppath", "--reason", "recount").returncode == 0
    corrected = run("sign", "ACC-WF", "--user", "ppath")
    assert corrected.returncode == 0 and "corrected report" in corrected.stdout, corrected.stderr
    engine.dispose()
