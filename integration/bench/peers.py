"""The LIS peer of `marrowlink bench mllp`: answers AA to every frame, reading only MSH by plain splitting.

It stands for a LIS and runs in a process of its own, yet on a small machine it shares the CPUs with
marrowlink: `LisStandIn` decodes each 11 kB ORU and reads its header with the tolerant reader, and that
was a large part of what the benchmark measured. This peer finds MSH-10 in the raw bytes and answers
with an ACK rendered once by hl7apy, in which only its own MSH-10 and MSA-2 change, so MSA-2 is the
received MSH-10 exactly as sent and marrowlink still matches every ACK to its message. A header it
cannot read that way (other delimiters inside MSH-10, a broken MSH) goes through `read_header`.
"""

from __future__ import annotations

import asyncio
import itertools

from hl7.ack import build_ack
from hl7.encoding import HeaderError, decode, escape, read_header
from hl7.mllp import END, START, FrameDecoder
from hl7.model import MessageHeader
from hl7.standin import PeerServer

_OWN_ID, _ECHOED = "\x00OWN\x00", "\x00MSA\x00"


def raw_control_id(body: bytes) -> bytes | None:
    """MSH-10 as sent, or None when reading it needs more than a split of the first segment."""
    end = body.find(b"\r")
    msh = body if end < 0 else body[:end]
    if len(msh) < 8 or not msh.startswith(b"MSH") or b"\n" in msh:
        return None
    fields = msh.split(msh[3:4], 10)
    if len(fields) < 10:
        return None
    control_id = fields[9].strip()
    if not control_id or any(char in control_id for char in fields[1]):  # components or escapes
        return None
    return control_id


class BenchLis(PeerServer):
    """`await start()` / `await stop()` inside a running loop; `answered` counts the ACKs sent."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.answered = 0
        template = build_ack(MessageHeader(control_id=_ECHOED, message_code="ORU", trigger_event="R01"))
        template.msh.msh_3.hd_1.value = "LIS-BENCH"
        template.msh.msh_10.value = _OWN_ID
        head, rest = template.to_er7().split(_OWN_ID)
        middle, tail = rest.split(_ECHOED)
        self._parts = (START + head.encode(), middle.encode(), tail.encode() + END)
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None

    def answer(self, body: bytes) -> bytes | None:
        """The framed ACK for one received frame; None for a frame with no readable MSH-10."""
        control_id = raw_control_id(body)
        if control_id is None:
            try:
                control_id = escape(read_header(decode(body)[0])[0].control_id).encode()
            except HeaderError:
                return None
        head, middle, tail = self._parts
        self.answered += 1
        return b"%s%s%d%s%s%s" % (head, b"LIS", next(self._ids), middle, control_id, tail)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(64 * 1024 * 1024)
        try:
            while data := await reader.read(65536):
                answers = [answer for body in decoder.feed(data) if (answer := self.answer(body)) is not None]
                if answers:
                    writer.write(b"".join(answers))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
