"""`marrowlink serve` with two HTTP processes (http_workers): both serve the port, over one data dir.

Which process answers a connection is read from /proc (the process that holds the accepted socket),
so each step below is known to have gone through the main process or through the worker.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from integration.bench.load import listeners
from tests.dicom_factory import wsi_level
from tests.servers import marrowlink_server
from tests.test_dicomweb_support import TOKENS, WRITE, multipart_body, part10, stow_headers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing and /proc")

OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
ENV = {
    "MARROWLINK_HTTP_WORKERS": "2",
    "MARROWLINK_TOKENS": json.dumps(TOKENS),
    "MARROWLINK_DICOMWEB_PUBLIC_READ": "true",
    "MARROWLINK_DUPLICATE_POLICY": "replace",
}


def wait_for(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def http_children(pid: int) -> set[int]:
    """The HTTP worker processes of ``pid`` (multiprocessing children that are not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def serving_pid(server_port: int, client_port: int, pids: set[int]) -> int | None:
    """Which of ``pids`` holds the accepted end of the connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if local.endswith(f":{server_port:04X}") and remote.endswith(f":{client_port:04X}"):
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def connections_to(port: int, pids: set[int]) -> dict[int, http.client.HTTPConnection]:
    """Keep-alive connections to the port until one is served by each of ``pids`` (the kernel spreads
    connections by their address, so a few tries are needed)."""
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(64):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b"ok"
        assert connection.sock is not None
        pid = serving_pid(port, connection.sock.getsockname()[1], pids)
        if pid is not None and pid not in found:
            found[pid] = connection
        else:
            connection.close()
        if len(found) == len(pids):
            return found
    raise AssertionError(f"connections reached only {sorted(found)} of {sorted(pids)}")


def get(connection: http.client.HTTPConnection, path: str, accept: str) -> tuple[int, bytes]:
    connection.request("GET", path, headers={"Accept": accept})
    response = connection.getresponse()
    return response.status, response.read()


def stow(connection: http.client.HTTPConnection, body: bytes) -> int:
    connection.request("POST", "/dicomweb/studies", body=body, headers=stow_headers(**WRITE))
    response = connection.getresponse()
    response.read()
    return response.status


def test_two_http_processes_share_the_port_and_the_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    first, first_frames = wsi_level(frames=2, seed=1)
    second, second_frames = wsi_level(frames=2, seed=2, study_uid=first.StudyInstanceUID)
    second.SeriesInstanceUID, second.SOPInstanceUID = first.SeriesInstanceUID, first.SOPInstanceUID
    second.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    frames_path = (
        f"/dicomweb/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"
        f"/instances/{first.SOPInstanceUID}/frames/1"
    )
    with marrowlink_server(data, env=ENV) as server:
        port, main = server.http_port, server.process.pid
        wait_for(lambda: listeners(port) == 2, 60, "two listening sockets")
        (worker,) = wait_for(lambda: http_children(main), 30, "the HTTP worker process")
        connections = connections_to(port, {main, worker})

        # written through the worker, read through the main process: one index, one blob store
        assert stow(connections[worker], multipart_body([part10(first)])) == 200
        status, body = get(connections[main], f"/dicomweb/instances?SOPInstanceUID={first.SOPInstanceUID}", "*/*")
        assert status == 200 and first.SOPInstanceUID in body.decode()
        status, body = get(connections[main], frames_path, OCTET_ANY)
        assert status == 200 and first_frames[0] in body
        status, body = get(connections[worker], frames_path, OCTET_ANY)  # now in the worker's caches
        assert status == 200 and first_frames[0] in body

        # replaced through the main process: the worker's cached frame layout follows
        assert stow(connections[main], multipart_body([part10(second)])) == 200
        time.sleep(1.2)  # dicom_store.store.LAYOUT_RECHECK_S
        status, body = get(connections[worker], frames_path, OCTET_ANY)
        assert status == 200 and second_frames[0] in body and first_frames[0] not in body
        for connection in connections.values():
            connection.close()

        # a worker that dies is replaced, on the same port
        os.kill(worker, signal.SIGKILL)
        (replacement,) = wait_for(lambda: http_children(main) - {worker}, 60, "a new HTTP worker")
        wait_for(lambda: listeners(port) == 2, 60, "two listening sockets again")
        assert set(connections_to(port, {main, replacement})) == {main, replacement}
        assert "HTTP worker 2 (pid" in server.log()

        # kill -9 of the main process takes the workers with it: nothing is left listening
        server.process.kill()
        server.process.wait()
        wait_for(lambda: not alive(replacement), 15, "the worker to exit after its parent")
        assert listeners(port) == 0


def sample(text: str, line_start: str) -> float:
    """The value of the one sample line that starts with ``line_start`` in a Prometheus text answer."""
    (value,) = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(value)


def test_metrics_count_the_requests_of_every_http_process(tmp_path: Path) -> None:
    """/metrics gives the totals of both processes, whichever answers (prometheus_client multiprocess
    mode); the frames requests here are answered by the fast path below ASGI as well as by the app."""
    data = tmp_path / "data"
    data.mkdir()
    instance, frames = wsi_level(frames=2, seed=3)
    frames_path = (
        f"/dicomweb/studies/{instance.StudyInstanceUID}/series/{instance.SeriesInstanceUID}"
        f"/instances/{instance.SOPInstanceUID}/frames/"
    )
    route = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
    requests = f'marrowlink_http_requests_total{{method="GET",route="{route}",status="200"}}'
    with marrowlink_server(data, env=ENV) as server:
        port, main = server.http_port, server.process.pid
        wait_for(lambda: listeners(port) == 2, 60, "two listening sockets")
        (worker,) = wait_for(lambda: http_children(main), 30, "the HTTP worker process")
        (shared,) = (data / "run").glob("metrics-*")
        assert shared.name == f"metrics-{main}"
        connections = connections_to(port, {main, worker})
        assert stow(connections[main], multipart_body([part10(instance)])) == 200

        served: dict[int, int] = {main: 0, worker: 0}
        frames_sent = 0
        for pid, connection in connections.items():  # kept connections: each process answers some
            for number in (1, 2, 1, 2):
                status, body = get(connection, f"{frames_path}{number}", OCTET_ANY)
                assert status == 200 and frames[number - 1] in body
                served[pid] += 1
                frames_sent += 1
        for _ in range(12):  # fresh connections, spread by the kernel
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status, _ = get(connection, f"{frames_path}1,2", OCTET_ANY)
            assert status == 200
            assert connection.sock is not None
            served[serving_pid(port, connection.sock.getsockname()[1], {main, worker})] += 1  # type: ignore[index]
            frames_sent += 2
            connection.close()
        total = sum(served.values())
        assert total == 20 and min(served.values()) >= 4, served

        def scrape(connection: http.client.HTTPConnection) -> str:
            status, body = get(connection, "/metrics", "text/plain")
            assert status == 200
            return body.decode()

        # request counts are written to the shared files as they happen: every scrape has them all
        fresh = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(6)]
        for connection in [*connections.values(), *fresh] * 2:
            text = scrape(connection)
            assert sample(text, requests) == total
            assert sample(text, f'marrowlink_http_request_seconds_count{{route="{route}"}}') == total
            assert sample(text, "marrowlink_http_processes") == 2
            assert sample(text, "marrowlink_index_instances") == 1
            assert sample(text, "marrowlink_instances_stored_total") == 1
        # frames served (a per-process counter in DICOMweb) is copied to the files once a second
        time.sleep(1.5)
        for connection in [*connections.values(), *fresh]:
            assert sample(scrape(connection), "marrowlink_frames_served_total") == frames_sent
        for connection in [*connections.values(), *fresh]:
            connection.close()

        # a worker that dies: its counts stay, its live gauge goes (mark_process_dead)
        os.kill(worker, signal.SIGKILL)
        (replacement,) = wait_for(lambda: http_children(main) - {worker}, 60, "a new HTTP worker")
        wait_for(lambda: listeners(port) == 2, 60, "two listening sockets again")
        connections = connections_to(port, {main, replacement})
        for connection in connections.values():
            text = scrape(connection)
            assert sample(text, requests) == total
            assert sample(text, "marrowlink_http_processes") == 2
            connection.close()
    assert not shared.exists()  # removed when the service stops


@pytest.mark.postgres
def test_all_processes_together_stay_within_the_database_connection_budget(tmp_path: Path, postgres_url: str) -> None:
    """Each HTTP process has its own connection pool: on PostgreSQL (default max_connections 100) the
    processes must share one budget, `database_connections`, however many requests arrive at once."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from sqlalchemy import create_engine, text

    budget = 12  # 3 per process: the smallest share a process gets
    env = {**ENV, "MARROWLINK_HTTP_WORKERS": "4", "MARROWLINK_DATABASE_CONNECTIONS": str(budget)}
    database = postgres_url.rsplit("/", 1)[1]
    admin = create_engine(postgres_url.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT")
    count = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND backend_type = 'client backend'")
    peak = 0
    with marrowlink_server(tmp_path / "data", env=env, database_url=postgres_url) as server:
        wait_for(lambda: listeners(server.http_port) == 4, 60, "four listening sockets")
        # slow queries hold their connections, so concurrent requests need many at once
        url = f"{server.base_url}/dicomweb/studies?PatientName=*x*&fuzzymatching=true&limit=5"

        def query(_: int) -> int:
            with httpx.Client(timeout=60) as client:
                return client.get(url).status_code

        with ThreadPoolExecutor(48) as pool, admin.connect() as connection:
            answers = [pool.submit(query, i) for i in range(480)]
            while not all(answer.done() for answer in answers):
                peak = max(peak, connection.execute(count, {"d": database}).scalar_one())
                time.sleep(0.01)
            statuses = [answer.result() for answer in answers]
    admin.dispose()
    assert set(statuses) == {200}
    assert 0 < peak <= budget, f"{peak} connections open at once, budget {budget}"
