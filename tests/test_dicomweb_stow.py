"""STOW-RS with hostile input: each refusal has the right status and reason, and nothing is half-written."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from dicom_store.models import Instance
from tests.dicom_factory import secondary_capture
from tests.test_dicomweb_support import WRITE, blob_files, multipart_body, part10, served_store, stow_headers


def _instances(store) -> int:  # type: ignore[no-untyped-def]
    with Session(store.engine) as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


def _failures(response: httpx.Response) -> list[pydicom.Dataset]:
    return list(pydicom.Dataset.from_json(response.json()).get("FailedSOPSequence", []))


def test_bad_parts_are_refused_one_by_one(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = secondary_capture()
    truncated = part10(secondary_capture(size=64))[:-500]
    no_uid = secondary_capture()
    del no_uid.SOPInstanceUID
    del no_uid.file_meta.MediaStorageSOPInstanceUID
    no_uid.preamble = b"\x00" * 128
    no_uid_bytes = io.BytesIO()
    pydicom.dcmwrite(no_uid_bytes, no_uid, enforce_file_format=False)
    hostile = secondary_capture()
    hostile.SOPInstanceUID = "../../../etc/passwd"
    hostile.file_meta.MediaStorageSOPInstanceUID = "../../../etc/passwd"
    body = multipart_body(
        [
            part10(good),
            b"this is not DICOM at all",
            truncated,
            no_uid_bytes.getvalue(),
            part10(hostile),
        ]
    )
    with served_store(engine, tmp_path) as served:
        response = httpx.post(f"{served.dicomweb}/studies", content=body, headers=stow_headers(**WRITE))
        assert response.status_code == 202, response.text
        result = pydicom.Dataset.from_json(response.json())
        assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [good.SOPInstanceUID]
        failed = _failures(response)
        assert len(failed) == 4
        assert {item.FailureReason for item in failed} == {0xC000}
        assert all(item.ErrorComment for item in failed)
        warning = response.headers["warning"]
        assert "part 2" in warning and "truncated" in warning and "SOPInstanceUID" in warning
        assert "not a valid DICOM UID" in warning
        assert _instances(served.store) == 1
        assert len(blob_files(served.store)) == 1  # the good one; no temp files, nothing outside
        assert not list(served.store.blobs.tmp.iterdir())
        assert not (tmp_path / "etc").exists()

        again = httpx.post(
            f"{served.dicomweb}/studies", content=multipart_body([part10(good)]), headers=stow_headers(**WRITE)
        )
        assert again.status_code == 409
        assert [item.FailureReason for item in _failures(again)] == [0x0111]


def test_study_mismatch_and_request_level_errors(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with served_store(engine, tmp_path, max_request_bytes=200_000) as served:
        target = pydicom.uid.generate_uid()
        inside, outside = secondary_capture(study_uid=target), secondary_capture()
        url = f"{served.dicomweb}/studies/{target}"
        response = httpx.post(
            url, content=multipart_body([part10(inside), part10(outside)]), headers=stow_headers(**WRITE)
        )
        assert response.status_code == 202
        failed = _failures(response)
        assert [(f.ReferencedSOPInstanceUID, f.FailureReason) for f in failed] == [(outside.SOPInstanceUID, 0xA900)]

        big = multipart_body([part10(secondary_capture(size=512, seed=i)) for i in range(2)])  # ~520 KB
        too_big = httpx.post(f"{served.dicomweb}/studies", content=big, headers=stow_headers(**WRITE))
        assert too_big.status_code == 413
        assert [f.FailureReason for f in _failures(too_big)] == [0xA700]

        def chunked():  # no Content-Length: the limit is enforced while streaming
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        streamed = httpx.post(f"{served.dicomweb}/studies", content=chunked(), headers=stow_headers(**WRITE))
        assert streamed.status_code == 413

        wrong_type = httpx.post(
            f"{served.dicomweb}/studies", content=b"{}", headers={**WRITE, "Content-Type": "application/json"}
        )
        assert wrong_type.status_code == 415
        cut = multipart_body([part10(secondary_capture())])[:-40]
        malformed = httpx.post(f"{served.dicomweb}/studies", content=cut, headers=stow_headers(**WRITE))
        assert malformed.status_code == 400
        no_parts = httpx.post(f"{served.dicomweb}/studies", content=b"nothing here", headers=stow_headers(**WRITE))
        assert no_parts.status_code == 400
        assert _instances(served.store) == 1
        assert len(blob_files(served.store)) == 1
        assert not list(served.store.blobs.tmp.iterdir())


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_multipart_reader_handles_any_chunking(tmp_path, chunk: int) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from dicom_store.dicomweb.multipart import read_parts

    payloads = [b"\r\n--not-the-boundary\r\n" + bytes(range(256)) * 5, b"", b"x" * 1000]
    body = b"preamble\r\n" + multipart_body(payloads, boundary="b0undary")
    counter = iter(range(100))

    async def chunks():
        for start in range(0, len(body), chunk):
            yield body[start : start + chunk]

    parts = asyncio.run(read_parts(chunks(), "b0undary", lambda: tmp_path / f"p{next(counter)}", 10**6))
    assert [p.path.read_bytes() for p in parts] == payloads
    assert parts[0].headers["content-type"] == "application/dicom"
