"""Shared by the DICOMweb/api tests: a Store plus our app served by uvicorn on a free port, in a thread.

No test functions here; the module name keeps it inside the files this suite owns.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import uvicorn

from api import ApiConfig, create_app
from dicom_store import Store
from tests.conftest import free_port

TOKENS = [
    {"token": "viewer-token-0001", "user": "vera", "roles": ["viewer"]},
    {"token": "tech-token-0001", "user": "tom", "roles": ["technologist"]},
    {"token": "path-token-0001", "user": "paula", "roles": ["pathologist"]},
    {"token": "integrator-token-0001", "user": "lis", "roles": ["integrator"]},
]
WRITE = {"Authorization": "Bearer tech-token-0001"}
READ = {"Authorization": "Bearer viewer-token-0001"}


@dataclass
class Served:
    url: str
    store: Store
    app: object

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicomweb"


@contextmanager
def serve(app: object, **options: Any) -> Iterator[str]:
    """uvicorn in a daemon thread (more uvicorn.Config options in `options`); stops when the block ends."""
    port = free_port()
    options = {"lifespan": "on", **options}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def served_store(engine, tmp_path: Path, **config: object) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    store = Store(engine, tmp_path / "blobs")
    settings = {"tokens": TOKENS, "dicomweb_public_read": True, **config}
    app = create_app(store, ApiConfig(**settings))
    with serve(app) as url:
        yield Served(url, store, app)


def part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart_body(
    parts: list[bytes], boundary: str = "test-boundary-1234", part_type: str = "application/dicom"
) -> bytes:
    out = b""
    for data in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def stow_headers(boundary: str = "test-boundary-1234", **extra: str) -> dict[str, str]:
    return {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', **extra}


def blob_files(store: Store) -> list[Path]:
    return [p for p in store.blobs.root.rglob("*") if p.is_file()]
