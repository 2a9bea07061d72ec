"""`marrowlink bench mllp`: ORU/s through the durable outbox with ACKs over loopback, inbound orders/s.

The LIS peer runs in its own process (`integration.bench.peers.BenchLis`: it reads only MSH and answers each ORU
with MSA-2 = its MSH-10, which marrowlink checks as it does any ACK), so the numbers are marrowlink's:
store → send → wait for the matching ACK → record, one message at a time per destination, as in
production. Event loops run on uvloop, as `serve`'s does (uvicorn picks uvloop when it is installed). ORU
payloads are made by `build_oru` once and given distinct MSH-10s by re-rendering MSH through hl7apy,
because hl7apy needs ~0.1 s to build a full differential ORU; that build rate is reported separately.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Coroutine
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine

from acquisition import CELL_CLASSES
from hl7.ack import new_control_id
from hl7.encoding import read_header
from hl7.inbound import InboundHandler
from hl7.mllp import MllpConnection, MllpServer
from hl7.mllp_blocking import BlockingMllpConnection
from hl7.model import DifferentialResult, OruCase, Patient, PatientId, PersonName, Provider, ResultStatus
from hl7.oru import build_oru
from hl7.outbox import Outbox, OutboxDispatcher, RetryPolicy
from integration.bench.peers import BenchLis

T = TypeVar("T")


def sample_case(n: int = 1) -> tuple[OruCase, DifferentialResult]:
    case = OruCase(
        patient=Patient(
            ids=(PatientId(f"P{n:06d}", "HOSP", "MR"),),
            name=PersonName("Doe", "Jane"),
            birth_date=date(1960, 1, 1),
            sex="F",
        ),
        placer_order_number=f"PL{n}",
        filler_order_number=f"FL{n}",
        accession_number=f"ACC{n}",
        ordering_provider=Provider("1234", "Welby", "Marcus"),
        study_url=f"http://127.0.0.1:8000/dicomweb/studies/1.2.3.{n}",
        viewer_url=f"http://127.0.0.1:8000/cases/ACC{n}",
        receiving_application="LIS",
        receiving_facility="HOSP",
    )
    counts = {c.code: (i * 7) % 40 for i, c in enumerate(CELL_CLASSES)}
    differential = DifferentialResult(counts, "marrowlink-bench", "0", datetime.now(UTC))
    return case, differential


def oru_payloads(count: int) -> tuple[list[str], float]:
    """`count` ORUs with distinct MSH-10, and build_oru's own rate (messages/s)."""
    case, differential = sample_case()
    started = time.perf_counter()
    builds = 3
    for _ in range(builds):
        message = build_oru(case, differential, ResultStatus.PRELIMINARY)
    build_rate = builds / (time.perf_counter() - started)
    segments = message.to_er7().split("\r")
    body = "\r".join(segments[1:])
    payloads = []
    for _ in range(count):
        message.msh.msh_10.value = new_control_id()
        payloads.append(message.msh.to_er7() + "\r" + body)
    return payloads, build_rate


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop where it is installed: `serve` runs the dispatcher in uvicorn's loop, which
    is uvloop whenever uvloop is importable, so the benchmark measures the same loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; a platform without it still runs
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _peer(queue: Any, peers: int) -> None:
    async def main() -> None:
        lis = [BenchLis("127.0.0.1", 0) for _ in range(peers)]
        for peer in lis:
            await peer.start()
        queue.put([peer.port for peer in lis])
        await asyncio.Event().wait()

    run_loop(main())


