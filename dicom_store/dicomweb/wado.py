"""WADO-RS (PS3.18 §10.4): study/series/instance retrieve, metadata and bulkdata.

Instances stream from their blob files in 1 MiB chunks (a WSI series is gigabytes). Transcoding is
offered only between the uncompressed little-endian syntaxes; other explicit requests get 406.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator

import pydicom
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicom_store.dicomweb import multipart
from dicom_store.dicomweb.context import DICOM_JSON, Context, json_error
from dicom_store.dicomweb.json_model import instance_metadata, instance_path, with_base
from dicom_store.dicomweb.media import bulk_media_type, negotiate_instance, parse_accept, type_matches
from dicom_store.errors import NotFound
from dicom_store.models import Instance

CHUNK = 1024 * 1024
_BULK_PATH = re.compile(r"^([0-9A-Fa-f]{8}/[0-9]{1,9}/)*[0-9A-Fa-f]{8}$")


def find_instances(ctx: Context, study: str, series: str | None = None, instance: str | None = None) -> list[Instance]:
    """Index rows under the resource path; NotFound when nothing is there (404)."""
    rows = ctx.store.instances(study, series, [instance] if instance else None)
    if not rows:
        what = instance or series or study
        raise NotFound(f"no instances under {what}")
    return rows


async def retrieve(
    ctx: Context, request: Request, study: str, series: str | None = None, instance: str | None = None
) -> Response:
    ctx.check(request, "read")
    rows = await run_in_threadpool(find_instances, ctx, study, series, instance)
    accept = request.headers.get("accept")
    plan = []
    for row in rows:
        answer = negotiate_instance(accept, row.transfer_syntax_uid)
        if answer is None:
            return json_error(
                406,
                f"instance {row.sop_instance_uid} is stored as {row.transfer_syntax_uid}; only that syntax "
                "(transfer-syntax=*) or, for uncompressed instances, another uncompressed syntax can be sent",
            )
        plan.append((row, *answer))
    if not all(multi for _, multi, _ in plan):
        if len(plan) != 1:
            return json_error(406, "more than one instance: only multipart/related can carry them")
        row, _, syntax = plan[0]
        body = await run_in_threadpool(_instance_bytes, ctx, row, syntax)
        return Response(body, 200, media_type=f"application/dicom; transfer-syntax={syntax}")
    base = ctx.base(request)

    async def stream() -> AsyncIterator[bytes]:
        for row, _, syntax in plan:
            location = base + instance_path(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
            yield multipart.part_head(f"application/dicom; transfer-syntax={syntax}", location)
            if syntax == row.transfer_syntax_uid:
                handle = open(ctx.store.blobs.absolute(row.path), "rb")  # noqa: SIM115 - closed below
                try:
                    while chunk := await run_in_threadpool(handle.read, CHUNK):
                        yield chunk
                finally:
                    handle.close()
            else:
                yield await run_in_threadpool(_instance_bytes, ctx, row, syntax)
            yield b"\r\n"
        yield multipart.CLOSE

    media = multipart.content_type("application/dicom")
    return StreamingResponse(stream(), 200, media_type=media)


def _instance_bytes(ctx: Context, row: Instance, syntax: str) -> bytes:
    path = ctx.store.blobs.absolute(row.path)
    if syntax == row.transfer_syntax_uid:
        return path.read_bytes()
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=syntax == "1.2.840.10008.1.2", little_endian=True)
    return buffer.getvalue()


def _pixel_vr(ctx: Context, row: Instance) -> str | None:
    try:
        source = ctx.store.frame_source(row.sop_instance_uid)
    except NotFound:
        return None
    if source.layout.encapsulated:
        return "OB"
    return "OW" if (row.bits_allocated or 8) > 8 else "OB"


def cached_metadata(ctx: Context, row: Instance) -> bytes:
    """One instance's metadata with the base placeholder; built once per blob, then from memory."""
    key = (row.sop_instance_uid, row.path)
    cached = ctx.metadata_cache.get(key)
    if cached is None:
        ds = pydicom.dcmread(ctx.store.blobs.absolute(row.path), stop_before_pixels=True)
        cached = instance_metadata(
            ds,
            study=row.study_instance_uid,
            series=row.series_instance_uid,
            instance=row.sop_instance_uid,
            pixel_vr=_pixel_vr(ctx, row),
            threshold=ctx.bulkdata_threshold,
        )
        ctx.metadata_cache.put(key, cached)
    return cached


