"""Frames Accept negotiation, decoded frames, errors, forwarded links and metadata caching."""

from __future__ import annotations

import io

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.dicom_factory import secondary_capture, wsi_level
from tests.test_dicomweb_support import served_store

OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
POINTS = np.array([34.625, 12.5, 35.0, 13.25, 36.5, 12.0], dtype="<f4")


def _parts(response: httpx.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].encode()
    chunks = response.content.split(b"--" + boundary)
    return [chunk.split(b"\r\n\r\n", 1)[1][:-2] for chunk in chunks[1:-1]]


@pytest.fixture
def slide_server(engine, tmp_path):  # type: ignore[no-untyped-def]
    slide, frames = wsi_level(frames=6)
    frames = [f + b"\x00" * (len(f) % 2) for f in frames]
    sc = secondary_capture(size=8)
    group = pydicom.Dataset()  # ANN-like float data: must never come back as a truncated Value
    group.PointCoordinatesData = POINTS.tobytes()
    group.DoublePointCoordinatesData = POINTS.astype("<f8").tobytes()
    sc.AnnotationGroupSequence = [group]
    with served_store(engine, tmp_path) as served:
        served.store.store_dataset(slide)
        served.store.store_dataset(sc)
        base = f"{served.dicomweb}/studies/{slide.StudyInstanceUID}/series/{slide.SeriesInstanceUID}"
        sc_base = f"{served.dicomweb}/studies/{sc.StudyInstanceUID}/series/{sc.SeriesInstanceUID}"
        yield served, f"{base}/instances/{slide.SOPInstanceUID}", frames, f"{sc_base}/instances/{sc.SOPInstanceUID}", sc


