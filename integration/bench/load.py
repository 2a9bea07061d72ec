"""Servers under test (ours, Orthanc) and the load generator (wrk) for ``integration.bench.dicomweb``.

Our server and Orthanc run as subprocesses so that server and load generator are separate processes,
as in production; wrk (Debian) drives the frames route with random frame numbers. Our server is either
the production command (a :class:`ServeCommand` from the caller: ``marrowlink serve`` with its HTTP
worker processes) or, standalone, this module's ``_serve`` in one or more processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: Write access to the server under test (STOW); it listens on 127.0.0.1 only, for the run's length.
BENCH_TOKEN = "bench-token-local-only"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never the same one twice in a run.

    Binding port 0 and closing it can return the same port to two calls in a row, and two servers
    told to share a port fail at start.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass(frozen=True)
class ServeCommand:
    """How to run the production server (`marrowlink serve`) over a data dir.

    ``argv(data, http_port, dicom_port)`` is its command line, ``env`` changes the environment (a
    None value removes a variable), ``http_workers`` is how many processes serve its HTTP port, and
    ``open_index(url)`` makes the index it expects (migrated), for data prepared before it starts.
    """

    argv: Callable[[Path, int, int], list[str]]
    open_index: Callable[[str], Any]
    http_workers: int = 1
    env: Mapping[str, str | None] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        return {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}


def _wait_http(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def _serve(data: str, port: int, stack: str, reuse_port: bool = False) -> None:
    """Subprocess entry: serve the DICOMweb app (or the whole api) over ``data`` on ``port``; with
    ``reuse_port`` several such processes share the port (SO_REUSEPORT, Linux)."""
    import uvicorn

    from dicom_store.store import Store
    from integration.database import open_index

    engine = open_index(f"sqlite:///{data}/index.sqlite3")
    store = Store(engine, Path(data) / "blobs")
    app: Any
    if stack == "ceiling":
        app = _constant_app(9320)
    elif stack == "api":
        from api import ApiConfig, create_app  # the full HTTP stack a user gets (gateway, metrics, auth)

        tokens = [{"token": BENCH_TOKEN, "user": "bench", "roles": ["integrator"]}]
        app = create_app(store, ApiConfig(dicomweb_public_read=True, tokens=tokens, max_request_bytes=8 << 30))
    else:
        from dicom_store.dicomweb import allow_all, dicomweb_app

        app = dicomweb_app(store, authorize=allow_all, max_request_bytes=1 << 30)
    options: dict[str, Any] = {}
    if stack != "ceiling":  # as ``marrowlink serve`` runs it (http_fast_frames)
        from dicom_store.dicomweb.fast_http import app_frames_route, frames_protocol

        route = app_frames_route(app)
        prefix = "/dicomweb" if stack == "api" else ""
        protocol = frames_protocol(
            route, prefix=prefix, observe=getattr(getattr(app, "metrics", None), "observe", None)
        )
        if route is not None and protocol is not None:
            options["http"] = protocol
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options)
    if not reuse_port:
        uvicorn.Server(config).run()
        return
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    uvicorn.Server(config).run(sockets=[sock])


def _constant_app(size: int) -> Any:
    """The server's ceiling: an ASGI app that answers every request with ``size`` constant bytes."""
    body = b"\0" * size
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())],
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send(start)
            await send({"type": "http.response.body", "body": body})

    return app


