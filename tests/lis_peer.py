"""An independent LIS peer for tests and integrators: hl7apy's own MLLP server, in a thread.

It validates every message it receives with hl7apy's strict validation (so an AA from it means the
ORU is valid 2.5.1 by a second implementation), answers with an ACK built by hl7apy, and records
what it received. `answers` lets a test script AE/AR/206 or silence per message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

#: What the peer does with one message: "AA", "AE", "AR", "206" (AE, record locked) or "drop".
Answer = str


@dataclass
class PeerLog:
    received: list[str] = field(default_factory=list)  # MSH-10 of every message, in arrival order
    invalid: list[str] = field(default_factory=list)  # why strict validation failed
    lock: threading.Lock = field(default_factory=threading.Lock)


def _ack(incoming: Message, code: str, error: str = "", error_text: str = "") -> str:
    ack = Message("ACK", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
    ack.msh.msh_3 = "HL7APY-LIS"
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = "A" + incoming.msh.msh_10.value[:19]
    ack.msh.msh_11 = "P"
    ack.msa.msa_1 = code
    ack.msa.msa_2 = incoming.msh.msh_10.value
    if error:
        err = ack.add_segment("ERR")
        err.err_3 = f"{error}^{error_text}^HL70357"
        err.err_4 = "E"
    return "\x0b" + ack.to_er7() + "\x1c\x0d"


class _OruHandler(AbstractHandler):
    def __init__(self, message: str, log: PeerLog, decide: Callable[[str], Answer]) -> None:
        super().__init__(message)
        self.log = log
        self.decide = decide

    def reply(self) -> str:
        incoming = parse_message(self.incoming_message, validation_level=VALIDATION_LEVEL.STRICT)
        control_id = incoming.msh.msh_10.value
        try:
            incoming.validate()
        except Exception as exc:  # what hl7apy objects to is the test's failure message
            with self.log.lock:
                self.log.invalid.append(f"{control_id}: {exc}")
            return _ack(incoming, "AE", "207", "invalid message")
        answer = self.decide(control_id)
        if answer == "drop":
            raise ConnectionAbortedError("peer told to drop this message")
        with self.log.lock:
            self.log.received.append(control_id)
        if answer == "206":
            return _ack(incoming, "AE", "206", "Application record locked")
        if answer in ("AE", "AR"):
            return _ack(incoming, answer, "207", "refused by test peer")
        return _ack(incoming, "AA")


class Hl7apyLis:
    """`with Hl7apyLis(port) as lis:` — hl7apy.mllp.MLLPServer answering ORU^R01 on 127.0.0.1."""

    def __init__(self, port: int, decide: Callable[[str], Answer] | None = None, timeout: float = 5.0) -> None:
        self.port = port
        self.log = PeerLog()
        self.decide = decide or (lambda control_id: "AA")
        self._server = MLLPServer(
            "127.0.0.1", port, {"ORU^R01^ORU_R01": (_OruHandler, self.log, self._decide)}, timeout=timeout
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="hl7apy-lis")

    def _decide(self, control_id: str) -> Answer:
        return self.decide(control_id)

    @property
    def received(self) -> list[str]:
        with self.log.lock:
            return list(self.log.received)

    def __enter__(self) -> Hl7apyLis:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