def test_frames_negotiation(slide_server) -> None:  # type: ignore[no-untyped-def]
    _served, url, frames, sc_url, sc = slide_server
    jpeg = "1.2.840.10008.1.2.4.50"
    r = httpx.get(f"{url}/frames/2,4", headers={"Accept": OCTET_ANY})
    assert r.status_code == 200
    assert f"transfer-syntax={jpeg}" in r.headers["content-type"]
    assert _parts(r) == [frames[1], frames[3]]
    assert f"Content-Type: application/octet-stream; transfer-syntax={jpeg}".encode() in r.content

    r = httpx.get(
        f"{url}/frames/1", headers={"Accept": f'multipart/related; type="image/jpeg"; transfer-syntax={jpeg}'}
    )
    assert _parts(r) == [frames[0]] and b"Content-Type: image/jpeg" in r.content
    single = httpx.get(f"{url}/frames/3", headers={"Accept": "image/jpeg"})
    assert single.headers["content-type"].startswith("image/jpeg") and single.content == frames[2]
    assert httpx.get(f"{url}/frames/1,2", headers={"Accept": "image/jpeg"}).status_code == 406

    j2k = 'multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90'
    refused = httpx.get(f"{url}/frames/1", headers={"Accept": j2k})
    assert refused.status_code == 406 and "1.2.840.10008.1.2.4.50" in refused.json()["detail"]
    fallback = httpx.get(f"{url}/frames/1", headers={"Accept": f"{j2k}, {OCTET_ANY};q=0.5"})
    assert fallback.status_code == 200 and _parts(fallback) == [frames[0]]

    decoded = httpx.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert decoded.status_code == 200
    assert "transfer-syntax=1.2.840.10008.1.2.1" in decoded.headers["content-type"]
    pixels = np.frombuffer(_parts(decoded)[0], np.uint8)
    assert pixels.size == 256 * 256 * 3
    assert np.array_equal(pixels, imagecodecs.jpeg8_decode(frames[0]).ravel())

    native = httpx.get(f"{sc_url}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert _parts(native) == [sc.PixelData]

    assert httpx.get(f"{url}/frames/7", headers={"Accept": OCTET_ANY}).status_code == 404
    assert httpx.get(f"{url}/frames/0", headers={"Accept": OCTET_ANY}).status_code == 404
    wrong_study = url.replace("/studies/", "/studies/1.2.3", 1)
    assert httpx.get(f"{wrong_study}/frames/1", headers={"Accept": OCTET_ANY}).status_code == 404
    assert httpx.get(f"{url}/frames/1", headers={"Accept": "text/html"}).status_code == 406


def test_forwarded_links_metadata_cache_and_rendered(slide_server) -> None:  # type: ignore[no-untyped-def]
    served, url, _, sc_url, _ = slide_server
    proxied = {"X-Forwarded-Host": "pacs.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/mw"}
    first = httpx.get(f"{url}/metadata", headers=proxied).json()[0]
    assert first["7FE00010"]["BulkDataURI"].startswith("https://pacs.example.org/mw/dicomweb/studies/")
    hostile = httpx.get(f"{url}/metadata", headers={"X-Forwarded-Host": 'evil"}, {"x'}).json()[0]
    assert hostile["7FE00010"]["BulkDataURI"].startswith(served.dicomweb + "/studies/")
    plain = httpx.get(f"{url}/metadata").json()[0]
    assert plain["7FE00010"]["BulkDataURI"].startswith(served.dicomweb + "/studies/")
    assert len(served.app.dicomweb.ctx.metadata_cache._entries) == 1  # built once, served three times

    qido = httpx.get(f"{served.dicomweb}/studies", params={"PatientName": "DOE*", "Frobnicate": "1"})
    assert qido.status_code == 200 and "Frobnicate" in qido.headers["warning"]
    assert httpx.get(f"{served.dicomweb}/studies", params={"StudyDate": "yesterday"}).status_code == 400
    assert httpx.get(f"{served.dicomweb}/studies", params={"limit": "-1"}).status_code == 400
    empty = httpx.get(f"{served.dicomweb}/series", params={"Modality": "MR"})
    assert empty.status_code == 200 and empty.json() == []

    group = httpx.get(f"{sc_url}/metadata").json()[0]["006A0002"]["Value"][0]
    for tag, vr, dtype in (("00660016", "OF", "<f4"), ("00660022", "OD", "<f8")):
        assert group[tag]["vr"] == vr and set(group[tag]) == {"vr", "BulkDataURI"}
        assert group[tag]["BulkDataURI"].endswith(f"/bulkdata/006A0002/0/{tag}")
        raw = httpx.get(group[tag]["BulkDataURI"], headers={"Accept": "application/octet-stream"})
        assert raw.headers["content-type"] == "application/octet-stream"
        assert np.array_equal(np.frombuffer(raw.content, dtype), POINTS.astype(dtype))
    assert httpx.get(f"{sc_url}/bulkdata/006A0002/5/00660016").status_code == 404
    assert httpx.get(f"{sc_url}/bulkdata/..%2F..%2Fetc").status_code in (400, 404)

    png = httpx.get(f"{sc_url}/rendered", headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert httpx.get(f"{sc_url}/rendered", headers={"Accept": "image/gif"}).status_code == 406
    assert httpx.get(f"{sc_url}/rendered", params={"viewport": "0,0"}).status_code == 400
    default = httpx.get(f"{url}/thumbnail")
    assert default.headers["content-type"] == "image/jpeg"


def test_rendered_tiled_sparse_places_frames_by_plane_position(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A TILED_SPARSE level: frames go where their Plane Position (Slide) says, gaps stay white glass."""
    slide, _ = wsi_level(frames=2, tile=64)
    slide.DimensionOrganizationType = "TILED_SPARSE"
    slide.TotalPixelMatrixColumns, slide.TotalPixelMatrixRows = 256, 128
    items = []
    for row, column in ((1, 1), (65, 193)):  # top-left tile and bottom-right tile
        plane = pydicom.Dataset()
        plane.RowPositionInTotalImagePixelMatrix, plane.ColumnPositionInTotalImagePixelMatrix = row, column
        plane.XOffsetInSlideCoordinateSystem, plane.YOffsetInSlideCoordinateSystem = 0.0, 0.0
        item = pydicom.Dataset()
        item.PlanePositionSlideSequence = [plane]
        items.append(item)
    slide.PerFrameFunctionalGroupsSequence = items
    with served_store(engine, tmp_path) as served:
        served.store.store_dataset(slide)
        url = (
            f"{served.dicomweb}/studies/{slide.StudyInstanceUID}/series/{slide.SeriesInstanceUID}"
            f"/instances/{slide.SOPInstanceUID}/rendered"
        )
        response = httpx.get(url, headers={"Accept": "image/png"})
        assert response.status_code == 200
        image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
        assert image.shape == (128, 256, 3)
        pink = np.array([230, 200, 210])
        assert abs(image[40, 40] - pink).max() < 40  # first tile
        assert abs(image[100, 220] - pink).max() < 40  # second tile, bottom right
        assert (image[100, 40] == 255).all() and (image[30, 220] == 255).all()  # no tile there


def test_long_frame_lists_are_streamed_in_batches(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    slide, frames = wsi_level(frames=150, tile=16)
    frames = [f + b"\x00" * (len(f) % 2) for f in frames]
    with served_store(engine, tmp_path) as served:
        served.store.store_dataset(slide)
        url = (
            f"{served.dicomweb}/studies/{slide.StudyInstanceUID}/series/{slide.SeriesInstanceUID}"
            f"/instances/{slide.SOPInstanceUID}/frames/" + ",".join(str(n) for n in range(150, 0, -1))
        )
        response = httpx.get(url, headers={"Accept": OCTET_ANY})
        assert response.status_code == 200
        assert _parts(response) == frames[::-1]
        decoded = httpx.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        assert [len(p) for p in _parts(decoded)] == [16 * 16 * 3] * 150