def _metadata_body(ctx: Context, rows: list[Instance]) -> bytes:
    return b"[" + b",".join(cached_metadata(ctx, row) for row in rows) + b"]"


async def metadata(
    ctx: Context, request: Request, study: str, series: str | None = None, instance: str | None = None
) -> Response:
    ctx.check(request, "read")
    if not any(
        type_matches(item.media_type, DICOM_JSON) or item.media_type == "application/json"
        for item in parse_accept(request.headers.get("accept"))
    ):
        return json_error(406, "metadata is answered as application/dicom+json only")
    rows = await run_in_threadpool(find_instances, ctx, study, series, instance)
    body = await run_in_threadpool(_metadata_body, ctx, rows)
    return Response(with_base(body, ctx.base(request)), 200, media_type=DICOM_JSON)


async def bulkdata(ctx: Context, request: Request, study: str, series: str, instance: str, path: str) -> Response:
    """The value at a BulkDataURI, exactly as stored (PS3.18 §10.4.1.1.5)."""
    ctx.check(request, "read")
    if not _BULK_PATH.match(path):
        return json_error(400, f"bulkdata path {path!r} is not tag[/item/tag...] in 8-digit hex")
    rows = await run_in_threadpool(find_instances, ctx, study, series, instance)
    row = rows[0]
    if path.upper() == "7FE00010" and row.number_of_frames > 1:
        source = await run_in_threadpool(ctx.store.frame_source, row.sop_instance_uid)
        if source.layout.encapsulated:  # a WSI level can be gigabytes: stream it frame batch by frame batch
            return _stream_pixel_frames(ctx, row)
    parts, media = await run_in_threadpool(_bulk_values, ctx, row, path.upper())
    first = parse_accept(request.headers.get("accept"))[0]
    if (
        len(parts) == 1
        and first.media_type not in ("multipart/related", "*/*", "*")
        and type_matches(first.media_type, media.split(";")[0])
    ):
        return Response(parts[0], 200, media_type=media)
    return Response(multipart.encode(parts, media), 200, media_type=multipart.content_type(media))


def _stream_pixel_frames(ctx: Context, row: Instance) -> StreamingResponse:
    media = f"{bulk_media_type(row.transfer_syntax_uid)}; transfer-syntax={row.transfer_syntax_uid}"
    head = multipart.part_head(media)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(1, row.number_of_frames + 1, 64):
            numbers = range(start, min(start + 64, row.number_of_frames + 1))
            frames = await run_in_threadpool(ctx.store.get_frames, row.sop_instance_uid, numbers)
            yield b"".join(head + frame + b"\r\n" for frame in frames)
        yield multipart.CLOSE

    return StreamingResponse(stream(), 200, media_type=multipart.content_type(media))


def _bulk_values(ctx: Context, row: Instance, path: str) -> tuple[list[bytes], str]:
    if path == "7FE00010":
        source = ctx.store.frame_source(row.sop_instance_uid)
        frames = ctx.store.get_frames(row.sop_instance_uid, range(1, row.number_of_frames + 1))
        if source.layout.encapsulated:
            return frames, f"{bulk_media_type(row.transfer_syntax_uid)}; transfer-syntax={row.transfer_syntax_uid}"
        return [b"".join(frames)], f"application/octet-stream; transfer-syntax={row.transfer_syntax_uid}"
    ds = pydicom.dcmread(ctx.store.blobs.absolute(row.path), stop_before_pixels=True)
    pieces = path.split("/")
    current = ds
    try:
        for index in range(0, len(pieces) - 1, 2):
            current = current[int(pieces[index], 16)].value[int(pieces[index + 1])]
        element = current[int(pieces[-1], 16)]
    except (KeyError, IndexError, TypeError) as exc:
        raise NotFound(f"no bulk data at {path}") from exc
    value = element.value
    if not isinstance(value, bytes | bytearray):
        raise NotFound(f"{path} is not a binary value")
    return [bytes(value)], "application/octet-stream"
