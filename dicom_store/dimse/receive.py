"""The receiving side of our SCP's associations, tuned for large C-STORE data sets (WSI levels).

pynetdicom 3.0.4 reads a PDU in 4 KB ``recv`` calls (a 128 KB PDU from dcmtk is 32 system calls and
32 small buffers), polls its socket every millisecond between sleeps (a busy machine stretches each
sleep, and the sender stalls on a full socket buffer meanwhile), and streams a received data set to
``NamedTemporaryFile`` in the system temp folder. Per association of our SCP (never process-wide for
other pynetdicom users) this module:

- reads each PDU with ``recv_into`` into one buffer of its announced length (:func:`fast_receive`),
  and hands the values of a P-DATA-TF PDU on as views into that buffer: pynetdicom copies every
  received byte five times between socket and file (PDU assembly, ``bytes()``, field and item
  slicing, stripping the control header), this path not once (:class:`ReceivingDUL`);
- lets the association's reactor wait *on the socket* (``select`` with the same 1 ms timeout)
  instead of sleeping, so it reads as soon as data arrives (:class:`ReceivingSocket`);
- writes the data set into the blob store's temp folder, so that the Store takes the file over by a
  rename on the same filesystem instead of copying it, and starts the disk write-back of what has
  arrived every few MB while the rest is still on the wire (:class:`ReceivedFile`). The final
  ``fsync`` before the C-STORE response then waits for the tail only; durability is unchanged: the
  response is still sent only after the Store's fsync and index commit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import secrets
import select
import ssl
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from pynetdicom import dimse_messages, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

#: Start writing back a received file to disk each time this much more of it has arrived.
WRITEBACK_BYTES = 2 * 1024 * 1024
#: Attribute set on an association's DUL thread: the folder its C-STORE data sets are written to.
_FOLDER = "_marrowlink_receive_folder"
_SYNC_FILE_RANGE_WRITE = 2
#: How long the reactor waits on the socket when there is nothing to do (pynetdicom sleeps as long).
IDLE_WAIT_S = 0.001
#: What is left of the reactor's own sleep between idle rounds (the wait on the socket replaces it).
_REACTOR_SLEEP_S = 0.0001


def _sync_file_range() -> Any:
    """libc's sync_file_range (Linux), or None: elsewhere the final fsync does all the writing."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_start_writeback = _sync_file_range()


class ReceivedFile:
    """A C-STORE data set as it arrives: an unbuffered file in ``folder``, written back as it grows.

    Offers what pynetdicom and our handlers use of a ``NamedTemporaryFile``: ``name``, ``write``,
    ``file.flush()``, ``close()``. Unbuffered: pynetdicom writes whole PDVs (up to 128 KB from dcmtk),
    each one system call, and flushes after each.
    """

    def __init__(self, folder: Path) -> None:
        self.name = str(folder / f"{secrets.token_hex(12)}.part")  # BlobStore's temp name pattern
        self._raw = open(self.name, "xb", buffering=0)  # noqa: SIM115 - closed by pynetdicom via close()
        self._fd = self._raw.fileno()
        self.file = self  # pynetdicom calls ``file.flush()``
        self._written = 0
        self._queued = 0

    def write(self, data: bytes) -> int:
        written = self._raw.write(data)
        self._written += written
        if _start_writeback is not None and self._written - self._queued >= WRITEBACK_BYTES:
            # Asynchronous: queues the dirty pages for writing and returns; the fsync at the end
            # waits for them. Failure is harmless (the fsync then writes them).
            _start_writeback(self._fd, self._queued, self._written - self._queued, _SYNC_FILE_RANGE_WRITE)
            self._queued = self._written
        return written

    def flush(self) -> None:
        """Nothing buffered here."""

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed


_original_temporary_file = dimse_messages.NamedTemporaryFile


def _temporary_file(*args: Any, **kwargs: Any) -> Any:
    """pynetdicom's factory for chunked receive: ours on our SCP's associations, the stdlib's elsewhere."""
    folder = getattr(threading.current_thread(), _FOLDER, None)
    if folder is None:
        return _original_temporary_file(*args, **kwargs)
    return ReceivedFile(folder)


def install() -> None:
    """Route pynetdicom's chunked C-STORE receive through :func:`_temporary_file` (idempotent).

    Associations not prepared by :func:`prepare` keep pynetdicom's own behaviour.
    """
    if dimse_messages.NamedTemporaryFile is _temporary_file:
        return
    if dimse_messages.NamedTemporaryFile is not tempfile.NamedTemporaryFile:
        log.warning("pynetdicom's temporary file factory is not the standard one; C-STORE receive left as is")
        return
    dimse_messages.NamedTemporaryFile = _temporary_file  # type: ignore[assignment]


def prepare(assoc: Any, folder: Path) -> None:
    """For one accepted association (EVT_CONN_OPEN, before its reactor runs): PDUs read in one piece
    as soon as they arrive, and data sets written to ``folder``."""
    dul = assoc.dul
    if not isinstance(dul, DULServiceProvider):  # pragma: no cover - pynetdicom changed shape
        return
    setattr(dul, _FOLDER, Path(folder))
    sock = dul.socket
    if type(sock) is AssociationSocket and getattr(sock, "socket", None) is not None:
        sock.__class__ = ReceivingSocket
        dul._run_loop_delay = _REACTOR_SLEEP_S
        if type(dul) is DULServiceProvider:
            dul.__class__ = ReceivingDUL


