"""The hot WADO-RS frames route as lean raw ASGI (~4x what framework routing reaches, docs/architecture.md §7).

A viewer asks for hundreds of tiles a second with one Accept header. Per request this path does: one
regex match, the authorize call, one cached FrameSource lookup (the Store's LRU), one cached Accept
decision, a slice of the blob's memory map per frame (no system call), and a single ``send`` of the
whole multipart body. Frame offsets were computed at store time (dicom_store.frames). Anything
unusual — decoding to uncompressed, errors that need detail — falls through to the Starlette route.
``FramesRoute.answer`` is the synchronous core, also used below the ASGI layer by
``dicom_store.dicomweb.fast_http``.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicom_store.dicomweb import multipart
from dicom_store.dicomweb.asgi import Denied, denied_response, respond
from dicom_store.dicomweb.context import Context, json_error
from dicom_store.dicomweb.media import FrameAnswer, negotiate_frames
from dicom_store.dicomweb.pixels import CannotDecode, PixelFormat, can_decode, decode_frame, native_bytes
from dicom_store.errors import NotFound
from dicom_store.store import FrameSource

FRAMES_PATH = re.compile(
    r"/studies/([0-9.]{1,64})/series/([0-9.]{1,64})/instances/([0-9.]{1,64})/frames/([0-9,]{1,4096})$"
)
#: The metrics label of this route; TRIED marks a request the fast path declined (not tried again).
TRIED = "marrowlink.frames_tried"
ROUTE = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
#: Frames per batch when a long frame list is streamed (bounds memory per request).
STREAM_BATCH = 64
_BOUNDARY_HEAD = b"--" + multipart.BOUNDARY.encode() + b"\r\nContent-Type: "
_CLOSE = b"\r\n" + multipart.CLOSE


class _Frames:
    """Per stored blob, everything a request needs as plain Python values (no ORM attribute access,
    no numpy on the hot path): the open descriptor and its memory map, the identifying UIDs and
    per-frame byte ranges. Blobs are never modified once stored (a replacement is a new file), so the
    map stays valid; after the file is deleted it still shows the old bytes until the entry goes."""

    __slots__ = ("fd", "lengths", "map", "offsets", "series", "servable", "source", "study", "syntax", "total")

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        row = source.instance
        self.study, self.series = row.study_instance_uid, row.series_instance_uid
        self.total = int(row.number_of_frames)
        self.syntax = source.transfer_syntax_uid
        layout = source.layout
        # 1-bit frames that are not byte-aligned are re-packed by the Store: the slow route serves them
        self.servable = layout.encapsulated or layout.number_of_frames == self.total
        self.fd = os.open(source.path, os.O_RDONLY)
        try:
            self.map: mmap.mmap | None = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty file, or a filesystem without mmap
            self.map = None
        table = layout.fragments
        if len(table) == self.total and np.array_equal(table[:, 0], np.arange(self.total)):
            self.offsets: list[int] | None = table[:, 1].tolist()
            self.lengths: list[int] | None = table[:, 2].tolist()
        else:
            self.offsets = self.lengths = None

    def read(self, number: int) -> bytes:
        if self.offsets is not None:
            offset, length = self.offsets[number - 1], self.lengths[number - 1]  # type: ignore[index]
            if self.map is not None:
                return self.map[offset : offset + length]
            return os.pread(self.fd, length, offset)
        from dicom_store.frames import read_frame

        return read_frame(self.fd, self.source.layout, number)

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
        os.close(self.fd)


class _Plan:
    """A negotiated answer with its header bytes built once."""

    __slots__ = ("content_type", "multipart", "part_head")

    def __init__(self, answer: FrameAnswer) -> None:
        self.multipart = answer.multipart
        self.part_head = _BOUNDARY_HEAD + answer.content_type.encode() + b"\r\n\r\n"
        media = multipart.content_type(answer.content_type) if answer.multipart else answer.content_type
        self.content_type = media.encode()


class FramesRoute:
    """Serves ``…/frames/{list}`` from stored bytes; declines (0) when the slow route must answer."""

    def __init__(self, ctx: Context, max_open: int = 256) -> None:
        self.ctx = ctx
        self.max_open = max_open
        self._open: OrderedDict[int, _Frames] = OrderedDict()
        self._plans: dict[tuple[str | None, str, bool], _Plan | None] = {}
        self._lock = threading.Lock()
        self._served = ctx.metrics.frames_served

    def _frames(self, source: FrameSource) -> _Frames:
        key = id(source)
        entry = self._open.get(key)
        if entry is not None and entry.source is source:
            return entry
        with self._lock:
            entry = _Frames(source)
            old = self._open.pop(key, None)
            self._open[key] = entry
            while len(self._open) > self.max_open:
                _, evicted = self._open.popitem(last=False)
                evicted.close()
            if old is not None:
                old.close()
        return entry

    def _plan(self, accept: str | None, syntax: str, single: bool) -> _Plan | None:
        key = (accept, syntax, single)
        try:
            return self._plans[key]
        except KeyError:
            answer = negotiate_frames(accept, syntax, single)
            plan = None if answer is None or answer.decode else _Plan(answer)
            if len(self._plans) < 1024:  # Accept headers are few; a hostile client cannot grow this
                self._plans[key] = plan
            return plan

    async def __call__(self, scope: dict[str, Any], send: Any, match: re.Match[str]) -> int:
        """Answer and return the status sent, or 0 to leave the request to the slow route."""
        authorization = accept = None
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value.decode("latin-1")
            elif key == b"authorization":
                authorization = value.decode("latin-1")
        try:
            self.ctx.authorize(authorization, "read")
        except Denied as exc:
            status, body, headers = denied_response(exc)
            await respond(send, status, body, headers)
            return status
        answer = self.answer(match, accept)
        if answer is None:
            return 0
        content_type, body = answer
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return 200

    def answer(self, match: re.Match[str], accept: str | None) -> tuple[bytes, bytes] | None:
        """(Content-Type, body) of a 200 answer to an authorized request whose path ``match``-ed
        FRAMES_PATH, counted in the frames metric; None when the slow route must answer."""
        study, series, instance, frame_list = match.groups()
        try:
            source = self.ctx.store.frame_source(instance)
        except NotFound:
            return None  # the slow route words the 404
        frames = self._frames(source)
        if frames.study != study or frames.series != series or not frames.servable:
            return None
        try:
            numbers = [int(n) for n in frame_list.split(",")] if "," in frame_list else [int(frame_list)]
        except ValueError:  # "1,,2": the slow route explains
            return None
        total = frames.total
        if len(numbers) > STREAM_BATCH:
            return None  # the slow route streams long lists in batches
        for number in numbers:
            if number < 1 or number > total:
                return None
        plan = self._plan(accept, frames.syntax, len(numbers) == 1)
        if plan is None:
            return None
        if not plan.multipart:
            body = frames.read(numbers[0])
        else:
            head = plan.part_head
            chunks = []
            for number in numbers:
                chunks.append(head)
                chunks.append(frames.read(number))
                chunks.append(b"\r\n")
            chunks[-1] = _CLOSE
            body = b"".join(chunks)
        self._served.inc(amount=len(numbers))
        return plan.content_type, body

    def close(self) -> None:
        with self._lock:
            for entry in self._open.values():
                entry.close()
            self._open.clear()


async def frames(ctx: Context, request: Request, study: str, series: str, instance: str, frame_list: str) -> Response:
    """The slow route: errors with reasons, and uncompressed frames decoded from compressed ones."""
    ctx.check(request, "read")
    try:
        numbers = [int(n) for n in frame_list.split(",") if n]
    except ValueError:
        return json_error(400, f"frame list {frame_list!r} is not comma-separated numbers")
    source = await run_in_threadpool(ctx.store.frame_source, instance)
    row = source.instance
    if row.study_instance_uid != study or row.series_instance_uid != series:
        raise NotFound(f"instance {instance} is not in series {series} of study {study}")
    if not numbers or any(n < 1 or n > row.number_of_frames for n in numbers):
        raise NotFound(f"frames {frame_list} not all in 1..{row.number_of_frames}")
    answer = negotiate_frames(request.headers.get("accept"), source.transfer_syntax_uid, len(numbers) == 1)
    if answer is None:
        return json_error(
            406,
            f"frames are stored as {source.transfer_syntax_uid}; accept that syntax (or transfer-syntax=*), or "
            "application/octet-stream for decoded pixels",
        )
    if answer.decode and not can_decode(source.transfer_syntax_uid):
        return json_error(406, f"no decoder here for {source.transfer_syntax_uid}; ask for the stored syntax")
    if answer.multipart and len(numbers) > STREAM_BATCH:  # a long list: never the whole answer in memory
        return _streamed(ctx, instance, numbers, answer.content_type, answer.decode)
    try:
        data = await run_in_threadpool(_frame_bytes, ctx, instance, numbers, answer.decode)
    except CannotDecode as exc:
        return json_error(406, str(exc))
    ctx.metrics.frames_served.inc(amount=len(numbers))
    if not answer.multipart:
        return Response(data[0], 200, media_type=answer.content_type)
    return Response(
        multipart.encode(data, answer.content_type), 200, media_type=multipart.content_type(answer.content_type)
    )


def _streamed(ctx: Context, instance: str, numbers: list[int], content_type: str, decode: bool) -> StreamingResponse:
    head = multipart.part_head(content_type)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(numbers), STREAM_BATCH):
            batch = numbers[start : start + STREAM_BATCH]
            data = await run_in_threadpool(_frame_bytes, ctx, instance, batch, decode)
            ctx.metrics.frames_served.inc(amount=len(batch))
            yield b"".join(head + frame + b"\r\n" for frame in data)
        yield multipart.CLOSE

    return StreamingResponse(stream(), 200, media_type=multipart.content_type(content_type))


def _frame_bytes(ctx: Context, instance: str, numbers: list[int], decode: bool) -> list[bytes]:
    frames = ctx.store.get_frames(instance, numbers)
    if not decode:
        return frames
    import pydicom

    source = ctx.store.frame_source(instance)
    ds = pydicom.dcmread(source.path, stop_before_pixels=True)
    fmt = PixelFormat.from_dataset(ds)
    return [native_bytes(decode_frame(data, source.transfer_syntax_uid, fmt)) for data in frames]
