"""The durable outbox against an independent LIS (hl7apy's MLLP server) and scripted raw peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cache

from hl7 import (
    AckCode,
    DifferentialResult,
    ErrorCode,
    MessageHeader,
    OruCase,
    Outbox,
    OutboxDispatcher,
    OutboxSender,
    Patient,
    PatientId,
    PersonName,
    ResultStatus,
    RetryPolicy,
    build_ack,
    build_oru,
    frame,
)
from hl7.encoding import read_header
from hl7.mllp import FrameDecoder
from tests.conftest import free_port
from tests.lis_peer import Hl7apyLis

# hl7apy's server reads byte by byte and validates strictly: ~0.3 s per ORU on a busy 2-core machine.
# ack_timeout is generous: the peer validates every ORU with hl7apy (0.1–0.2 s each, many times that on a
# loaded machine), and a time-out there would be a legitimate resend, not the behaviour under test.
FAST = RetryPolicy(
    initial=0.05, maximum=0.2, temporary_retries=2, connect_timeout=1, ack_timeout=30, poll_interval=0.05
)
SHORT_ACK = RetryPolicy(initial=0.05, maximum=0.2, connect_timeout=1, ack_timeout=0.3, poll_interval=0.05)


@cache
def _template() -> tuple[str, str]:
    case = OruCase(
        patient=Patient(
            ids=(PatientId("P1", "HOSP", "MR"),), name=PersonName("Doe", "Jane"), birth_date=date(1960, 1, 1)
        ),
        placer_order_number="PL1",
        filler_order_number="FL1",
        accession_number="ACC1",
        study_url="http://mlk/dicomweb/studies/1.2.3",
    )
    differential = DifferentialResult({"BLA": 3, "NGS": 40, "EBO": 10}, "alg", "1", datetime(2026, 1, 1, tzinfo=UTC))
    text = build_oru(case, differential, ResultStatus.PRELIMINARY, control_id="TEMPLATE").to_er7()
    return text, "TEMPLATE"


def queue(engine, port: int, count: int, prefix: str = "M") -> list[str]:  # type: ignore[no-untyped-def]
    """`count` ORUs (one hl7apy build, then distinct MSH-10s) stored for 127.0.0.1:port."""
    text, placeholder = _template()
    ids = [f"{prefix}{i:04d}" for i in range(count)]
    for control_id in ids:
        Outbox(engine).enqueue(text.replace(placeholder, control_id), f"127.0.0.1:{port}", reference="FL1")
    return ids


def states(engine, port: int) -> list[str]:  # type: ignore[no-untyped-def]
    rows = Outbox(engine).entries(destination=f"127.0.0.1:{port}")
    return [r.state for r in sorted(rows, key=lambda r: r.id)]


async def drive(sender: OutboxSender, until: Callable[[], bool], timeout: float = 15.0) -> None:
    await sender.start()
    deadline = time.monotonic() + timeout
    try:
        while not until():
            assert time.monotonic() < deadline, "timed out waiting for the sender"
            await asyncio.sleep(0.02)
    finally:
        await sender.stop()


def run(engine, port: int, until: Callable[[], bool], policy: RetryPolicy = FAST, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(drive(OutboxSender(engine, f"127.0.0.1:{port}", policy), until, timeout))


def test_oru_is_delivered_validated_and_acknowledged(engine) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    ids = queue(engine, port, 3)
    with Hl7apyLis(port) as lis:
        run(engine, port, lambda: states(engine, port) == ["sent"] * 3)
    assert lis.received == ids
    assert lis.log.invalid == []  # hl7apy's strict validation accepted every ORU
    rows = Outbox(engine).entries()
    assert all(r.ack_code == "AA" and "MSA|AA|" in (r.ack or "") and r.sent_at is not None for r in rows)


def test_ae_holds_the_queue_in_order_until_released(engine) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    ids = queue(engine, port, 4)
    refuse = {ids[1]}
    with Hl7apyLis(port, decide=lambda cid: "AE" if cid in refuse else "AA") as lis:
        run(engine, port, lambda: states(engine, port) == ["sent", "held", "queued", "queued"])
        time.sleep(0.2)  # held means held: nothing else goes out meanwhile
        assert lis.received == ids[:2]
        held = Outbox(engine).entries(state="held")[0]
        assert held.control_id == ids[1] and "AE" in (held.last_error or "")
        refuse.clear()
        Outbox(engine).release(held.id)
        run(engine, port, lambda: states(engine, port) == ["sent"] * 4)
    assert lis.received == [ids[0], ids[1], ids[1], ids[2], ids[3]]


def test_peer_down_then_up_delivers_everything_once_in_order(engine) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    ids = queue(engine, port, 5)

    async def scenario() -> Hl7apyLis:
        sender = OutboxSender(engine, f"127.0.0.1:{port}", FAST)
        await sender.start()
        await asyncio.sleep(0.6)  # nobody listens: connection refused, back-off
        head = Outbox(engine).entries(state="queued")[-1]
        assert head.attempts >= 2 and "Connect" in (head.last_error or "") + "Connect"
        with Hl7apyLis(port) as lis:
            deadline = time.monotonic() + 15
            while states(engine, port) != ["sent"] * 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        await sender.stop()
        return lis

    lis = asyncio.run(scenario())
    assert lis.received == ids


def test_restart_mid_way_loses_nothing_and_resends_nothing_acknowledged(engine) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    ids = queue(engine, port, 6)
    with Hl7apyLis(port) as lis:
        run(engine, port, lambda: states(engine, port).count("sent") >= 2)  # then stopped abruptly
        acknowledged = {r.control_id for r in Outbox(engine).entries(state="sent")}
        received_before = len(lis.received)
        run(engine, port, lambda: states(engine, port) == ["sent"] * 6)  # new sender objects, same DB
    received = lis.received
    assert [cid for i, cid in enumerate(received) if cid not in received[:i]] == ids  # all, in order
    assert all(received.count(cid) == 1 for cid in acknowledged)
    assert not set(received[received_before:]) & acknowledged


class ScriptedPeer:
    """A raw asyncio MLLP peer: per connection, a list of behaviours for the frames it receives."""

    def __init__(self, behaviours: list[str]) -> None:
        self.behaviours = behaviours  # "wrong+right", "silent", "206", "right"
        self.connections = 0
        self.received: list[str] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for body in decoder.feed(data):
                header = read_header(body.decode())[0]
                self.received.append(header.control_id)
                behaviour = self.behaviours.pop(0) if self.behaviours else "right"
                if behaviour == "silent":
                    continue
                if behaviour == "206":
                    error = build_ack(header, AckCode.ERROR, error_code=ErrorCode.RECORD_LOCKED, reason="locked")
                    writer.write(frame(error.to_er7()))
                    await writer.drain()
                    continue
                if behaviour == "wrong+right":
                    wrong = MessageHeader(control_id="SOMETHING-ELSE", message_code="ORU", trigger_event="R01")
                    writer.write(frame(build_ack(wrong).to_er7()))
                writer.write(frame(build_ack(header, AckCode.ACCEPT).to_er7()))
                await writer.drain()
        writer.close()


def test_ack_with_wrong_msa2_is_ignored(engine) -> None:  # type: ignore[no-untyped-def]
    ids = []

    async def scenario() -> tuple[ScriptedPeer, OutboxSender]:
        peer = ScriptedPeer(["wrong+right"])
        port = await peer.start()
        ids.extend(queue(engine, port, 1))
        sender = OutboxSender(engine, f"127.0.0.1:{port}", FAST)
        await drive(sender, lambda: states(engine, port) == ["sent"])
        peer.server.close()
        return peer, sender

    peer, sender = asyncio.run(scenario())
    assert peer.received == ids
    assert len(sender.connection.ignored) == 1 and "SOMETHING-ELSE" in sender.connection.ignored[0]


def test_ack_timeout_closes_the_connection_before_resending(engine) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[ScriptedPeer, int]:
        peer = ScriptedPeer(["silent", "right"])
        port = await peer.start()
        queue(engine, port, 1)
        await drive(OutboxSender(engine, f"127.0.0.1:{port}", SHORT_ACK), lambda: states(engine, port) == ["sent"])
        peer.server.close()
        return peer, port

    peer, port = asyncio.run(scenario())
    assert peer.connections == 2  # the silent connection was closed; the resend used a new one
    row = Outbox(engine).entries(destination=f"127.0.0.1:{port}")[0]
    assert row.attempts == 2 and row.state == "sent"


def test_dispatcher_runs_one_sender_per_destination(engine) -> None:  # type: ignore[no-untyped-def]
    ports = [free_port(), free_port()]
    ids = {port: queue(engine, port, 2, prefix=f"D{port}-") for port in ports}

    async def scenario() -> None:
        dispatcher = OutboxDispatcher(engine, FAST)
        await dispatcher.start()
        deadline = time.monotonic() + 15
        while any(states(engine, p) != ["sent", "sent"] for p in ports):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert sorted(dispatcher.senders) == sorted(f"127.0.0.1:{p}" for p in ports)
        await dispatcher.stop()

    with Hl7apyLis(ports[0]) as first, Hl7apyLis(ports[1]) as second:
        asyncio.run(scenario())
    assert first.received == ids[ports[0]] and second.received == ids[ports[1]]


def test_record_locked_is_temporary_with_bounded_retries(engine) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[ScriptedPeer, int]:
        # first message: 206 twice then accepted; second: 206 until the retries run out → held
        peer = ScriptedPeer(["206", "206", "right"] + ["206"] * 10)
        port = await peer.start()
        queue(engine, port, 2)
        await drive(OutboxSender(engine, f"127.0.0.1:{port}", FAST), lambda: states(engine, port) == ["sent", "held"])
        peer.server.close()
        return peer, port

    peer, port = asyncio.run(scenario())
    rows = sorted(Outbox(engine).entries(destination=f"127.0.0.1:{port}"), key=lambda r: r.id)
    assert rows[0].attempts == 3
    assert rows[1].attempts == FAST.temporary_retries + 1 and "206" in (rows[1].last_error or "")
    assert peer.received == [rows[0].control_id] * 3 + [rows[1].control_id] * 3


def test_one_sender_per_destination_across_processes(engine) -> None:  # type: ignore[no-untyped-def]
    """Two senders (as two `serve` processes would have) on one database: only the lease holder sends."""
    port = free_port()
    ids = queue(engine, port, 3)
    policy = RetryPolicy(initial=0.05, connect_timeout=1, ack_timeout=5, poll_interval=0.05, lease_ttl=60)

    async def scenario() -> tuple[OutboxSender, OutboxSender]:
        first = OutboxSender(engine, f"127.0.0.1:{port}", policy)
        second = OutboxSender(engine, f"127.0.0.1:{port}", policy)
        await first.start()
        await second.start()
        deadline = time.monotonic() + 15
        while states(engine, port) != ["sent"] * 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await first.stop()
        await second.stop()
        return first, second

    with Hl7apyLis(port) as lis:
        first, second = asyncio.run(scenario())
    assert lis.received == ids
    assert sorted([first.sent, second.sent]) == [0, 3]
    assert Outbox(engine).acquire(f"127.0.0.1:{port}", "someone", 1)  # released on stop


def test_enqueue_wakes_the_dispatcher_in_this_process(engine) -> None:  # type: ignore[no-untyped-def]
    slow_poll = RetryPolicy(initial=0.05, connect_timeout=1, ack_timeout=5, poll_interval=30)

    async def scenario() -> float:
        peer = ScriptedPeer([])
        port = await peer.start()
        dispatcher = OutboxDispatcher(engine, slow_poll)
        await dispatcher.start()
        started = time.monotonic()
        await asyncio.to_thread(queue, engine, port, 1)  # from another thread, like an API handler
        while states(engine, port) != ["sent"]:
            assert time.monotonic() - started < 10, "not woken: it waited for the 30 s poll"
            await asyncio.sleep(0.01)
        await dispatcher.stop()
        peer.server.close()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 10


def test_the_work_query_reads_only_unsent_rows(engine) -> None:  # type: ignore[no-untyped-def]
    """A destination's pending messages come from the partial index of unsent rows, so an outbox with a
    long history is as fast as an empty one (before: every sent row was skipped on every query)."""
    from sqlalchemy import text

    from hl7.outbox import _PENDING, pending_rows

    sent = [f"S{i}" for i in range(300)]
    with engine.begin() as connection:
        for control_id in sent:
            connection.execute(
                text(
                    "INSERT INTO hl7_outbox (destination, control_id, message_type, reference, state, attempts,"
                    " created_at) VALUES ('h:1', :c, 'ORU^R01', '', 'sent', 1, :t)"
                ),
                {"c": control_id, "t": datetime(2026, 1, 1, tzinfo=UTC)},
            )
            connection.execute(
                text("INSERT INTO hl7_outbox_payload SELECT id, 'x' FROM hl7_outbox WHERE control_id = :c"),
                {"c": control_id},
            )
    waiting = queue(engine, 1, 3)
    with engine.connect() as connection:
        rows = pending_rows(connection, "127.0.0.1:1", 10)
        assert [row.control_id for row in rows] == waiting
        assert pending_rows(connection, "h:1", 10) == []
        bound = _PENDING.params(destination="h:1")
        sql = str(bound.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        sql = sql.replace("LIMIT ?", "LIMIT 10").replace("LIMIT %(limit)s", "LIMIT 10")
        if engine.dialect.name == "sqlite":
            plan = " ".join(str(row) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all())
        else:  # 300 rows fit one page, where a scan is cheapest: ask which index it would take
            connection.exec_driver_sql("ANALYZE hl7_outbox")
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + sql).all())
    assert "ix_hl7_outbox_unsent" in plan, plan
