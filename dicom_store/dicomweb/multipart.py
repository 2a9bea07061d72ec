"""multipart/related (RFC 2387) both ways: writing WADO answers and reading STOW bodies from a stream.

The reader never holds a part in memory: each part's body goes to its own temp file while it
arrives, so a 2 GB STOW costs a few chunk buffers of RAM, and a part cut short is never handed on.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

#: One boundary per process: 32 random hex digits cannot collide with a frame by accident.
BOUNDARY = secrets.token_hex(16)
_BOUNDARY_BYTES = BOUNDARY.encode()


def content_type(part_type: str, boundary: str = BOUNDARY) -> str:
    """The multipart/related Content-Type; ``part_type`` may carry its own transfer-syntax."""
    media, _, rest = part_type.partition(";")
    extra = f";{rest}" if rest else ""
    return f'multipart/related; type="{media.strip()}"{extra}; boundary={boundary}'


def part_head(part_content_type: str, location: str | None = None) -> bytes:
    lines = [b"--" + _BOUNDARY_BYTES, b"Content-Type: " + part_content_type.encode()]
    if location:
        lines.append(b"Content-Location: " + location.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


CLOSE = b"--" + _BOUNDARY_BYTES + b"--\r\n"


def encode(parts: list[bytes], part_content_type: str) -> bytes:
    """A complete body: each part with its Content-Type, CRLF-separated, then the close delimiter."""
    head = part_head(part_content_type)
    chunks = []
    for data in parts:
        chunks.append(head)
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(CLOSE)
    return b"".join(chunks)


class MalformedMultipart(ValueError):
    """The body is not multipart/related as announced (400)."""


class TooLarge(ValueError):
    """The body passes the configured limit (413)."""


@dataclass
class Part:
    headers: dict[str, str]
    path: Path
    size: int = 0


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` → (media type, lower-cased params)."""
    if not value:
        return "", {}
    pieces = value.split(";")
    params = {}
    for piece in pieces[1:]:
        name, _, val = piece.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return pieces[0].strip().lower(), params


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    new_temp: Callable[[], Path],
    max_bytes: int,
) -> list[Part]:
    """Stream a multipart body into temp files, one per part.

    On any error every temp file written so far is removed before the exception leaves.
    """
    if not boundary or len(boundary) > 200:
        raise MalformedMultipart("multipart boundary missing or longer than 200 characters")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delimiter) + 1
    buffer = bytearray(b"\r\n")  # lets the first boundary line match the same delimiter
    state = "preamble"
    parts: list[Part] = []
    handle = None
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"request body exceeds the limit of {max_bytes} bytes")
            buffer += chunk
            while True:
                if state == "preamble":
                    index = buffer.find(delimiter)
                    if index < 0:
                        del buffer[: max(0, len(buffer) - keep)]
                        break
                    del buffer[: index + len(delimiter)]
                    state = "boundary"
                if state == "boundary":
                    if len(buffer) < 2:
                        break
                    if buffer[:2] == b"--":
                        state = "done"
                        break
                    end = buffer.find(b"\r\n")
                    if end < 0:
                        if len(buffer) > 1024:
                            raise MalformedMultipart("boundary line is not followed by CRLF")
                        break
                    if buffer[:end].strip(b" \t"):
                        raise MalformedMultipart("unexpected characters after a boundary")
                    del buffer[: end + 2]
                    state = "headers"
                if state == "headers":
                    if buffer[:2] == b"\r\n":
                        head, rest = b"", 2
                    else:
                        end = buffer.find(b"\r\n\r\n")
                        if end < 0:
                            if len(buffer) > 16384:
                                raise MalformedMultipart("part headers longer than 16 KiB")
                            break
                        head, rest = bytes(buffer[:end]), end + 4
                    del buffer[:rest]
                    part = Part(_part_headers(head), new_temp())
                    parts.append(part)
                    handle = open(part.path, "wb")  # noqa: SIM115 - closed at the part's end or on error
                    state = "body"
                if state == "body":
                    assert handle is not None
                    index = buffer.find(delimiter)
                    if index < 0:
                        if len(buffer) > keep:
                            handle.write(buffer[:-keep])
                            parts[-1].size += len(buffer) - keep
                            del buffer[:-keep]
                        break
                    handle.write(buffer[:index])
                    parts[-1].size += index
                    handle.close()
                    handle = None
                    del buffer[: index + len(delimiter)]
                    state = "boundary"
            if state == "done":
                break
        if state != "done":
            raise MalformedMultipart(
                "body ended before the closing boundary" if parts else "no multipart boundary found in the body"
            )
        return parts
    except BaseException:
        if handle is not None:
            handle.close()
        for part in parts:
            _unlink(part.path)
        raise


def _part_headers(head: bytes) -> dict[str, str]:
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MalformedMultipart(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
