"""A blocking MLLP client connection, for the outbox's sender threads.

The outbox sends one message at a time per destination and waits for its ACK. Done with plain sockets
in a thread of its own, that exchange costs about half the CPU of the same exchange through asyncio
(no task wake-ups, futures, or hops to a worker thread for each database write), and uvicorn's loop
does no per-message work. The rules are `MllpConnection`'s: an answer counts only when its MSA-2 is the
message's MSH-10, and on an ACK time-out the connection is closed before anything is resent, so a
late ACK can never be matched to the next message.
"""

from __future__ import annotations

import contextlib
import socket
import time

from hl7.ack import AckReply
from hl7.mllp import FrameDecoder, frame, match_ack


class BlockingMllpConnection:
    """One client connection used by one thread; `interrupt()` may be called from any other thread."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 5.0, ack_timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.ignored: list[str] = []  # answers that did not match (for logs and tests)
        self._peer = f"{host}:{port}"
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._interrupted = False

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        if self._interrupted:
            raise ConnectionAbortedError("the sender is stopping")
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        # one frame per write and nothing to coalesce it with: never let Nagle hold back its tail
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._decoder = sock, FrameDecoder(64 * 1024 * 1024)
        if self._interrupted:  # interrupt() came while connecting: it could not reach this socket
            self.close()
            raise ConnectionAbortedError("the sender is stopping")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def interrupt(self) -> None:
        """End a blocked connect or exchange now (it raises) and refuse new ones: the sender is stopping."""
        self._interrupted = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def resume(self) -> None:
        """Accept connections again after `interrupt()` (a sender started again)."""
        self._interrupted = False

    def exchange(self, message: str, control_id: str) -> AckReply:
        """Send and wait for the matching ACK; reconnects once if a kept-open connection was closed."""
        reused = self.connected
        if not reused:
            self.connect()
        data = frame(message)
        try:
            return self._exchange(data, control_id)
        except ConnectionError:
            self.close()
            if not reused or self._interrupted:
                raise
        self.connect()  # the peer closed the idle connection (hl7apy's server does after each ACK)
        try:
            return self._exchange(data, control_id)
        except BaseException:
            self.close()
            raise

    def _exchange(self, data: bytes, control_id: str) -> AckReply:
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + self.ack_timeout
        try:
            sock.settimeout(self.ack_timeout)
            sock.sendall(data)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("peer closed the connection before answering")
                for body in self._decoder.feed(chunk):
                    reply = match_ack(body, control_id, self.ignored, self._peer)
                    if reply is not None:
                        return reply
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no ACK for {control_id} within {self.ack_timeout} s")
                sock.settimeout(remaining)
        except TimeoutError:
            self.close()  # a late ACK must not be read as the answer to the next message
            raise
