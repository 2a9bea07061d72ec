"""The review pages in headless Chromium (Debian's, driven by Playwright): log in, the worklist puts the
critical case first, the gallery reclassifies with the keyboard and the counts follow, sign-off stores a
VERIFIED SR whose counts are the ones the page showed, and the ORU F keeps the P's OBR-3.

Screenshots go to test-artifacts/screenshots/ (or MARROWLINK_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from ai.dicom import read_differential_report
from tests.test_review_api import _slide_point, served  # noqa: F401  (the served review app with an analysed case)
from tests.test_workflow import _obr3, _oru, export  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
VIEWER_BUNDLE = Path(__file__).resolve().parent.parent / "api/static/viewer/dist/dicomMicroscopyViewer.bundle.min.js"
SHOTS = Path(
    os.environ.get("MARROWLINK_SCREENSHOTS", Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots")
)

pytestmark = [pytest.mark.peer, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing")]


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        yield chromium
        chromium.close()


def _counts(page) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rows = page.locator("#differential tbody tr")
    return {rows.nth(i).get_attribute("data-class"): int(rows.nth(i).locator("td").nth(1).inner_text())
            for i in range(rows.count())}  # fmt: skip


def test_a_person_reviews_and_signs_with_the_keyboard(served, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    url, store, engine = served
    with engine.begin() as connection:  # the other case is older: only critical cells put ours first
        connection.execute(
            text("UPDATE cases SET created_at = '2020-01-01 00:00:00' WHERE accession_number = 'ACC-LATER'")
        )
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{url}/review")
    assert "/login" in page.url and "Research use only" in page.content()
    page.fill("input[name=login]", "ppath")
    page.fill("input[name=password]", "path-pass-1")
    page.click("button[type=submit]")
    page.wait_for_selector("#worklist tbody tr")
    page.screenshot(path=SHOTS / "1-worklist-before.png")

    # The case page, reached by keyboard; its first gallery cell becomes a blast (key 1).
    rows = page.locator("#worklist tbody tr")
    accessions = [rows.nth(i).get_attribute("data-accession") for i in range(rows.count())]
    rows.nth(accessions.index("ACC-WF")).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-ready=true]")
    before = _counts(page)
    first = page.locator(".tile").nth(0).get_attribute("data-class")
    assert page.locator("#detail img").count() == 1  # the selected cell, larger, with its likely classes
    page.keyboard.press("1")
    page.wait_for_function("document.querySelector('.tile.changed') !== null")
    assert _counts(page).get("BLA", 0) == before.get("BLA", 0) + (first != "BLA")
    page.screenshot(path=SHOTS / "2-case-after-one-key.png", full_page=True)

    # Back on the worklist the case with a critical cell comes first, though the other one is older.
    page.goto(f"{url}/review")
    page.wait_for_selector("#worklist tbody tr")
    top = page.locator("#worklist tbody tr").nth(0)
    assert top.get_attribute("data-accession") == "ACC-WF" and top.locator(".badge.critical").count() >= 1
    page.screenshot(path=SHOTS / "3-worklist-critical-first.png")
    top.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-ready=true]")

    # The slide in dicom-microscopy-viewer over our /dicomweb with the session: tiles drawn, outlines shown.
    assert VIEWER_BUNDLE.exists(), "the slide viewer's assets are missing: run make setup (scripts/viewer-assets.sh)"
    page.wait_for_selector("#viewer[data-ready=true]", timeout=60_000)
    page.wait_for_timeout(3000)  # tiles arrive and decode in the viewer's worker
    shot = SHOTS / "3b-viewer.png"
    page.locator("#viewer").screenshot(path=shot)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # a slide, not a blank canvas
    # A click on an outline (the viewer's roi_selected event with that outline) shows that cell beside the table.
    cell = _as_page(url, page, "/api/cases/ACC-WF/cells?limit=1")[0]
    x_mm, y_mm = _slide_point(store, _as_page(url, page, "/api/cases/ACC-WF")["study_instance_uid"], cell)
    page.evaluate(
        "([x, y]) => document.getElementById('viewer').dispatchEvent(new CustomEvent("
        "'dicommicroscopyviewer_roi_selected', {detail: {payload: {scoord3d: {graphicData: [[x, y, 0]]}}}}))",
        [x_mm, y_mm],
    )
    page.wait_for_function(f"document.querySelector('#detail h3')?.textContent.startsWith('Cell {cell['id']}:')")
    groups = page.evaluate("window.slideViewer.getAllAnnotationGroups().map(g => g.uid)")
    assert groups  # the cell classes (and AOI classes) of the run's annotations
    # The outlines are drawn: hiding the annotation groups changes what the viewer shows.
    page.evaluate("uids => uids.forEach(u => window.slideViewer.hideAnnotationGroup(u))", groups)
    page.wait_for_timeout(1500)
    page.locator("#viewer").screenshot(path=SHOTS / "3c-viewer-without-outlines.png")
    without = np.asarray(Image.open(SHOTS / "3c-viewer-without-outlines.png").convert("RGB"), dtype=np.float64)
    assert (np.abs(pixels - without).sum(axis=2) > 60).sum() > 200
    page.evaluate("uids => uids.forEach(u => window.slideViewer.showAnnotationGroup(u))", groups)

    # Every unidentified cell classified (key w = NGS), so the case can be signed: a person selects the
    # first one and keeps pressing w; the selection moves on, and on into crops not yet in the page.
    pending = page.locator("section[data-group=UNIDENTIFIED] .tile[data-class=UNIDENTIFIED]")
    if pending.count():
        pending.first.click()
        left = _counts(page).get("UNIDENTIFIED", 0)
        count = "document.querySelector('#differential tr[data-class=UNIDENTIFIED] td:nth-child(2)')?.textContent"
        while left:
            page.keyboard.press("w")
            page.wait_for_function(f"({count} ?? '0') !== '{left}'")
            left = _counts(page).get("UNIDENTIFIED", 0)
    # A cell the AI missed, beside the selected one: a click on the enlarged crop, then its class key (e: EOS).
    eos = _counts(page).get("EOS", 0)
    page.locator("#detail img").click(position={"x": 136, "y": 136})
    page.keyboard.press("e")
    page.wait_for_function(f"document.querySelector('#differential tr[data-class=EOS] td:nth-child(2)')"
                           f"?.textContent === '{eos + 1}'")  # fmt: skip
    shown = _counts(page)
    assert "UNIDENTIFIED" not in shown
    assert "Changes since the AI result" in page.locator("#changes").inner_text()  # what the signer signs off
    page.click("#sign")
    page.wait_for_selector(".message:has-text('Signed')")
    page.screenshot(path=SHOTS / "4-case-signed.png", full_page=True)
    assert page.locator("#case-state").inner_text() == "final"

    page.goto(f"{url}/review")
    page.wait_for_selector("#worklist tbody tr")
    assert page.locator("#worklist tbody tr").nth(0).get_attribute("data-accession") == "ACC-LATER"  # signed: closed
    page.screenshot(path=SHOTS / "5-worklist-after.png")
    assert not errors, errors

    report = [r for r in _sr_reports(store) if r["VerificationFlag"] == "VERIFIED"]
    assert len(report) == 1
    assert {k: v for k, v in report[0]["counts"].items() if v} == shown
    final, preliminary = _oru(engine, "F"), _oru(engine, "P")
    assert len(final) == 1 and _obr3(final[0]) == _obr3(preliminary[0])
    assert "/review/cases/ACC-WF" in final[0]  # the LIS user's way back to the case


def _as_page(url: str, page, path: str):  # type: ignore[no-untyped-def]
    """A GET with the page's session, for what the test must know (never to change anything)."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    return httpx.get(f"{url}{path}", headers={"Cookie": cookies}).json()