class ServerUnderTest:
    """Our server in subprocesses: ``command`` (the production server; for the "api" stack), or
    ``workers`` processes of ``_serve`` sharing the port."""

    def __init__(self, data: Path, stack: str, *, command: ServeCommand | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.log = open(data / f"serve-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.prefix = "/dicomweb" if stack in ("api", "ceiling") else ""
        self.processes: list[subprocess.Popen] = []
        if command is not None and stack == "api":
            self.dicom_port = free_port()
            self.workers = command.http_workers
            argv = command.argv(data, self.port, self.dicom_port)
            env = command.environment()
            self.processes.append(subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env))
        else:
            self.workers = workers
            for _ in range(workers):
                code = (
                    "from integration.bench.load import _serve; "
                    f"_serve({str(data)!r}, {self.port}, {stack!r}, {workers > 1})"
                )
                process = subprocess.Popen([sys.executable, "-c", code], stdout=self.log, stderr=subprocess.STDOUT)
                self.processes.append(process)
        try:
            _wait_http(f"http://127.0.0.1:{self.port}/", self.processes[0])
            wait_listening(self.port, self.workers, self.processes[0])
        except BaseException:
            self.stop()
            raise

    @property
    def process(self) -> subprocess.Popen:
        return self.processes[0]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.log.close()


def listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1/0.0.0.0:``port`` (from /proc/net/tcp; -1 where there is none)."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        return -1
    wanted = f":{port:04X} "
    return sum(1 for line in table.splitlines()[1:] if wanted in line and line.split()[3] == "0A")


def wait_listening(port: int, count: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until ``count`` sockets listen on ``port`` (every HTTP process is up), so that the load that
    follows spreads over all of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = listeners(port)
        if found < 0 or found >= count:
            return
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} while its HTTP processes started")
        time.sleep(0.1)
    raise TimeoutError(f"only {listeners(port)} of {count} HTTP processes listen on port {port} after {timeout} s")


# ---- Orthanc ---------------------------------------------------------------------------------------------


class OrthancPeer:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        storage = folder / "orthanc"
        storage.mkdir()
        config = {
            "Name": "peer",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.port,
            "DicomPort": free_port(),
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowFind": True,
            "Plugins": [ORTHANC_DICOMWEB],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=self.log, stderr=self.log)
        _wait_http(f"{self.url}/system", self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upload(self, path: Path) -> str:
        response = httpx.post(f"{self.url}/instances", content=path.read_bytes(), timeout=120)
        response.raise_for_status()
        return response.json()["ID"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# ---- load ------------------------------------------------------------------------------------------------

_LUA = """
math.randomseed(%(seed)d)
local prefix, suffix, frames, first = "%(prefix)s", "%(suffix)s", %(frames)d, %(first)d
local headers = {["Accept"] = '%(accept)s'}
request = function()
  return wrk.format("GET", prefix .. (math.random(1, frames) - 1 + first) .. suffix, headers)
end
"""


def _parse_wrk(text: str) -> dict[str, float]:
    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    total = re.search(r"([0-9]+) requests in", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "frames_per_s": round(float(rate.group(1)), 1) if rate else float("nan"),
        "p50_ms": round(latency_ms("50"), 3),
        "p99_ms": round(latency_ms("99"), 3),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
        "requests": int(total.group(1)) if total else 0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pids: int | Iterable[int]) -> float:
    """CPU time of processes and all their living descendants (a server's worker processes)."""
    roots = {pids} if isinstance(pids, int) else set(pids)
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError):
            continue
        todo += children.get(pid, [])
    return total


def wrk_frames(
    host: str,
    prefix: str,
    suffix: str,
    frames: int,
    *,
    seconds: float,
    connections: int,
    accept: str = ACCEPT,
    first: int = 1,
    server_pid: int | Iterable[int] | None = None,
) -> dict[str, float]:
    """Random frame numbers (``first`` is 1 for DICOMweb, 0 for Orthanc's REST) over keep-alive connections.

    With ``server_pid`` (one or several; their child processes count too), also the server's CPU time
    per request: it moves less than frames/s when other jobs share the machine, so it compares servers
    fairly on a busy host.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            _LUA % {"seed": 7, "prefix": prefix, "suffix": suffix, "frames": frames, "accept": accept, "first": first}
        )
    try:
        threads = min(2, connections)
        command = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "--latency",
        ]
        command += ["-s", script.name, host]
        cpu_before = tree_cpu_seconds(server_pid) if server_pid else 0.0
        output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
        cpu_after = tree_cpu_seconds(server_pid) if server_pid else 0.0
    finally:
        os.unlink(script.name)
    result = _parse_wrk(output)
    if server_pid and result["requests"]:
        result["server_cpu_us_per_request"] = round((cpu_after - cpu_before) / result["requests"] * 1e6, 1)
    return result


def check_frame(url: str, accept: str, expected: bytes) -> None:
    response = httpx.get(url, headers={"Accept": accept}, timeout=120)
    response.raise_for_status()
    if expected.rstrip(b"\x00") not in response.content:  # Orthanc drops the even-length pad byte
        raise AssertionError(f"{url} did not return the stored frame bytes")


# ---- benchmarks ------------------------------------------------------------------------------------------
