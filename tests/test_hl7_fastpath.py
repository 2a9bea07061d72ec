"""The outbox's fast path: header reading, driver-level writes, the blocking MLLP client, the sender
thread's stop and kill -9, and the benchmark's LIS peer. The guarantees are the outbox's own; these
tests pin what the faster code must still do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from hl7 import Outbox, OutboxSender, RetryPolicy, read_ack
from hl7.encoding import first_segment, normalise_segments, read_header
from hl7.mllp import FrameDecoder
from hl7.mllp_blocking import BlockingMllpConnection
from hl7.outbox import _record_statement
from integration.bench.mllp import oru_payloads
from integration.bench.peers import BenchLis, raw_control_id
from integration.database import open_index


@cache
def _payloads(count: int = 8) -> list[str]:
    return oru_payloads(count)[0]


class ThreadPeer:
    """A threaded MLLP peer: answers each frame with `BenchLis.answer` unless `silent`; `on_answer`
    runs right after an answer is written (the moment a test kills the sender)."""

    def __init__(self, *, silent: bool = False, close_after_answer: bool = False) -> None:
        self.silent = silent
        self.close_after_answer = close_after_answer
        self.received: list[str] = []
        self.connections = 0
        self.ended = 0  # connections whose frames have all been read
        self.on_answer = lambda count: None
        self._lis = BenchLis()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, contextlib.suppress(OSError):  # a killed sender resets the connection
                self._answer(conn)
        finally:
            self.ended += 1

    def _answer(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        while data := conn.recv(65536):
            for body in decoder.feed(data):
                self.received.append(read_header(body.decode())[0].control_id)
                if self.silent:
                    continue
                conn.sendall(self._lis.answer(body) or b"")
                self.on_answer(len(self.received))
                if self.close_after_answer:
                    return

    def close(self) -> None:
        self._server.close()


# --- reading headers without rewriting the message ---------------------------------------------------


def test_first_segment_is_what_normalise_segments_gives() -> None:
    pieces = ["\r", "\n", "\r\n", " ", "MSH|^~\\&|A", "|X ", "PID|1"]
    rng = random.Random(7)
    for _ in range(20000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert first_segment(value) == normalise_segments(value).split("\r", 1)[0], repr(value)


def test_read_ack_takes_the_declared_delimiters() -> None:
    ack = "MSH#$~\\&#LIS#HOSP####ACK$R01#A1#P#2.5.1\rMSA#AE#ML1\\F\\2\rERR###206$locked"
    reply = read_ack(ack)  # `#` separates fields, `$` components; MSA-2 escapes a `#`
    assert reply is not None and reply.code == "AE" and reply.control_id == "ML1#2"
    assert reply.error_code == "206" and reply.temporary


# --- the benchmark's LIS peer -----------------------------------------------------------------------


def test_bench_peer_answers_msa2_with_the_received_msh10() -> None:
    lis = BenchLis()
    payload = _payloads()[0]
    control_id = read_header(payload)[0].control_id
    answer = lis.answer(payload.encode())
    assert answer is not None and answer.startswith(b"\x0bMSH|") and answer.endswith(b"\x1c\r")
    reply = read_ack(answer[1:-2].decode())
    assert reply is not None and reply.accepted and reply.control_id == control_id
    # MSH-10 with an escape sequence is not for the split: the tolerant reader answers it the same
    escaped = payload.replace(control_id, "ML1\\F\\2", 1).encode()
    assert raw_control_id(escaped) is None
    reply = read_ack(lis.answer(escaped)[1:-2].decode())  # type: ignore[index]
    assert reply is not None and reply.control_id == "ML1|2"
    assert lis.answer(b"PID|1||X") is None  # no MSH: nothing to acknowledge


# --- driver-level writes ----------------------------------------------------------------------------


def test_enqueue_writes_what_sqlalchemy_reads_back(engine) -> None:  # type: ignore[no-untyped-def]
    payload = _payloads()[1]
    before = datetime.now(UTC)
    queued = Outbox(engine).enqueue(payload, "127.0.0.1:2575", reference="FL1")
    row = Outbox(engine).get(queued.id)
    assert row is not None and row.control_id == queued.control_id == read_header(payload)[0].control_id
    assert row.state == "queued" and row.attempts == 0 and row.reference == "FL1"
    assert row.message_type == "ORU^R01" and row.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= row.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert Outbox(engine).payload(queued.id) == payload
    assert [r.control_id for r in Outbox(engine).pending("127.0.0.1:2575", 5)] == [queued.control_id]


def test_enqueue_of_a_duplicate_msh10_fails_whole(engine) -> None:  # type: ignore[no-untyped-def]
    payload = _payloads()[2]
    Outbox(engine).enqueue(payload, "127.0.0.1:2575")
    with pytest.raises(IntegrityError):
        Outbox(engine).enqueue(payload, "127.0.0.1:2576")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM hl7_outbox")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM hl7_outbox_payload")).scalar() == 1


def test_driver_record_stores_what_the_orm_path_stores(engine) -> None:  # type: ignore[no-untyped-def]
    first, second = (Outbox(engine).enqueue(p, "127.0.0.1:2575").id for p in _payloads()[3:5])
    when = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    values = {"state": "sent", "attempts": 1, "ack_code": "AA", "ack": "MSA|AA|X", "sent_at": when, "last_error": None}
    Outbox(engine).record(first, **values)  # SQLAlchemy Core on a Connection
    statement = _record_statement(engine.dialect, frozenset(values))
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        statement.execute(cursor, {"entry_id": second, **values})
        connection.connection.commit()
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT id, sent_at, state FROM hl7_outbox ORDER BY id")).all()
    assert stored[0][1:] == stored[1][1:]  # the same bytes in the column, whichever path wrote them
    assert Outbox(engine).get(second).sent_at == when  # type: ignore[union-attr]
    Outbox(engine).record(second, state="held")  # a row recorded as sent is never touched again
    assert Outbox(engine).get(second).state == "sent"  # type: ignore[union-attr]


def test_a_held_connection_dropped_under_the_sender_is_replaced(engine) -> None:  # type: ignore[no-untyped-def]
    """What the pool's pre-ping did at every checkout: a server restart between two ACKs must not cost
    a record (which would send that message again)."""
    queued = Outbox(engine).enqueue(_payloads()[6], "127.0.0.1:2575")
    sender = OutboxSender(engine, "127.0.0.1:2575")
    sender._db.run(lambda connection: connection.exec_driver_sql("SELECT 1").all())
    sender._db._connection.connection.dbapi_connection.close()  # type: ignore[union-attr]
    sender._record(queued.id, state="sent", attempts=1, ack_code="AA", ack="MSA|AA|X", sent_at=datetime.now(UTC))
    assert Outbox(engine).get(queued.id).state == "sent"  # type: ignore[union-attr]
    sender._db.close()


# --- the blocking client ----------------------------------------------------------------------------


def test_blocking_client_reconnects_once_when_the_peer_closed_the_idle_connection() -> None:
    peer = ThreadPeer(close_after_answer=True)  # like hl7apy's server: one answer per connection
    client = BlockingMllpConnection("127.0.0.1", peer.port, ack_timeout=10)
    try:
        for payload in _payloads()[:3]:
            control_id = read_header(payload)[0].control_id
            assert client.exchange(payload, control_id).control_id == control_id
    finally:
        client.close()
        peer.close()
    assert peer.received == [read_header(p)[0].control_id for p in _payloads()[:3]]  # each sent once


def test_interrupt_ends_an_ack_wait_at_once_and_refuses_new_connections() -> None:
    peer = ThreadPeer(silent=True)
    client = BlockingMllpConnection("127.0.0.1", peer.port, ack_timeout=30)
    payload = _payloads()[0]
    threading.Timer(0.3, client.interrupt).start()
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionError):
            client.exchange(payload, read_header(payload)[0].control_id)
        assert time.monotonic() - started < 5
        with pytest.raises(ConnectionAbortedError):
            client.connect()
    finally:
        client.close()
        peer.close()
    assert peer.connections == 1  # the interrupted exchange was not retried on a new connection


def test_stopping_a_sender_during_an_ack_wait_is_not_a_failed_attempt(engine) -> None:  # type: ignore[no-untyped-def]
    peer = ThreadPeer(silent=True)
    destination = f"127.0.0.1:{peer.port}"
    queued = Outbox(engine).enqueue(_payloads()[5], destination)
    policy = RetryPolicy(initial=0.05, connect_timeout=1, ack_timeout=30, poll_interval=0.05)

    async def scenario() -> float:
        sender = OutboxSender(engine, destination, policy)
        await sender.start()
        deadline = time.monotonic() + 10
        while not peer.received:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await sender.stop()
        return time.monotonic() - started

    try:
        assert asyncio.run(scenario()) < 5  # not the 30 s ACK time-out
    finally:
        peer.close()
    row = Outbox(engine).get(queued.id)
    assert row is not None and row.state == "queued" and row.attempts == 0 and row.last_error is None
    assert Outbox(engine).acquire(destination, "someone-else", 1)  # the lease was released


# --- kill -9 of the sending process -----------------------------------------------------------------

SENDER = """
import asyncio, sys
from hl7 import OutboxDispatcher, RetryPolicy
from integration.database import open_index

