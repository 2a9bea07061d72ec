"""The api shell: bearer auth and roles, the public-read toggle, CORS preflight, health, metrics, landing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from integration.database import open_index
from tests.dicom_factory import secondary_capture, wsi_level
from tests.test_dicomweb_support import READ, WRITE, multipart_body, part10, served_store, stow_headers

VIEWER_ORIGIN = "https://viewer.example.org"


@pytest.fixture
def sqlite_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Auth and CORS do not depend on the database: SQLite only, to keep the suite short."""
    engine = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    yield engine
    engine.dispose()


def test_auth_roles_and_public_read_toggle(sqlite_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    slide, _ = wsi_level(frames=2)
    body = multipart_body([part10(slide)])
    with served_store(sqlite_engine, tmp_path, dicomweb_public_read=False) as served:
        studies = f"{served.dicomweb}/studies"
        anonymous = httpx.post(studies, content=body, headers=stow_headers())
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        bad = httpx.post(studies, content=body, headers=stow_headers(Authorization="Bearer nope-nope"))
        assert bad.status_code == 401
        basic = httpx.post(studies, content=body, headers=stow_headers(Authorization="Basic dXNlcjpwdw=="))
        assert basic.status_code == 401
        viewer = httpx.post(studies, content=body, headers=stow_headers(**READ))
        assert viewer.status_code == 403
        assert httpx.post(studies, content=body, headers=stow_headers(**WRITE)).status_code == 200

        frame = (
            f"{studies}/{slide.StudyInstanceUID}/series/{slide.SeriesInstanceUID}/instances/{slide.SOPInstanceUID}"
            "/frames/1"
        )
        assert httpx.get(studies).status_code == 401
        assert httpx.get(frame).status_code == 401  # the raw frames route checks too
        assert httpx.get(frame).headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(studies, headers=READ).status_code == 200
        assert httpx.get(frame, headers=READ).status_code == 200

        assert httpx.get(f"{served.url}/api/me").status_code == 401
        me = httpx.get(f"{served.url}/api/me", headers=WRITE)
        assert me.json() == {"user": "tom", "roles": ["technologist"], "name": "", "csrf": ""}  # a token: no session

    with served_store(sqlite_engine, tmp_path, dicomweb_public_read=True) as served:
        assert httpx.get(f"{served.dicomweb}/studies").status_code == 200
        assert httpx.post(f"{served.dicomweb}/studies", content=body, headers=stow_headers()).status_code == 401


def test_cors_preflight_and_simple_requests(sqlite_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    slide, _ = wsi_level(frames=1)
    with served_store(sqlite_engine, tmp_path, cors_origins=[VIEWER_ORIGIN]) as served:
        served.store.store_dataset(slide)
        frame = (
            f"{served.dicomweb}/studies/{slide.StudyInstanceUID}/series/{slide.SeriesInstanceUID}"
            f"/instances/{slide.SOPInstanceUID}/frames/1"
        )
        preflight = httpx.options(
            frame,
            headers={
                "Origin": VIEWER_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "accept, authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == VIEWER_ORIGIN
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "accept" in allowed and "authorization" in allowed
        got = httpx.get(
            frame,
            headers={
                "Origin": VIEWER_ORIGIN,
                "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            },
        )
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == VIEWER_ORIGIN
        assert "warning" in got.headers["access-control-expose-headers"].lower()
        foreign = httpx.options(
            frame, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert foreign.status_code == 400
        assert "access-control-allow-origin" not in foreign.headers


def test_health_metrics_and_landing(sqlite_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with served_store(sqlite_engine, tmp_path) as served:
        assert httpx.get(f"{served.url}/healthz").text == "ok"
        ready = httpx.get(f"{served.url}/readyz")
        assert ready.status_code == 200 and ready.json() == {"database": "ok", "blob_store": "ok"}
        landing = httpx.get(f"{served.url}/")
        assert "Research use only, not for clinical diagnosis" in landing.text
        assert 'href="/dicomweb/studies"' in landing.text
        good, bad = part10(secondary_capture()), b"garbage"
        stow = httpx.post(
            f"{served.dicomweb}/studies", content=multipart_body([good, bad]), headers=stow_headers(**WRITE)
        )
        assert stow.status_code == 202
        httpx.get(f"{served.dicomweb}/studies")
        text = httpx.get(f"{served.url}/metrics").text
        assert "marrowlink_instances_stored_total 1.0" in text
        assert 'marrowlink_stow_failures_total{reason="C000"} 1.0' in text
        assert 'marrowlink_http_requests_total{method="GET",route="/dicomweb/studies",status="200"} 1.0' in text
        assert 'route="/readyz"' in text
        assert "marrowlink_index_instances 1.0" in text

        real_tmp = served.store.blobs.tmp
        served.store.blobs.tmp = tmp_path / "gone" / "tmp"  # the blob store stops accepting files
        try:
            unready = httpx.get(f"{served.url}/readyz")
            assert unready.status_code == 503 and unready.json()["blob_store"].startswith("error")
        finally:
            served.store.blobs.tmp = real_tmp
