"""Locating frames inside a stored Part-10 file without decoding them.

The Pixel Data element is walked once at store time: for encapsulated syntaxes each fragment's byte
range is recorded and grouped into frames (one fragment per frame, or by the Basic Offset Table, or by
codec start markers); for native syntaxes frames lie at fixed strides. The result is a compact
int64 table that turns a WADO frame request into a single pread of the stored bytes.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from dicom_store.errors import InvalidInstance

_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_ITEM_HEAD = struct.Struct("<HHI")
_IMPLICIT_VR_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"

# Codec start markers: a fragment that begins with one of these starts a new frame (JPEG SOI, J2K SOC,
# JPEG-LS uses SOI too).
_FRAME_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP")


@dataclass(frozen=True)
class FrameLayout:
    """Fragments as rows of (frame index, absolute file offset, length)."""

    encapsulated: bool
    fragments: np.ndarray  # shape (n, 3), int64

    @property
    def number_of_frames(self) -> int:
        return int(self.fragments[:, 0].max()) + 1 if len(self.fragments) else 0

    def to_bytes(self) -> bytes:
        return self.fragments.astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, encapsulated: bool) -> FrameLayout:
        return cls(encapsulated, np.frombuffer(data, dtype="<i8").reshape(-1, 3))

    def ranges(self, frame_number: int) -> list[tuple[int, int]]:
        """Byte ranges of frame ``frame_number`` (1-based, as in DICOMweb)."""
        rows = self.fragments[self.fragments[:, 0] == frame_number - 1]
        return [(int(offset), int(length)) for _, offset, length in rows]


def read_frame(fd: int, layout: FrameLayout, frame_number: int) -> bytes:
    """The encoded bytes of one frame, read with pread (no shared file position, thread-safe)."""
    ranges = layout.ranges(frame_number)
    if not ranges:
        raise IndexError(frame_number)
    if len(ranges) == 1:
        offset, length = ranges[0]
        return os.pread(fd, length, offset)
    return b"".join(os.pread(fd, length, offset) for offset, length in ranges)


def scan_pixel_data(
    fp: BinaryIO,
    position: int,
    file_size: int,
    *,
    transfer_syntax_uid: str,
    number_of_frames: int,
    frame_bytes: int | None,
) -> FrameLayout:
    """Walk the Pixel Data element that starts at ``position`` and lay out its frames.

    Raises InvalidInstance when the element is cut short (a truncated file), so nothing truncated is
    ever stored.
    """
    if transfer_syntax_uid == _BIG_ENDIAN:
        raise InvalidInstance("Explicit VR Big Endian (retired) is not accepted; send little endian")
    fp.seek(position)
    header = fp.read(8)
    if len(header) < 8:
        raise InvalidInstance("file ends inside the Pixel Data element header (truncated)")
    group, element = struct.unpack("<HH", header[:4])
    if (group << 16 | element) != _PIXEL_DATA:
        raise InvalidInstance("unexpected element where Pixel Data should start")
    if transfer_syntax_uid == _IMPLICIT_VR_LE:
        (length,) = struct.unpack("<I", header[4:8])
        value_start = position + 8
    else:
        vr = header[4:6]
        if vr in (b"OB", b"OW", b"UN", b"OF", b"OD", b"OL", b"OV", b"UT", b"SQ", b"UC", b"UR"):
            more = fp.read(4)
            if len(more) < 4:
                raise InvalidInstance("file ends inside the Pixel Data element header (truncated)")
            (length,) = struct.unpack("<I", more)
            value_start = position + 12
        else:
            (length,) = struct.unpack("<H", header[6:8])
            value_start = position + 8

    if length != 0xFFFFFFFF:
        if value_start + length > file_size:
            raise InvalidInstance(
                f"Pixel Data is {length} bytes but the file holds only {file_size - value_start} (truncated)"
            )
        size = frame_bytes if frame_bytes else length // max(number_of_frames, 1)
        if number_of_frames * size > length:
            raise InvalidInstance(
                f"Pixel Data holds {length} bytes, less than {number_of_frames} frames of {size} bytes"
            )
        rows = np.array([(i, value_start + i * size, size) for i in range(number_of_frames)], dtype=np.int64)
        return FrameLayout(False, rows.reshape(-1, 3))

    with _mapped(fp) as data:
        items = _read_items(data, value_start, file_size)
        if not items:
            raise InvalidInstance("encapsulated Pixel Data has no Basic Offset Table item")
        (bot_offset, bot_length), fragments = items[0], items[1:]
        if not fragments:
            raise InvalidInstance("encapsulated Pixel Data has no fragments")
        frame_of = _group_fragments(data, fragments, number_of_frames, bot_offset, bot_length, value_start)
    table = np.array([(f, off, ln) for f, (off, ln) in zip(frame_of, fragments, strict=True)], dtype=np.int64)
    found = int(table[:, 0].max()) + 1
    if found != number_of_frames:
        raise InvalidInstance(f"encapsulated Pixel Data holds {found} frames but NumberOfFrames is {number_of_frames}")
    return FrameLayout(True, table)


class _Seeking:
    """Byte ranges of a file object by seek and read, for objects that cannot be memory-mapped."""

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp

    def __getitem__(self, index: slice) -> bytes:
        self.fp.seek(index.start)
        return self.fp.read(index.stop - index.start)


@contextmanager
def _mapped(fp: BinaryIO) -> Iterator[mmap.mmap | _Seeking]:
    """The file memory-mapped (item headers then cost no system call each), or seek-and-read."""
    try:
        data = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        yield _Seeking(fp)
        return
    try:
        yield data
    finally:
        data.close()


def _read_items(data: mmap.mmap | _Seeking, start: int, file_size: int) -> list[tuple[int, int]]:
    items: list[tuple[int, int]] = []
    pos = start
    mapped = isinstance(data, mmap.mmap)
    end = len(data) if mapped else file_size  # type: ignore[arg-type]
    unpack, unpack_from = _ITEM_HEAD.unpack, _ITEM_HEAD.unpack_from
    while True:
        if mapped:  # straight from the map, no slice
            if pos + 8 > end:
                raise InvalidInstance("file ends inside encapsulated Pixel Data (truncated; no sequence delimiter)")
            group, element, length = unpack_from(data, pos)  # type: ignore[arg-type]
        else:
            head = data[pos : pos + 8]
            if len(head) < 8:
                raise InvalidInstance("file ends inside encapsulated Pixel Data (truncated; no sequence delimiter)")
            group, element, length = unpack(head)
        tag = group << 16 | element
        if tag == _SEQ_DELIM:
            return items
        if tag != _ITEM:
            raise InvalidInstance(f"unexpected tag ({group:04X},{element:04X}) inside encapsulated Pixel Data")
        if pos + 8 + length > file_size:
            raise InvalidInstance("a Pixel Data fragment runs past the end of the file (truncated)")
        items.append((pos + 8, length))
        pos += 8 + length


def _group_fragments(
    data: mmap.mmap | _Seeking,
    fragments: list[tuple[int, int]],
    number_of_frames: int,
    bot_offset: int,
    bot_length: int,
    value_start: int,
) -> list[int]:
    if len(fragments) == number_of_frames:
        return list(range(number_of_frames))
    if number_of_frames <= 1:
        return [0] * len(fragments)
    if bot_length >= 4 * number_of_frames:
        starts = list(struct.unpack(f"<{number_of_frames}I", data[bot_offset : bot_offset + 4 * number_of_frames]))
        first_item = bot_offset + bot_length  # BOT offsets count from the first fragment's item tag
        frame_of, frame = [], -1
        for offset, _length in fragments:
            relative = offset - 8 - first_item
            while frame + 1 < number_of_frames and relative >= starts[frame + 1]:
                frame += 1
            frame_of.append(max(frame, 0))
        return frame_of
    frame_of, frame = [], -1
    for offset, _length in fragments:
        if data[offset : offset + 12].startswith(_FRAME_STARTS) or frame < 0:
            frame += 1
        frame_of.append(frame)
    return frame_of
