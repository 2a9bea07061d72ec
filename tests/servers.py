"""`marrowlink serve` as a real subprocess for end-to-end tests (what a hospital would run)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port

MARROWLINK = str(Path(sys.executable).parent / "marrowlink")


@dataclass
class RunningServer:
    process: subprocess.Popen
    data_dir: Path
    http_port: int
    dicom_port: int
    mllp_port: int
    ae_title: str
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicomweb"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before opening port {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


@contextmanager
def marrowlink_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    ae_title: str = "MARROWLINK",
    database_url: str | None = None,
    args: list[str] | None = None,
    log_name: str | None = None,
) -> Iterator[RunningServer]:
    """Start `marrowlink serve` on free ports; stop it with SIGINT (Ctrl-C) and check it exits cleanly."""
    http_port, dicom_port, mllp_port = free_port(), free_port(), free_port()
    log_path = data_dir.parent / (log_name or f"serve-{http_port}.log")
    environment = {**os.environ, "MARROWLINK_AE_TITLE": ae_title, **(env or {})}
    environment.pop("MARROWLINK_CONFIG", None)
    if database_url:
        environment["DATABASE_URL"] = database_url
    for key, value in list(environment.items()):
        if not isinstance(value, str):
            environment[key] = json.dumps(value)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                MARROWLINK,
                "serve",
                "--data",
                str(data_dir),
                "--http-port",
                str(http_port),
                "--dicom-port",
                str(dicom_port),
                "--mllp-port",
                str(mllp_port),
                *(args or []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    server = RunningServer(process, data_dir, http_port, dicom_port, mllp_port, ae_title, log_path)
    try:
        wait_for_port(http_port, process=process)
        wait_for_port(dicom_port, process=process)
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.base_url}/healthz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield server
    except BaseException:
        print(server.log())
        raise
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
