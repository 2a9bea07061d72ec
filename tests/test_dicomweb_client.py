"""dicomweb-client (an independent DICOMweb implementation) against our server on a real port."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset

from tests.dicom_factory import secondary_capture, wsi_level
from tests.test_dicomweb_support import WRITE, served_store

OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _slide() -> tuple[Dataset, list[bytes]]:
    """A WSI level with an ICC profile nested in the optical path (a binary value DMV fetches).

    Returns the frames as stored: each fragment padded to even length (PS3.5 §A.4).
    """
    ds, frames = wsi_level(frames=9, patient_name="SMITH^ANNA", patient_id="P002", accession="ACC002")
    frames = [f + b"\x00" * (len(f) % 2) for f in frames]
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.ICCProfile = bytes(range(256)) * 3
    ds.OpticalPathSequence = [path]
    ds.StudyDate = "20260301"
    return ds, frames


@pytest.fixture
def served(engine, tmp_path):  # type: ignore[no-untyped-def]
    with served_store(engine, tmp_path) as running:
        yield running


def test_store_search_retrieve(served) -> None:  # type: ignore[no-untyped-def]
    client = DICOMwebClient(served.dicomweb, headers=WRITE)
    study_a = pydicom.uid.generate_uid()
    scs = [
        secondary_capture(study_uid=study_a, patient_name="DOE^JANE", instance_number=1, seed=1),
        secondary_capture(study_uid=study_a, patient_name="DOE^JANE", instance_number=2, seed=2),
    ]
    slide, frames = _slide()
    response = client.store_instances([*scs, slide])
    stored = {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence}
    assert stored == {scs[0].SOPInstanceUID, scs[1].SOPInstanceUID, slide.SOPInstanceUID}
    assert "FailedSOPSequence" not in response
    assert all(item.RetrieveURL.startswith(served.dicomweb + "/studies/") for item in response.ReferencedSOPSequence)

    # QIDO: wildcard, fuzzy, ModalitiesInStudy, date range, limit/offset, includefield
    assert {s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"PatientName": "DOE*"})} == {
        study_a
    }
    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "ann"})
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [slide.StudyInstanceUID]
    sm = client.search_for_studies(search_filters={"ModalitiesInStudy": "SM"})
    assert [s["0020000D"]["Value"][0] for s in sm] == [slide.StudyInstanceUID]
    assert sm[0]["00080061"]["Value"] == ["SM"]
    assert sm[0]["00081190"]["Value"][0] == f"{served.dicomweb}/studies/{slide.StudyInstanceUID}"
    dated = client.search_for_studies(search_filters={"StudyDate": "20260101-20260331"})
    assert [s["0020000D"]["Value"][0] for s in dated] == [slide.StudyInstanceUID]
    first = client.search_for_studies(limit=1)
    second = client.search_for_studies(limit=1, offset=1)
    assert len(first) == len(second) == 1 and first != second
    assert client.search_for_studies(search_filters={"PatientName": "NOBODY"}) == []
    series = client.search_for_series(slide.StudyInstanceUID, search_filters={"Modality": "SM"})
    assert [s["0020000E"]["Value"][0] for s in series] == [slide.SeriesInstanceUID]
    instances = client.search_for_instances(study_a, fields=["NumberOfFrames", "ImageType"])
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(s.SOPInstanceUID for s in scs)
    wsi = client.search_for_instances(slide.StudyInstanceUID, slide.SeriesInstanceUID, fields=["ImageType"])
    assert wsi[0]["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert wsi[0]["00280008"]["Value"] == [9]

    # WADO: instance, metadata with BulkDataURIs that return the exact bytes, frames as stored
    back = client.retrieve_instance(study_a, scs[0].SeriesInstanceUID, scs[0].SOPInstanceUID)
    assert back.SOPInstanceUID == scs[0].SOPInstanceUID and back.PixelData == scs[0].PixelData
    metadata = client.retrieve_series_metadata(slide.StudyInstanceUID, slide.SeriesInstanceUID)
    assert len(metadata) == 1
    meta = metadata[0]
    assert "Value" not in meta["7FE00010"] and "InlineBinary" not in meta["7FE00010"]
    icc = meta["00480105"]["Value"][0]["00282000"]
    assert icc["vr"] == "OB" and set(icc) == {"vr", "BulkDataURI"}
    assert icc["BulkDataURI"].startswith(served.dicomweb + "/studies/")
    assert client.retrieve_bulkdata(icc["BulkDataURI"]) == [bytes(range(256)) * 3]
    assert client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"]) == frames

    got = client.retrieve_instance_frames(
        slide.StudyInstanceUID,
        slide.SeriesInstanceUID,
        slide.SOPInstanceUID,
        [1, 5, 9],
        media_types=(("application/octet-stream", "*"),),
    )
    assert got == [frames[0], frames[4], frames[8]]
    default = client.retrieve_instance_frames(
        slide.StudyInstanceUID, slide.SeriesInstanceUID, slide.SOPInstanceUID, [2]
    )
    assert default == [frames[1]]
    jpeg = client.retrieve_instance_frames(
        slide.StudyInstanceUID, slide.SeriesInstanceUID, slide.SOPInstanceUID, [3], media_types=("image/jpeg",)
    )
    assert jpeg == [frames[2]]

    # rendered PNG of the whole tiled level, fitted into the viewport
    base = f"{served.dicomweb}/studies/{slide.StudyInstanceUID}/series/{slide.SeriesInstanceUID}"
    url = f"{base}/instances/{slide.SOPInstanceUID}/rendered"
    rendered = httpx.get(url, params={"viewport": "200,120"}, headers={"Accept": "image/png"})
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(rendered.content))
    assert image.size == (120, 120)  # 768x768 matrix fitted into 200x120
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert abs(pixels[60, 60] - np.array([230, 200, 210])).max() < 40  # the tiles' pink background
    thumb = httpx.get(f"{base}/instances/{slide.SOPInstanceUID}/frames/1/thumbnail", headers={"Accept": "image/jpeg"})
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"


def test_study_and_series_retrieve_stream_all_instances(served) -> None:  # type: ignore[no-untyped-def]
    client = DICOMwebClient(served.dicomweb, headers=WRITE)
    slide, _ = _slide()
    other = secondary_capture(study_uid=slide.StudyInstanceUID)
    client.store_instances([slide, other])
    study = client.retrieve_study(slide.StudyInstanceUID)
    assert {ds.SOPInstanceUID for ds in study} == {slide.SOPInstanceUID, other.SOPInstanceUID}
    series = client.retrieve_series(slide.StudyInstanceUID, slide.SeriesInstanceUID)
    assert [ds.SOPInstanceUID for ds in series] == [slide.SOPInstanceUID]
    assert series[0].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    study_meta = client.retrieve_study_metadata(slide.StudyInstanceUID)
    assert len(study_meta) == 2