async def main():
    policy = RetryPolicy(initial=0.05, connect_timeout=1, ack_timeout=10, poll_interval=0.05, lease_ttl=1)
    dispatcher = OutboxDispatcher(open_index(sys.argv[1]), policy)
    await dispatcher.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _start_sender(index_url: str, started: Callable[[subprocess.Popen], object] | None = None) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", SENDER, index_url], stdout=subprocess.PIPE, text=True)
    if started is not None:  # before "ready": by then the sender may already have sent everything
        started(process)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _sent(engine) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.control_id for r in sorted(Outbox(engine).entries(state="sent"), key=lambda r: r.id)]


def test_kill_9_right_after_an_ack_resends_at_most_that_message(index_url: str) -> None:
    """The sender is killed the moment the peer has written an ACK: every message whose ACK was
    recorded is never sent again, and at most one acknowledged message (the one whose ACK was being
    recorded) is; nothing stored is lost and the order holds."""
    engine = open_index(index_url)
    peer = ThreadPeer()
    destination = f"127.0.0.1:{peer.port}"
    ids = [Outbox(engine).enqueue(p, destination).control_id for p in _payloads()]
    victim: list[subprocess.Popen] = []
    known = threading.Event()

    def kill_at_the_fourth_ack(count: int) -> None:
        if count == 4:
            known.wait(30)
            os.kill(victim[0].pid, signal.SIGKILL)

    peer.on_answer = kill_at_the_fourth_ack
    process = _start_sender(index_url, lambda started: (victim.append(started), known.set()))
    try:
        assert process.wait(30) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while not peer.ended:  # whatever the killed process sent before it died has been read
            assert time.monotonic() < deadline
            time.sleep(0.01)
        received_before = list(peer.received)
        recorded = _sent(engine)
        assert recorded == ids[: len(recorded)]  # recorded in order
        assert len(received_before) - 1 <= len(recorded) <= len(received_before)
        process = _start_sender(index_url)  # a new process, same database: takes over the lease
        deadline = time.monotonic() + 60
        while len(_sent(engine)) < len(ids):
            assert time.monotonic() < deadline, f"not all sent: {Outbox(engine).counts()}"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait(10)
        peer.close()
        engine.dispose()
    assert received_before[:4] == ids[:4]
    assert peer.received[len(received_before) :] == ids[len(recorded) :]  # nothing recorded sent again
    assert len(peer.received) - len(ids) <= 1
