"""End to end through `marrowlink serve` (a real subprocess): STOW, then kill -9 mid-traffic.

Every instance acknowledged in a 200/202 STOW response must be retrievable after a restart, and the
index must not point at anything missing.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pydicom

from tests.dicom_factory import secondary_capture, wsi_level
from tests.servers import marrowlink_server
from tests.test_dicomweb_support import TOKENS, WRITE, multipart_body, part10, stow_headers

ENV = {"MARROWLINK_TOKENS": json.dumps(TOKENS), "MARROWLINK_DICOMWEB_PUBLIC_READ": "false"}


def _stow_until_stopped(url: str, acknowledged: list[str], stop: threading.Event, cut: threading.Event) -> None:
    seed = 0
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            slide, _ = wsi_level(frames=40, seed=seed)
            batch = [slide, secondary_capture(seed=seed), secondary_capture(seed=seed + 1)]
            seed += 2
            try:
                response = client.post(
                    f"{url}/studies",
                    content=multipart_body([part10(ds) for ds in batch]),
                    headers=stow_headers(**WRITE),
                )
            except httpx.HTTPError:
                cut.set()  # the server died under this request: the batch was never acknowledged
                return
            if response.status_code in (200, 202):
                result = pydicom.Dataset.from_json(response.json())
                acknowledged += [item.ReferencedSOPInstanceUID for item in result.get("ReferencedSOPSequence", [])]


def test_kill_9_during_stow_loses_nothing_acknowledged(tmp_path: Path, index_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    acknowledged: list[str] = []
    with marrowlink_server(data, env=ENV, database_url=index_url) as server:
        assert httpx.get(f"{server.dicomweb_url}/studies").status_code == 401  # public read is off
        stop, cut = threading.Event(), threading.Event()
        writer = threading.Thread(target=_stow_until_stopped, args=(server.dicomweb_url, acknowledged, stop, cut))
        writer.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.15)  # land the kill inside a later request
        server.process.kill()
        server.process.wait()
        writer.join(timeout=30)
        stop.set()
    assert cut.is_set(), "the kill did not land while the client was sending"
    assert len(acknowledged) >= 12

    with (
        marrowlink_server(data, env=ENV, database_url=index_url) as server,
        httpx.Client(headers=WRITE, timeout=30) as client,
    ):
        found = client.get(f"{server.dicomweb_url}/instances", params={"limit": "100000"}).json()
        indexed = {item["00080018"]["Value"][0]: item["00081190"]["Value"][0] for item in found}
        missing = [uid for uid in acknowledged if uid not in indexed]
        assert not missing, f"{len(missing)} acknowledged instances lost"
        for uid, url in indexed.items():  # every index row has its bytes: nothing half-written
            response = client.get(
                url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
            )
            assert response.status_code == 200, uid
            assert uid.encode() in response.content