async def _send_orus(engine: Engine, payloads: list[str], ports: list[int]) -> dict[str, float]:
    """Results are queued by a producer thread while the dispatcher sends them, as in one `serve`."""
    outbox = Outbox(engine)
    # the default poll interval, as in `serve`: an enqueue in this process wakes the sender at once
    dispatcher = OutboxDispatcher(engine, RetryPolicy(initial=0.05))
    await dispatcher.start()
    enqueued = 0.0

    def produce() -> None:
        nonlocal enqueued
        for i, payload in enumerate(payloads):
            outbox.enqueue(payload, f"127.0.0.1:{ports[i % len(ports)]}")
        enqueued = time.perf_counter()

    started, cpu_started = time.perf_counter(), time.process_time()
    producer = asyncio.create_task(asyncio.to_thread(produce))
    deadline = started + 60 + len(payloads) / 10  # far beyond any sane rate: report, do not hang
    try:
        while sum(s.sent for s in dispatcher.senders.values()) < len(payloads):
            if producer.done() and producer.exception() is not None:
                raise RuntimeError("the producer failed") from producer.exception()
            if time.perf_counter() > deadline:
                held = Outbox(engine).entries(state="held", limit=3)
                raise RuntimeError(f"ORUs not all acknowledged in time: {outbox.counts()}, held: {held}")
            await asyncio.sleep(0.005)
        done, cpu = time.perf_counter(), time.process_time() - cpu_started  # all acknowledged and recorded
    finally:
        await asyncio.gather(producer, return_exceptions=True)
        await dispatcher.stop()
    return {
        "enqueue_per_s": len(payloads) / (enqueued - started),
        "oru_per_s": len(payloads) / (done - started),
        # CPU this process spent per ORU (store + send + ACK + record): on a shared, loaded machine the
        # wall-clock rate varies several-fold between runs, this much less
        "oru_cpu_ms": 1000 * cpu / len(payloads),
    }


def _roundtrips(payloads: list[str], port: int) -> float:
    """The same messages over one connection with no database at all: the ceiling the outbox is
    compared with (report ratios against a peer measured in the same run). The client
    is the one the outbox's sender threads use."""
    connection = BlockingMllpConnection("127.0.0.1", port)
    control_ids = [read_header(payload)[0].control_id for payload in payloads]
    started = time.perf_counter()
    for payload, control_id in zip(payloads, control_ids, strict=True):
        connection.exchange(payload, control_id)
    elapsed = time.perf_counter() - started
    connection.close()
    return len(payloads) / elapsed


def _order(n: int) -> str:
    """A test order: the bench's only hand-written HL7 (input, not something marrowlink sends)."""
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261125120000||OML^O21^OML_O21|B{n}|P|2.5.1",
            f"PID|1||P{n % 500}^^^HOSP^MR||Doe^Jane||19600101|F",
            f"ORC|NW|PL{n}|FL{n}|ACC{n}",
            f"OBR|1|PL{n}|FL{n}|BMDIFF^Bone marrow differential^L",
            f"SPM|1|SP{n}||BMA",
            f"SAC|||SLIDE{n}",
        ]
    )


async def _receive_orders(engine: Engine, handler: InboundHandler, count: int, clients: int) -> float:
    server = MllpServer(engine, handler, "127.0.0.1", 0)
    await server.start()

    async def client(offset: int) -> None:
        connection = MllpConnection("127.0.0.1", server.port)
        for n in range(offset, count, clients):
            reply = await connection.exchange(_order(n), f"B{n}")
            if not reply.accepted:
                raise RuntimeError(f"order {n} answered {reply}")
        await connection.close()

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        await server.stop()
    return count / (time.perf_counter() - started)


def run_bench(
    engine: Engine, handler: InboundHandler, *, messages: int = 3000, orders: int = 300, destinations: int = 1
) -> dict[str, Any]:
    """Run both measurements on `engine` (a migrated, empty index) and return the numbers."""
    payloads, build_rate = oru_payloads(messages)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    peer = context.Process(target=_peer, args=(queue, destinations), daemon=True)
    peer.start()
    try:
        ports = queue.get(timeout=60)
        roundtrip = _roundtrips(payloads[: max(1, len(payloads) // 3)], ports[0])
        oru = run_loop(_send_orus(engine, payloads, ports))
    finally:
        peer.terminate()
        peer.join(5)
    inbound = run_loop(_receive_orders(engine, handler, orders, clients=4))
    return {
        "database": engine.dialect.name,
        "oru_messages": messages,
        "destinations": destinations,
        **{k: round(v, 3 if k == "oru_cpu_ms" else 1) for k, v in oru.items()},
        "oru_per_cpu_s": round(1000 / oru["oru_cpu_ms"], 1),
        "target_oru_per_s": 2000,
        "mllp_roundtrip_per_s": round(roundtrip, 1),
        "oru_vs_roundtrip": round(oru["oru_per_s"] / roundtrip, 3),
        "build_oru_per_s": round(build_rate, 1),
        "orders": orders,
        "orders_per_s": round(inbound, 1),
        "oru_bytes": len(payloads[0].encode()),
    }
