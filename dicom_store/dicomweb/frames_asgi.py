"""The hot WADO-RS frames route as lean raw ASGI (stack.md: ~4x what framework routing reaches).

A viewer asks for hundreds of tiles a second with one Accept header. Per request this path does: one
regex match, the authorize call, one cached FrameSource lookup (the Store's LRU), one cached Accept
decision, ``os.pread`` per frame on a cached file descriptor, and a single ``send`` of the whole
multipart body. Frame offsets were computed at store time (dicom_store.frames). Anything unusual —
decoding to uncompressed, errors that need detail — falls through to the Starlette route.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicom_store.dicomweb import multipart
from dicom_store.dicomweb.asgi import Denied, denied_response, respond
from dicom_store.dicomweb.context import Context, json_error
from dicom_store.dicomweb.media import negotiate_frames
from dicom_store.dicomweb.pixels import CannotDecode, PixelFormat, decode_frame, native_bytes
from dicom_store.errors import NotFound
from dicom_store.store import FrameSource

FRAMES_PATH = re.compile(
    r"/studies/([0-9.]{1,64})/series/([0-9.]{1,64})/instances/([0-9.]{1,64})/frames/([0-9,]{1,4096})$"
)
#: The metrics label of this route; TRIED marks a request the fast path declined (not tried again).
TRIED = "marrowlink.frames_tried"
ROUTE = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
_BOUNDARY_HEAD = b"--" + multipart.BOUNDARY.encode() + b"\r\nContent-Type: "
_CLOSE = b"\r\n" + multipart.CLOSE


class _Frames:
    """Per blob: an open descriptor and, when every frame is one fragment, (offset, length) pairs."""

    __slots__ = ("fd", "lengths", "offsets", "source")

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.fd = os.open(source.path, os.O_RDONLY)
        table = source.layout.fragments
        frames = source.instance.number_of_frames
        if len(table) == frames and np.array_equal(table[:, 0], np.arange(frames)):
            self.offsets: list[int] | None = table[:, 1].tolist()
            self.lengths: list[int] | None = table[:, 2].tolist()
        else:
            self.offsets = self.lengths = None

    def read(self, number: int) -> bytes:
        if self.offsets is not None:
            return os.pread(self.fd, self.lengths[number - 1], self.offsets[number - 1])  # type: ignore[index]
        from dicom_store.frames import read_frame

        return read_frame(self.fd, self.source.layout, number)


class FramesRoute:
    """Serves ``…/frames/{list}`` from stored bytes; declines (0) when the slow route must answer."""

    def __init__(self, ctx: Context, max_open: int = 256) -> None:
        self.ctx = ctx
        self.max_open = max_open
        self._open: OrderedDict[str, _Frames] = OrderedDict()
        self._lock = threading.Lock()
        self._served = ctx.metrics.frames_served

    def _frames(self, source: FrameSource) -> _Frames:
        key = str(source.path)
        entry = self._open.get(key)
        if entry is not None and entry.source is source:
            return entry
        with self._lock:
            entry = _Frames(source)
            old = self._open.pop(key, None)
            self._open[key] = entry
            while len(self._open) > self.max_open:
                _, evicted = self._open.popitem(last=False)
                os.close(evicted.fd)
            if old is not None:
                os.close(old.fd)
        return entry

    async def __call__(self, scope: dict[str, Any], send: Any, match: re.Match[str]) -> int:
        """Answer and return the status sent, or 0 to leave the request to the slow route."""
        study, series, instance, frame_list = match.groups()
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
        try:
            source = self.ctx.store.frame_source(instance)
        except NotFound:
            return 0  # the slow route words the 404
        row = source.instance
        if row.study_instance_uid != study or row.series_instance_uid != series:
            return 0
        try:
            numbers = [int(n) for n in frame_list.split(",")]
        except ValueError:
            return 0
        total = row.number_of_frames
        if not numbers or any(n < 1 or n > total for n in numbers):
            return 0
        answer = negotiate_frames(accept, source.transfer_syntax_uid, len(numbers) == 1)
        if answer is None or answer.decode:
            return 0
        if not source.layout.encapsulated and source.layout.number_of_frames != total:
            return 0  # 1-bit frames that are not byte-aligned: the Store re-packs them
        frames = self._frames(source)
        part_type = answer.content_type.encode()
        if not answer.multipart:
            body = frames.read(numbers[0])
            content_type = part_type
        else:
            head = _BOUNDARY_HEAD + part_type + b"\r\n\r\n"
            chunks = []
            for number in numbers:
                chunks.append(head)
                chunks.append(frames.read(number))
                chunks.append(b"\r\n")
            chunks[-1] = _CLOSE
            body = b"".join(chunks)
            content_type = multipart.content_type(answer.content_type).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self._served.inc(amount=len(numbers))
        return 200

    def close(self) -> None:
        with self._lock:
            for entry in self._open.values():
                os.close(entry.fd)
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


def _frame_bytes(ctx: Context, instance: str, numbers: list[int], decode: bool) -> list[bytes]:
    frames = ctx.store.get_frames(instance, numbers)
    if not decode:
        return frames
    import pydicom

    source = ctx.store.frame_source(instance)
    ds = pydicom.dcmread(source.path, stop_before_pixels=True)
    fmt = PixelFormat.from_dataset(ds)
    return [native_bytes(decode_frame(data, source.transfer_syntax_uid, fmt)) for data in frames]
