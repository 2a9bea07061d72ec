"""Whole processes: kill -9 of the listener right after an ACK, and the `marrowlink hl7 …` commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from sqlmodel import Session, select
from typer.testing import CliRunner

from hl7 import Outbox, read_ack
from hl7.tables import InboundMessage
from integration.cases import get_case
from integration.cli import app
from integration.database import open_index
from tests.conftest import free_port

MARROWLINK = str(Path(sys.executable).parent / "marrowlink")

LISTENER = """
import asyncio, sys
from integration.database import open_index
from integration.lis import start_mllp
from integration.settings import load_settings

async def main():
    settings = load_settings(mllp_host="127.0.0.1", mllp_port=int(sys.argv[1]))
    runtime = await start_mllp(settings, open_index(settings.effective_database_url))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def order(control_id: str, accession: str) -> bytes:
    text = "\r".join(
        [
            f"MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261125120000||OML^O21^OML_O21|{control_id}|P|2.5.1",
            f"PID|1||P-{accession}^^^HOSP^MR||Doe^Jane||19600101|F",
            f"ORC|NW|PL-{accession}|FL-{accession}|{accession}",
            f"OBR|1|PL-{accession}|FL-{accession}|BMDIFF^Bone marrow differential^L",
            f"SAC|||SL-{accession}",
        ]
    )
    return b"\x0b" + text.encode() + b"\x1c\r"


def read_frame(sock: socket.socket, buffer: bytearray | None = None) -> str:
    """One answer; `buffer` keeps what a read brought beyond it (several frames may come at once)."""
    buffer = buffer if buffer is not None else bytearray()
    while b"\x1c\r" not in buffer:
        data = sock.recv(65536)
        assert data, "connection closed without an answer"
        buffer += data
    end = buffer.index(b"\x1c\r")
    body = bytes(buffer[1:end]).decode()
    del buffer[: end + 2]
    return body


def start_listener(data_dir: Path, index_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "MARROWLINK_DATA": str(data_dir), "DATABASE_URL": index_url}
    process = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_kill_9_right_after_the_ack_loses_nothing(data_dir: Path, index_url: str) -> None:
    port = free_port()
    process = start_listener(data_dir, index_url, port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for n in range(3):
                sock.sendall(order(f"K{n}", f"ACC-K{n}"))
            buffer = bytearray()
            answers = [read_frame(sock, buffer) for _ in range(3)]
            process.send_signal(signal.SIGKILL)  # the moment the last ACK is read
    finally:
        process.kill()
        process.wait(10)
    assert [(read_ack(a).code, read_ack(a).control_id) for a in answers] == [("AA", f"K{n}") for n in range(3)]
    engine = open_index(index_url)
    try:
        with Session(engine) as session:
            for n in range(3):
                assert get_case(session, f"ACC-K{n}") is not None
            rows = session.exec(select(InboundMessage)).all()
            assert sorted(r.control_id for r in rows) == ["K0", "K1", "K2"]
            assert all(r.status == "processed" and r.ack for r in rows)
    finally:
        engine.dispose()
    process = start_listener(data_dir, index_url, port)  # restarted: the resend is a replay
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(order("K2", "ACC-K2"))
            assert read_frame(sock) == answers[2]
    finally:
        process.kill()
        process.wait(10)


def test_send_to_the_listen_stand_in(tmp_path: Path) -> None:
    port = free_port()
    listener = subprocess.Popen([MARROWLINK, "hl7", "listen", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and "listening" in listener.stdout.readline()
        file = tmp_path / "orders.hl7"
        file.write_bytes(
            order("F1", "ACC-F1")[1:-2].replace(b"\r", b"\n") + b"\n" + order("F2", "ACC-F2")[1:-2] + b"\n"
        )
        done = subprocess.run(
            [MARROWLINK, "hl7", "send", str(file), "--to", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "MSA|AA|F1" in done.stdout and "MSA|AA|F2" in done.stdout
    finally:
        listener.terminate()
        output = listener.communicate(timeout=10)[0]
    assert "OML^O21 F1" in output and "OML^O21 F2" in output


def test_outbox_listing_and_retry(data_dir: Path) -> None:
    engine = open_index(f"sqlite:///{(data_dir / 'index.sqlite3').resolve()}")
    queued = Outbox(engine).enqueue(
        order("O1", "ACC-O1")[1:-2].decode().replace("OML^O21^OML_O21", "ORU^R01"), "lis:2575"
    )
    Outbox(engine).record(queued.id, state="held", last_error="AE 207 refused")
    engine.dispose()
    runner = CliRunner()
    env = {"MARROWLINK_DATA": str(data_dir)}
    listing = runner.invoke(app, ["hl7", "outbox", "--json"], env=env)
    assert listing.exit_code == 0, listing.output
    assert json.loads(listing.output)[0]["state"] == "held"
    table = runner.invoke(app, ["hl7", "outbox", "--data", str(data_dir)])
    assert "held" in table.output and "AE 207" in table.output
    released = runner.invoke(app, ["hl7", "retry", str(queued.id), "--data", str(data_dir)])
    assert released.exit_code == 0 and "queued" in released.output
    missing = runner.invoke(app, ["hl7", "retry", "999", "--data", str(data_dir)])
    assert missing.exit_code == 1


def test_bench_mllp_reports_numbers() -> None:
    done = subprocess.run(
        [MARROWLINK, "bench", "mllp", "--json", "--messages", "100", "--orders", "10"],
        capture_output=True,
        text=True,
        timeout=300,  # generous: the shared test machine is sometimes loaded many times over
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["oru_per_s"] > 0 and result["orders_per_s"] > 0 and result["target_oru_per_s"] == 2000
