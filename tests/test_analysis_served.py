"""AI results as a hospital sees them: QIDO/WADO from a running server, and Orthanc accepting them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from acquisition import plan_scan, simulate_slide, write_metafer_export
from dicom_store import Store
from dicom_store.dimse.scu import forward
from integration.database import open_index
from integration.scans import study_uid_for
from tests.orthanc import orthanc_server
from tests.servers import marrowlink_server

MARROWLINK = str(Path(sys.executable).parent / "marrowlink")
UID_ROOT = "1.2.826.0.1.3680043.8.498."
RESULT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.91.1",  # Microscopy Bulk Simple Annotations
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
}

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def _cli(*args: str) -> str:
    out = subprocess.run([MARROWLINK, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_results_are_served_and_accepted_by_orthanc(tmp_path: Path, tiny_models) -> None:
    slide = simulate_slide(31, "apl", scan_area_um=(600.0, 300.0))
    overview = slide.render_overview()
    export = tmp_path / "export"
    write_metafer_export(slide, export, plan_scan(overview, n=2), overview=overview)
    data = tmp_path / "data"
    _cli("import-scan", str(export), "--accession", "ACC-SRV", "--data", str(data))
    study = study_uid_for("ACC-SRV", UID_ROOT)
    _cli("analyze", "--study", study, "--data", str(data), "--seg-model", str(tiny_models["seg"]),
         "--cls-model", str(tiny_models["cls"]))  # fmt: skip

    env = {"MARROWLINK_DICOMWEB_PUBLIC_READ": "true"}
    with marrowlink_server(data, env=env) as server:
        client = DICOMwebClient(server.dicomweb_url)
        studies = client.search_for_studies(search_filters={"AccessionNumber": "ACC-SRV"})
        assert [s["0020000D"]["Value"][0] for s in studies] == [study]
        modalities = set(studies[0]["00080061"]["Value"])
        assert {"SM", "SR"} <= modalities
        results = [
            i for i in client.search_for_instances(study_instance_uid=study)
            if i["00080016"]["Value"][0] in RESULT_CLASSES
        ]  # fmt: skip
        assert {i["00080016"]["Value"][0] for i in results} >= {"1.2.840.10008.5.1.4.1.1.88.34"}
        sr_meta = next(i for i in results if i["00080016"]["Value"][0] == "1.2.840.10008.5.1.4.1.1.88.34")
        sr = client.retrieve_instance(study, sr_meta["0020000E"]["Value"][0], sr_meta["00080018"]["Value"][0])
        assert isinstance(sr, pydicom.Dataset) and sr.Modality == "SR"
        assert sr.VerificationFlag == "UNVERIFIED"

    store = Store(open_index(f"sqlite:///{data / 'index.sqlite3'}"), data / "blobs")
    uids = [row.sop_instance_uid for row in store.instances(study) if row.sop_class_uid in RESULT_CLASSES]
    with orthanc_server(tmp_path / "orthanc") as orthanc:
        sent = forward(store, uids, ("127.0.0.1", orthanc.dicom_port, orthanc.ae_title))
        assert sent.ok, sent.failed
        with orthanc.client() as peer:
            assert len(peer.get("/instances").json()) == len(uids)
