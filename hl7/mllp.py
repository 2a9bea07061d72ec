"""MLLP (HL7 v2 minimal lower layer protocol): framing, an asyncio server and a client connection.

Frame: 0x0B, message, 0x1C 0x0D. The server reads frames split across TCP reads and several frames in
one read, answers each in order as soon as it is stored, drops bytes outside frames, refuses frames
over a size limit (AR when the header can be read, then closes), and closes idle connections so a
frame that never ends does not hold a task forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, tzinfo

from sqlalchemy import Engine

from hl7.ack import AckReply, build_ack, read_ack
from hl7.codes import AckCode, ErrorCode
from hl7.encoding import HeaderError, decode, read_header
from hl7.inbound import InboundHandler, Receiver

log = logging.getLogger("marrowlink.hl7")

START, END = b"\x0b", b"\x1c\x0d"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def frame(message: str | bytes) -> bytes:
    body = message.encode("utf-8") if isinstance(message, str) else message
    return START + body + END


class FrameTooLarge(Exception):
    def __init__(self, head: bytes, limit: int) -> None:
        super().__init__(f"message larger than the {limit} byte limit")
        self.head = head


class FrameDecoder:
    """Incremental MLLP de-framer: feed bytes, get complete message bodies."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self.discarded = 0  # bytes seen outside any frame (garbage)

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        self._buffer += data
        while True:
            if not self._in_frame:
                start = self._buffer.find(START)
                if start < 0:
                    self.discarded += len(self._buffer)
                    self._buffer.clear()
                    return frames
                self.discarded += start
                del self._buffer[: start + 1]
                self._in_frame = True
            end = self._buffer.find(END)
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    raise FrameTooLarge(bytes(self._buffer[:4096]), self.max_bytes)
                return frames
            if end > self.max_bytes:
                raise FrameTooLarge(bytes(self._buffer[:4096]), self.max_bytes)
            frames.append(bytes(self._buffer[:end]))
            del self._buffer[: end + len(END)]
            self._in_frame = False

    @property
    def partial(self) -> bool:
        return self._in_frame


class MllpServer:
    """The inbound listener: `await start()` inside a running loop, `await stop()` to end it.

    ``port=0`` binds a free port (read it back from `.port` after start). The handler is called in a
    worker thread with a database session (see `InboundHandler`).
    """

    def __init__(
        self,
        engine: Engine,
        handler: InboundHandler,
        host: str = "0.0.0.0",
        port: int = 2575,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        idle_timeout: float = 3600.0,
        frame_timeout: float = 30.0,
        facility: str = "",
        workers: int = 4,
        zone: tzinfo = UTC,
    ) -> None:
        self.receiver = Receiver(engine, handler, facility=facility, zone=zone)
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        # A LIS may keep an idle connection open for hours (that is fine); a frame that has started
        # and does not end within frame_timeout is a broken sender, and its connection is closed.
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mllp")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listener on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        self._executor.shutdown(wait=True)

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def run(self) -> None:
        """Blocking helper for the CLI: serve until Ctrl-C."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve_forever())

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        decoder = FrameDecoder(self.max_message_bytes)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    timeout = self.frame_timeout if decoder.partial else self.idle_timeout
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                except TimeoutError:
                    if decoder.partial:
                        log.warning("MLLP %s: frame without end, closing after %.0f s", peer, self.frame_timeout)
                    break
                if not data:
                    break
                try:
                    frames = decoder.feed(data)
                except FrameTooLarge as exc:
                    log.warning("MLLP %s: %s", peer, exc)
                    answer = _too_large_answer(exc.head, self.max_message_bytes, self.receiver.zone)
                    if answer is not None:
                        writer.write(frame(answer))
                        await writer.drain()
                    break
                for body in frames:
                    answer = await loop.run_in_executor(self._executor, self.receiver.receive, body)
                    writer.write(frame(answer))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _too_large_answer(head: bytes, limit: int, zone: tzinfo = UTC) -> str | None:
    try:
        header, _ = read_header(decode(head)[0])
    except HeaderError:
        return None
    reason = f"message larger than the {limit} byte limit; connection closed"
    return build_ack(header, AckCode.REJECT, error_code=ErrorCode.INTERNAL_ERROR, reason=reason, zone=zone).to_er7()


def match_ack(body: bytes, control_id: str, ignored: list[str], peer: str) -> AckReply | None:
    """The answer in `body` if its MSA-2 is `control_id`; anything else is logged and kept in `ignored`."""
    text = decode(body)[0]
    reply = read_ack(text)
    if reply is not None and reply.control_id == control_id:
        return reply
    log.warning("MLLP %s: ignoring answer not for %s: %r", peer, control_id, text[:200])
    ignored.append(text)
    return None


class MllpConnection:
    """One client connection that sends a message and waits for the ACK whose MSA-2 matches.

    On an ACK time-out the connection is closed before anything is resent, so a late ACK can never be
    matched to the next message (the Mirth failure of docs/hl7-interface.md §8).
    """

    def __init__(self, host: str, port: int, *, connect_timeout: float = 5.0, ack_timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self.ignored: list[str] = []  # answers that did not match (for logs and tests)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing() and not self._reader.at_eof()  # type: ignore[union-attr]

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.connect_timeout
        )
        self._decoder = FrameDecoder(64 * 1024 * 1024)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def exchange(self, message: str, control_id: str) -> AckReply:
        """Send and wait for the matching ACK; reconnects once if a kept-open connection was closed."""
        reused = self.connected
        if not reused:
            await self.connect()
        try:
            return await self._exchange(message, control_id)
        except ConnectionError:
            await self.close()
            if not reused:
                raise
        await self.connect()  # the peer closed the idle connection (hl7apy's server does after each ACK)
        try:
            return await self._exchange(message, control_id)
        except BaseException:
            await self.close()
            raise

    async def _exchange(self, message: str, control_id: str) -> AckReply:
        assert self._reader is not None and self._writer is not None
        self._writer.write(frame(message))
        await self._writer.drain()
        try:
            async with asyncio.timeout(self.ack_timeout):  # cheaper than wait_for: no extra task per message
                return await self._await_ack(control_id)
        except TimeoutError:
            await self.close()
            raise

    async def _await_ack(self, control_id: str) -> AckReply:
        assert self._reader is not None
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionResetError("peer closed the connection before answering")
            for body in self._decoder.feed(data):
                reply = match_ack(body, control_id, self.ignored, f"{self.host}:{self.port}")
                if reply is not None:
                    return reply


async def send_message(host: str, port: int, message: str, *, ack_timeout: float = 10.0) -> AckReply:
    """One message, one connection: what `marrowlink hl7 send` does."""
    control_id = read_header(message)[0].control_id
    connection = MllpConnection(host, port, ack_timeout=ack_timeout)
    try:
        return await connection.exchange(message, control_id)
    finally:
        await connection.close()