class ReceivingSocket(AssociationSocket):
    """pynetdicom's AssociationSocket, waiting on data instead of polling, reading a PDU in one piece."""

    @property
    def ready(self) -> bool:
        """Whether data can be read, waiting up to IDLE_WAIT_S for it (pynetdicom: no wait, then a sleep)."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes already buffered, which select cannot see
        try:
            readable, _, _ = select.select([sock], [], [], IDLE_WAIT_S)
        except (OSError, TimeoutError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        return bool(readable)

    def recv(self, nr_bytes: int) -> bytearray:
        return fast_receive(self, nr_bytes)


_PDU_TYPES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07})
_P_DATA_TF = 0x04


class ReceivingDUL(DULServiceProvider):
    """pynetdicom's DUL with a copy-free path for P-DATA-TF PDUs (the bulk of a C-STORE).

    ``_read_pdu_data`` keeps pynetdicom 3.0.4's events and error handling (Evt17 when the connection
    breaks, Evt19 for an unknown or undecodable PDU) but reads header and body into one buffer;
    ``_decode_pdu`` gives P-DATA-TF items memoryview values into it (the DIMSE layer indexes, slices
    and writes them, which views support). Other PDUs are decoded by pynetdicom as before.
    """

    def _read_pdu_data(self) -> None:
        sock = self.socket
        try:
            head = sock.recv(6)  # type: ignore[union-attr]
        except (OSError, TimeoutError) as exc:
            log.error("Connection closed before the entire PDU was received: %s", exc)
            self.event_queue.put("Evt17")
            return
        if len(head) < 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, pdu_length = struct.unpack(">BBL", head)
        if pdu_type not in _PDU_TYPES:
            log.error("Unknown PDU type received '0x%02X'", pdu_type)
            self.event_queue.put("Evt19")
            return
        buffer = bytearray(6 + pdu_length)
        buffer[:6] = head
        try:
            with memoryview(buffer) as view:
                read = _receive_into(sock.socket, view[6:])  # type: ignore[union-attr]
        except (OSError, TimeoutError) as exc:
            log.error("Connection closed before the entire PDU was received: %s", exc)
            self.event_queue.put("Evt17")
            return
        if read != pdu_length:
            log.error("The received PDU is shorter than expected (%d of %d bytes)", 6 + read, 6 + pdu_length)
            self.event_queue.put("Evt17")
            return
        try:
            pdu, event = self._decode_pdu(buffer)
            self.event_queue.put(event)
        except Exception as exc:
            log.error("Unable to decode the received PDU data: %s", exc)
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(pdu)

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:  # type: ignore[override]
        if bytestream[0] != _P_DATA_TF:
            return super()._decode_pdu(bytestream)
        if self.assoc.get_handlers(evt.EVT_DATA_RECV):
            evt.trigger(self.assoc, evt.EVT_DATA_RECV, {"data": bytes(bytestream)})
        pdu = P_DATA_TF()
        items = pdu.presentation_data_value_items
        view = memoryview(bytestream)
        offset, end = 6, len(bytestream)
        while offset < end:
            (length,) = _ITEM_LENGTH.unpack_from(bytestream, offset)
            value = view[offset + 5 : offset + 4 + length]
            if length < 1 or len(value) != length - 1:
                raise ValueError("a presentation data value item runs past the end of its PDU")
            item = PresentationDataValueItem()
            item.presentation_context_id = bytestream[offset + 4]
            item.presentation_data_value = value  # type: ignore[assignment]
            items.append(item)
            offset += 4 + length
        evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
        return pdu, "Evt10"


_ITEM_LENGTH = struct.Struct(">L")


def _receive_into(sock: Any, view: memoryview) -> int:
    """Fill ``view`` from ``sock``; the number of bytes read (fewer if the peer closed)."""
    read, wanted = 0, len(view)
    while read < wanted:
        count = sock.recv_into(view[read:], wanted - read)
        if not count:
            break
        read += count
    return read


def fast_receive(self: Any, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv`` with one buffer: ``nr_bytes`` read, or fewer if the peer closed.

    Same contract as pynetdicom's (blocking until all is read; a short result means the connection
    broke; socket errors propagate), with ``recv_into`` filling one preallocated buffer.
    """
    sock = self.socket
    buffer = bytearray(nr_bytes)
    read = 0
    with memoryview(buffer) as view:
        while read < nr_bytes:
            count = sock.recv_into(view[read:], nr_bytes - read)
            if not count:
                break
            read += count
    if read < nr_bytes:
        del buffer[read:]
    return buffer


def discard(partial: Any) -> bool:
    """Close and delete a partly received data set file; True if one was deleted."""
    try:
        partial.close()
        os.unlink(partial.name)
    except OSError:
        return False
    return True
