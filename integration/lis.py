"""The LIS link inside `marrowlink serve`: the MLLP order listener and the outbox senders.

`integration/service.py` calls::

    lis = await start_mllp(settings, engine)   # inside the running event loop
    ...
    await lis.stop()

Results are queued with `queue_result(...)` (or `hl7.Outbox(engine).enqueue`) and sent by the running
dispatcher; `lis.wake()` makes it look at once instead of at its next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, tzinfo

from sqlalchemy import Engine

from hl7 import DifferentialResult, MllpServer, OruCase, Outbox, OutboxDispatcher, ResultStatus, RetryPolicy
from hl7.oru import build_oru
from hl7.outbox import Queued
from integration.orders import CaseOrderHandler
from integration.settings import Settings


@dataclass
class MllpRuntime:
    """What `start_mllp` started; `stop()` ends both in order (listener first, then senders)."""

    server: MllpServer
    dispatcher: OutboxDispatcher

    @property
    def port(self) -> int:
        return self.server.port

    def wake(self) -> None:
        self.dispatcher.wake()

    async def stop(self) -> None:
        await self.server.stop()
        await self.dispatcher.stop()


async def start_mllp(
    settings: Settings,
    engine: Engine,
    *,
    policy: RetryPolicy | None = None,
    idle_timeout: float = 3600.0,
    frame_timeout: float = 30.0,
    max_message_bytes: int | None = None,
) -> MllpRuntime:
    """Start the listener on settings.mllp_host:mllp_port and the outbox dispatcher; call inside a loop."""
    kwargs = {"max_message_bytes": max_message_bytes} if max_message_bytes else {}
    server = MllpServer(
        engine,
        CaseOrderHandler(),
        settings.mllp_host,
        settings.mllp_port,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        zone=settings.zone,
        **kwargs,
    )
    await server.start()
    dispatcher = OutboxDispatcher(engine, policy)
    try:
        await dispatcher.start()
    except BaseException:
        await server.stop()
        raise
    return MllpRuntime(server, dispatcher)


def queue_result(
    engine: Engine,
    case: OruCase,
    differential: DifferentialResult,
    status: ResultStatus,
    destination: str,
    *,
    local_system: str = "L",
    zone: tzinfo = UTC,
    control_id: str | None = None,
) -> Queued:
    """Build the ORU for a result and store it in the outbox (sent by the dispatcher, in order).

    A given `control_id` (MSH-10, unique in the outbox) makes the enqueue happen once: a second one with
    the same id raises IntegrityError.
    """
    message = build_oru(case, differential, status, local_system=local_system, zone=zone, control_id=control_id)
    return Outbox(engine).enqueue(message, destination, reference=case.filler_order_number)
