"""A small LIS stand-in: receives any HL7 message over MLLP, reports it, answers ACK (AA/AE/AR).

For integrators (`marrowlink hl7 listen`) and the demo; the benchmark's peer is `integration.bench.peers`. It keeps
one hl7apy ACK message per answer code and only changes MSH-7/MSH-10/MSA-2/MSH-5/6 per message: building a
fresh hl7apy message costs ~2 ms per answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from hl7apy.core import Message

from hl7.ack import build_ack, hl7_now, new_control_id
from hl7.codes import AckCode, ErrorCode
from hl7.encoding import HeaderError, decode, escape, read_header
from hl7.mllp import FrameDecoder, frame
from hl7.model import MessageHeader


class _AckTemplate:
    def __init__(self, code: AckCode) -> None:
        header = MessageHeader(control_id="X", message_code="ORU", trigger_event="R01")
        error = None if code is AckCode.ACCEPT else ErrorCode.INTERNAL_ERROR
        reason = "" if code is AckCode.ACCEPT else "refused by the LIS stand-in"
        self.message: Message = build_ack(header, code, error_code=error, reason=reason)

    def answer(self, header: MessageHeader) -> str:
        msh = self.message.msh
        msh.msh_5.hd_1.value = escape(header.sending_application)
        msh.msh_6.hd_1.value = escape(header.sending_facility)
        msh.msh_7.ts_1.value = hl7_now()
        msh.msh_9.msg_2.value = header.trigger_event or "R01"
        msh.msh_10.value = new_control_id()
        self.message.msa.msa_2.value = escape(header.control_id)
        return self.message.to_er7()


class PeerServer:
    """The asyncio listener of a LIS peer (stand-in or bench peer): subclasses set `host`, `port` and
    `_server = None`, and handle each connection in `_connection`; port 0 picks a free port."""

    host: str
    port: int
    _server: asyncio.Server | None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None


class LisStandIn(PeerServer):
    """`await start()` / `await stop()`; `answer` decides the ACK code per message (default AA)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        answer: Callable[[MessageHeader, str], AckCode] | None = None,
        on_message: Callable[[MessageHeader, str], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.answer = answer or (lambda header, text: AckCode.ACCEPT)
        self.on_message = on_message
        self.received: list[MessageHeader] = []
        self._templates = {code: _AckTemplate(code) for code in AckCode}
        self._server: asyncio.Server | None = None

    def run(self) -> None:
        """Blocking, for the CLI: serve until Ctrl-C."""

        async def main() -> None:
            await self.start()
            try:
                await asyncio.Event().wait()
            finally:
                await self.stop()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(64 * 1024 * 1024)
        try:
            while data := await reader.read(65536):
                for body in decoder.feed(data):
                    text = decode(body)[0]
                    try:
                        header = read_header(text)[0]
                    except HeaderError:
                        continue
                    self.received.append(header)
                    if self.on_message is not None:
                        self.on_message(header, text)
                    template = self._templates[self.answer(header, text)]
                    writer.write(frame(template.answer(header)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
