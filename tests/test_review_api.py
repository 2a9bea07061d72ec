"""The review REST API over a served app: people log in, review cells, sign and correct; roles, CSRF and
refusals answer with the right 4xx. The app is the real one (`create_app` with the workflow adapter).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from api import ApiConfig, create_app
from dicom_store import Store
from hl7 import parse_message
from integration.analysis import AnalysisModels
from integration.database import open_index
from integration.orders import CaseOrderHandler
from integration.review_service import ReviewAdapter
from integration.scans import import_scan
from integration.settings import Settings
from integration.users import Users
from integration.workflow import Workflow
from tests.test_dicomweb_support import serve
from tests.test_workflow import _order, export  # noqa: F401  (the module-scoped virtual scan)

VIEWER_TOKEN = {"Authorization": "Bearer viewer-token-0001"}


@pytest.fixture
def served(export, tmp_path: Path, tiny_models) -> Iterator[tuple[str, Store, Engine]]:  # type: ignore[no-untyped-def]  # noqa: F811
    folder, barcode = export
    engine = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    settings = Settings(data_dir=tmp_path, lis_destination="127.0.0.1:9", uid_root="1.2.826.0.1.3680043.8.498.")
    with Session(engine) as session:
        CaseOrderHandler().handle(session, parse_message(_order(barcode)))
        later = _order("OTHER-SLIDE").replace("WF1", "WF2").replace("ACC-WF", "ACC-LATER").replace("PL-WF", "PL-2")
        CaseOrderHandler().handle(session, parse_message(later))
        session.commit()
    store = Store(engine, tmp_path / "blobs")
    study = import_scan(folder, store, uid_root=settings.uid_root, engine=engine).study_instance_uid
    models = AnalysisModels.load(tiny_models["seg"], tiny_models["cls"], tiny_models["seg"] / "missing")
    Workflow(engine, store, settings).analyse(study, models, actor="test")
    users = Users(engine)
    users.add("tech", "tech-pass-1", "technologist", name="Tech^Tom")
    users.add("ppath", "path-pass-1", "pathologist", name="Pathologist^Paula", organization="Marrow Lab")
    config = ApiConfig(tokens=[{"token": "viewer-token-0001", "user": "vic", "roles": ["viewer"]}])
    app = create_app(store, config, ReviewAdapter(engine, store, settings))
    with serve(app) as url:
        yield url, store, engine
    engine.dispose()


def _login(url: str, login: str, password: str) -> tuple[httpx.Client, dict[str, str]]:
    client = httpx.Client(base_url=url)
    answer = client.post("/api/session", json={"login": login, "password": password})
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    return client, {"X-CSRF-Token": answer.json()["csrf"]}


def test_people_review_sign_and_correct_over_http(served) -> None:  # type: ignore[no-untyped-def]
    url, store, _ = served
    assert httpx.get(f"{url}/api/cases").status_code == 401
    assert httpx.post(f"{url}/api/session", json={"login": "tech", "password": "wrong"}).status_code == 401
    worklist = httpx.get(f"{url}/api/cases", headers=VIEWER_TOKEN).json()
    assert [c["accession"] for c in worklist][-1] == "ACC-LATER"  # no result, no critical cells: last

    tech, csrf = _login(url, "tech", "tech-pass-1")
    case = tech.get("/api/cases/ACC-WF").json()
    assert case["status"] == "preliminary" and case["differential"]["total"] > 2
    assert case["viewer"]["study"] and case["research_use_only"] is True
    cells = tech.get("/api/cases/ACC-WF/cells", params={"limit": 500}).json()
    first = cells[0]["id"]
    assert cells[0]["probabilities"] and sum(cells[0]["probabilities"].values()) <= 1.0001  # the top classes
    x_mm, y_mm = _slide_point(store, case["study_instance_uid"], cells[0])
    at = tech.get("/api/cases/ACC-WF/cells/at", params={"x": x_mm, "y": y_mm})
    assert at.status_code == 200 and at.json()["id"] == first  # what a click on the outline in the viewer finds
    assert tech.get("/api/cases/ACC-WF/cells/at", params={"x": 0.0, "y": 0.0}).status_code == 404
    image = tech.get(f"/api/cells/{first}/image")
    assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"

    # Changes need the CSRF token with a session, the right role, a real cell and a known class.
    assert tech.patch(f"/api/cells/{first}", json={"class": "BLA"}).status_code == 403
    assert httpx.patch(f"{url}/api/cells/{first}", json={"class": "BLA"}, headers=VIEWER_TOKEN).status_code == 403
    assert tech.patch("/api/cells/999999", json={"class": "BLA"}, headers=csrf).status_code == 404
    assert tech.patch(f"/api/cells/{first}", json={"class": "XYZ"}, headers=csrf).status_code == 422
    changed = tech.patch(f"/api/cells/{first}", json={"class": "BLA"}, headers=csrf)
    assert changed.status_code == 200 and changed.json()["class"] == "BLA"
    assert tech.delete(f"/api/cells/{cells[1]['id']}", headers=csrf).json()["deleted"] is True
    region = cells[2]["region"]
    added = tech.post("/api/cases/ACC-WF/cells", json={"region": region, "point": [60, 60], "class": "EOS"},
                      headers=csrf)  # fmt: skip
    assert added.status_code == 201 and added.json()["added_by"] == "user:tech"
    outside = tech.post("/api/cases/ACC-WF/cells", json={"region": region, "point": [-5, 60], "class": "EOS"},
                        headers=csrf)  # fmt: skip
    assert outside.status_code == 422 and "outside the analysed region" in outside.json()["detail"]
    worklist = httpx.get(f"{url}/api/cases", headers=VIEWER_TOKEN).json()
    assert worklist[0]["accession"] == "ACC-WF" and worklist[0]["critical"]["BLA"] >= 1  # critical first
    assert worklist[0]["status"] == "in_review" and worklist[0]["held_by"] == "user:tech"
    filtered = httpx.get(f"{url}/api/cases", params={"status": "in_review"}, headers=VIEWER_TOKEN).json()
    assert [c["accession"] for c in filtered] == ["ACC-WF"]
    history = [entry["action"] for entry in tech.get("/api/cases/ACC-WF").json()["history"]]
    assert history[0] == "case.created" and "review.cells_recorded" in history
    assert tech.post("/api/cases/ACC-WF/sign", headers=csrf).status_code == 403  # only pathologists sign

    pathologist, pcsrf = _login(url, "ppath", "path-pass-1")
    unidentified = pathologist.get("/api/cases/ACC-WF/cells", params={"class": "UNIDENTIFIED", "limit": 2000}).json()
    if unidentified:
        refused = pathologist.post("/api/cases/ACC-WF/sign", headers=pcsrf)
        assert refused.status_code == 409 and "unidentified" in refused.json()["detail"]
        for cell in unidentified:
            assert pathologist.patch(f"/api/cells/{cell['id']}", json={"class": "NGS"}, headers=pcsrf).is_success
    summary = pathologist.get("/api/cases/ACC-WF").json()
    shown, changes = summary["differential"], summary["changes"]
    assert changes["deleted"] == 1 and changes["added"] == 1 and changes["reclassified"] >= 1
    assert changes["counts"]["EOS"] == {"ai": 0, "now": 1}
    signed = pathologist.post("/api/cases/ACC-WF/sign", headers=pcsrf)
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "final" and signed.json()["differential"]["counts"] == shown["counts"]
    sr = store.get_dataset(signed.json()["sr"])
    assert sr.VerificationFlag == "VERIFIED"
    assert pathologist.post("/api/cases/ACC-WF/sign", headers=pcsrf).status_code == 409  # signing twice
    assert tech.patch(f"/api/cells/{first}", json={"class": "PMO"}, headers=csrf).status_code == 409

    outbox = pathologist.get("/api/outbox").json()
    assert len(outbox) == 2 and {o["reference"] for o in outbox} == {"ACC-WF"}  # the P and the F, one OBR-3
    reopened = pathologist.post("/api/cases/ACC-WF/corrections", json={"reason": "a promyelocyte"}, headers=pcsrf)
    assert reopened.status_code == 200
    assert pathologist.patch(f"/api/cells/{first}", json={"class": "PMO"}, headers=pcsrf).is_success
    corrected = pathologist.post("/api/cases/ACC-WF/sign", headers=pcsrf).json()
    assert corrected["status"] == "corrected" and corrected["predecessor"] == signed.json()["sr"]

    trail = pathologist.get("/api/cases/ACC-WF/audit").json()
    actions = [entry["action"] for entry in trail]
    for action in ("case.viewed", "cell.reclassified", "cell.deleted", "cell.added", "case.signed.final",
                   "case.reopened", "case.signed.corrected"):  # fmt: skip
        assert action in actions
    assert httpx.get(f"{url}/api/cases/ACC-WF/audit", headers=VIEWER_TOKEN).status_code == 403
    assert pathologist.get("/api/cases/NOPE").status_code == 404


def test_login_page_session_cookie_dicomweb_and_logout(served) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = served
    browser = httpx.Client(base_url=url)
    page = browser.get("/login")
    assert page.status_code == 200 and "Research use only" in page.text
    wrong = browser.post("/login", data={"login": "tech", "password": "nope", "next": "/review"})
    assert wrong.status_code == 401 and "Wrong login or password" in wrong.text
    evil = browser.post("/login", data={"login": "tech", "password": "tech-pass-1", "next": "//evil.example/"})
    assert evil.status_code == 303 and evil.headers["location"] == "/review"  # no open redirect
    assert browser.get("/dicomweb/studies").status_code == 200  # the viewer reaches DICOMweb with the session
    me = browser.get("/api/me").json()
    assert me["user"] == "tech" and me["csrf"]
    assert browser.post("/logout").status_code == 403  # CSRF token needed
    out = browser.post("/logout", data={"csrf": me["csrf"]})
    assert out.status_code == 303
    assert browser.get("/api/me").status_code == 401
    assert browser.get("/dicomweb/studies").status_code == 401


def _slide_point(store: Store, study: str, cell: dict) -> tuple[float, float]:  # type: ignore[type-arg]
    """The slide coordinates (mm) of a cell's centre, as the viewer reports a click there."""
    from acquisition.wsi import LevelGeometry
    from dicom_store.slides import StoredSlide

    geometry = LevelGeometry.of(StoredSlide.find(store, study).header())
    x0, y0, x1, y1 = cell["bbox"]
    column, row = cell["region"][0] + (x0 + x1) / 2, cell["region"][1] + (y0 + y1) / 2
    x, y, _ = geometry.image_to_slide(np.array([[column + 0.5, row + 0.5]]))[0]
    return float(x), float(y)