def _sr_reports(store) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    out = []
    for ds in store.search("IMAGE", [("Modality", "SR")]):
        full = store.get_dataset(str(ds.SOPInstanceUID))
        report = read_differential_report(full)
        out.append({**report, "VerificationFlag": full.VerificationFlag})
    return out


def test_a_failed_job_is_retried_from_the_worklist(served, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from sqlmodel import Session

    from integration.jobs import Jobs, Step

    url, _store, engine = served
    jobs = Jobs(engine)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job, _ = Jobs.ensure(session, Step.IMPORT, "VM-BROKEN", folder="/scans/processing/broken")
    jobs.claim(job.id, "test:1")
    jobs.fail(job.id, "test:1", "import: the export has no overview image", permanent=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/login")
    page.fill("input[name=login]", "tech")
    page.fill("input[name=password]", "tech-pass-1")
    page.click("button[type=submit]")
    row = page.locator(f"#jobs tbody tr[data-job='{job.id}']")
    row.wait_for()
    assert row.locator(".state").inner_text() == "failed"
    assert "no overview image" in row.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "6-worklist-pipeline.png", full_page=True)
    row.get_by_role("button", name="Retry").click()
    page.wait_for_function(
        f"document.querySelector(\"#jobs tr[data-job='{job.id}'] .state\")?.textContent === 'queued'"
    )
    assert "is queued" in page.locator("#messages").inner_text()
    assert jobs.get(job.id).state == "queued"
