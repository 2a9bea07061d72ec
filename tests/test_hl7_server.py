"""The MLLP listener against raw-socket clients: orders in, ACK contents, de-duplication, framing edge cases."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from hl7 import MllpServer, read_ack
from hl7.tables import InboundMessage
from integration.cases import AuditLog, Case, Patient, case_slides, get_case
from integration.database import open_index
from integration.orders import CaseOrderHandler


def order(control_id: str = "MSG1", accession: str = "ACC1", *, version: str = "2.5.1", charset: str = "UNICODE UTF-8",
          family: str = "Müller", slide: str = "") -> str:  # fmt: skip
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261125120000||OML^O21^OML_O21|{control_id}|P|{version}|||AL|NE||{charset}",
            f"PID|1||P-{accession}^^^HOSP^MR||{family}^Jürgen||19600101|M",
            f"ORC|NW|PL-{accession}|FL-{accession}|{accession}||||||||1234^Welby^Marcus",
            f"OBR|1|PL-{accession}|FL-{accession}|BMDIFF^Bone marrow differential^L",
            f"SPM|1|SP-{accession}||BMA",
            f"SAC|||{slide or 'SL-' + accession}",
        ]
    )


@contextmanager
def running(engine, **kwargs) -> Iterator[MllpServer]:  # type: ignore[no-untyped-def]
    """The asyncio server in its own thread and loop, as `marrowlink serve` runs it."""
    loop = asyncio.new_event_loop()
    server = MllpServer(engine, CaseOrderHandler(), "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def connect(server: MllpServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def read_frame(sock: socket.socket, buffer: bytearray | None = None) -> str:
    buffer = buffer if buffer is not None else bytearray()
    while b"\x1c\r" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buffer += data
    end = buffer.index(b"\x1c\r")
    body = bytes(buffer[buffer.index(b"\x0b") + 1 : end])
    del buffer[: end + 2]
    return body.decode("utf-8")


def exchange(sock: socket.socket, message: str | bytes) -> str:
    body = message.encode("utf-8") if isinstance(message, str) else message
    sock.sendall(b"\x0b" + body + b"\x1c\r")
    return read_frame(sock)


@pytest.fixture
def sqlite_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    yield engine
    engine.dispose()


def test_order_creates_case_and_resend_replays_the_ack(engine) -> None:  # type: ignore[no-untyped-def]
    with running(engine) as server, connect(server) as sock:
        first = exchange(sock, order("MSG1"))
        reply = read_ack(first)
        assert (reply.code, reply.control_id) == ("AA", "MSG1")
        assert "|ORL^O22^ORL_O22|" in first
        with Session(engine) as session:
            case = get_case(session, "ACC1")
            assert case is not None and case.filler_order_number == "FL-ACC1" and case.placer_order_number == "PL-ACC1"
            assert [s.barcode for s in case_slides(session, case.id)] == ["SL-ACC1"]
            audits = session.exec(select(func.count()).select_from(AuditLog)).one()
        again = exchange(sock, order("MSG1"))
        assert again == first  # the stored answer, byte for byte
        with Session(engine) as session:
            assert session.exec(select(func.count()).select_from(AuditLog)).one() == audits
            assert session.exec(select(func.count()).select_from(Case)).one() == 1
            stored = session.exec(select(InboundMessage)).one()
            assert stored.raw.decode() == order("MSG1") and stored.status == "processed" and stored.ack == first


def test_refusals_are_answered_and_recorded(engine) -> None:  # type: ignore[no-untyped-def]
    with running(engine) as server, connect(server) as sock:
        reply = read_ack(exchange(sock, order("V1", version="2.9")))
        assert (reply.code, reply.control_id, reply.error_code) == ("AR", "V1", "203")
        no_pid3 = order("P1").replace("P-ACC1^^^HOSP^MR", "")
        reply = read_ack(exchange(sock, no_pid3))
        assert (reply.code, reply.error_code) == ("AE", "101") and "PID-3" in reply.error_text
        no_order = "\r".join(order("O1").split("\r")[:2])
        reply = read_ack(exchange(sock, no_order))
        assert (reply.code, reply.error_code) == ("AE", "100")
        odd = order("ODD1").replace("|^~\\&|", "|^^|")
        reply = read_ack(exchange(sock, odd))
        assert (reply.code, reply.control_id) == ("AE", "ODD1") and "encoding characters" in reply.error_text
        reply = read_ack(exchange(sock, b"this is not HL7"))
        assert reply.code == "AR" and reply.control_id == "" and "MSH" in reply.error_text
        reply = read_ack(exchange(sock, order("OK1")))
        assert reply.code == "AA"  # the connection still serves after all of that
    with Session(engine) as session:
        rows = {r.control_id: r for r in session.exec(select(InboundMessage)).all()}
        assert rows["V1"].status == "rejected" and rows["V1"].ack_code == "AR"
        assert rows["P1"].status == "rejected" and rows["OK1"].status == "processed"


def test_charsets_reach_the_database(engine) -> None:  # type: ignore[no-untyped-def]
    with running(engine) as server, connect(server) as sock:
        latin = order("L1", "ACC-L", charset="8859/1", family="Šimůnek ä", slide="S-L").encode(
            "latin-1", errors="replace"
        )
        assert read_ack(exchange(sock, latin)).code == "AA"
        utf8 = order("U1", "ACC-U", family="Åström-Ødegård 李", slide="S-U")
        assert read_ack(exchange(sock, utf8)).code == "AA"
    with Session(engine) as session:
        names = {p.family_name for p in session.exec(select(Patient)).all()}
        assert "Åström-Ødegård 李" in names and "?im?nek ä" in names


def test_split_reads_and_several_frames_per_read(sqlite_engine) -> None:  # type: ignore[no-untyped-def]
    with running(sqlite_engine) as server, connect(server) as sock:
        data = b"\x0b" + order("S1", "ACC-S1").encode() + b"\x1c\r"
        for i in range(0, len(data), 7):
            sock.sendall(data[i : i + 7])
            time.sleep(0.001)
        assert read_ack(read_frame(sock)).control_id == "S1"
        batch = b"".join(b"\x0b" + order(f"B{i}", f"ACC-B{i}").encode() + b"\x1c\r" for i in range(3))
        sock.sendall(b"\r\n" + batch)  # a stray line break between frames is dropped
        buffer = bytearray()
        assert [read_ack(read_frame(sock, buffer)).control_id for _ in range(3)] == ["B0", "B1", "B2"]


def test_garbage_endless_frame_and_huge_message_do_not_stop_the_server(sqlite_engine) -> None:  # type: ignore[no-untyped-def]
    with running(sqlite_engine, frame_timeout=0.5, max_message_bytes=1024 * 1024) as server:
        with connect(server) as sock:  # garbage, then a good frame on the same connection
            sock.sendall(bytes(range(256)).replace(b"\x0b", b"") * 10)
            assert read_ack(exchange(sock, order("G1", "ACC-G1"))).code == "AA"
        endless = connect(server)
        endless.sendall(b"\x0b" + order("E1", "ACC-E1").encode())  # no end block
        huge = connect(server)
        message = order("H1", "ACC-H1") + "\rNTE|1||" + "x" * (10 * 1024 * 1024)

        def send_huge() -> str:
            try:
                huge.sendall(b"\x0b" + message.encode() + b"\x1c\r")
            except OSError:
                pass
            try:
                return read_frame(huge)
            except (ConnectionError, OSError):
                return "closed"

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(send_huge)
            with connect(server) as other:  # served while the others misbehave
                assert read_ack(exchange(other, order("N1", "ACC-N1"))).code == "AA"
            answer = pending.result(20)
        if answer != "closed":
            reply = read_ack(answer)
            assert (reply.code, reply.control_id) == ("AR", "H1") and "limit" in reply.error_text
        endless.settimeout(5)
        started = time.monotonic()
        assert endless.recv(100) == b""  # closed by the frame time-out, nothing answered
        assert time.monotonic() - started < 3
        endless.close()
        huge.close()
        with connect(server) as sock:
            assert read_ack(exchange(sock, order("after", "ACC-after"))).code == "AA"


def test_many_connections_at_once(sqlite_engine) -> None:  # type: ignore[no-untyped-def]
    with running(sqlite_engine) as server:

        def client(n: int) -> list[str]:
            with connect(server) as sock:
                return [
                    read_ack(exchange(sock, order(f"C{n}-{i}", f"ACC-C{n}-{i}", slide=f"S{n}-{i}"))).code
                    for i in range(3)
                ]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(client, range(16)))
    assert all(codes == ["AA", "AA", "AA"] for codes in results)
    with Session(sqlite_engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 48


def test_same_message_on_two_connections_has_one_effect(engine) -> None:  # type: ignore[no-untyped-def]
    with running(engine) as server:

        def client(_: int) -> str:
            with connect(server) as sock:
                return read_ack(exchange(sock, order("DUP", "ACC-DUP"))).code

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(client, range(6)))
    assert set(codes) <= {"AA", "AE"} and "AA" in codes
    with Session(engine) as session:
        created = session.exec(select(AuditLog).where(AuditLog.action == "case.created")).all()
        assert len(created) == 1
