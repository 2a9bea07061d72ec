"""Orthanc (Debian package) as an independent DICOM/DICOMweb peer for tests and benchmarks.

``orthanc_server(folder, modalities=...)`` writes a config with free ports, starts ``Orthanc CONFIG``
and waits for its REST API; on exit it stops Orthanc and waits for it. The DICOMweb plugin is
loaded, so QIDO/WADO run at ``{url}/dicom-web/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.servers import wait_for_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_binary() -> str:
    # The Debian package installs it in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("Orthanc", path="/usr/sbin:/usr/bin:/sbin:/usr/local/bin")
    if not found or not DICOMWEB_PLUGIN.exists():
        pytest.fail("Orthanc and its DICOMweb plugin are needed (apt-get install orthanc orthanc-dicomweb)")
    return found


@dataclass
class RunningOrthanc:
    process: subprocess.Popen
    http_port: int
    dicom_port: int
    ae_title: str
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def upload(self, data: bytes) -> str:
        """Store one Part-10 file through the REST API; returns Orthanc's instance id."""
        # No "Expect: 100-continue" round trip (docs/architecture.md §7: curl needs -H 'Expect:').
        answer = httpx.post(f"{self.url}/instances", content=data, timeout=60)
        answer.raise_for_status()
        return answer.json()["ID"]

    def sop_instance_uids(self) -> set[str]:
        with self.client() as http:
            ids = http.get("/instances").json()
            return {http.get(f"/instances/{i}").json()["MainDicomTags"]["SOPInstanceUID"] for i in ids}

    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")


@contextmanager
def orthanc_server(
    folder: Path,
    *,
    ae_title: str = "ORTHANC",
    modalities: Mapping[str, tuple[str, str, int]] | None = None,
    extra: Mapping[str, object] | None = None,
) -> Iterator[RunningOrthanc]:
    """Run Orthanc on free ports with its data in ``folder``.

    ``modalities`` is Orthanc's "DicomModalities": name → (AE title, host, port), e.g.
    ``{"marrowlink": ("MARROWLINK", "127.0.0.1", 11112)}``.
    """
    binary = orthanc_binary()
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "peer",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ae_title,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        # C-FIND is refused unless the caller is a known modality or this is set.
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {name: list(value) for name, value in (modalities or {}).items()},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
        **(extra or {}),
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=1))
    with open(folder / "orthanc.log", "wb") as log:
        process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    running = RunningOrthanc(process, http_port, dicom_port, ae_title, folder)
    try:
        wait_for_port(http_port, timeout=30, process=process)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{running.url}/system", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield running
    except BaseException:
        print(running.log()[-5000:])
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
