"""STOW-RS (PS3.18 §10.5): multipart/related; type="application/dicom", streamed to disk part by part.

Each part lands in a temp file in the blob store's tmp folder (same filesystem), so the store takes
it over with a rename; every part goes through ``Store.store_file`` and so gets the same atomic write
and validation as DIMSE. The response dataset lists stored instances (ReferencedSOPSequence with
RetrieveURL) and refused ones (FailedSOPSequence with FailureReason and, for people, ErrorComment);
the reasons are repeated in a ``Warning`` header. Status: 200 all stored, 202 some refused, 409 none
stored, 400 malformed body, 413 over the size limit, 415 wrong media type.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from dicom_store.dicomweb import multipart
from dicom_store.dicomweb.context import DICOM_JSON, Context
from dicom_store.dicomweb.json_model import dataset_to_json
from dicom_store.errors import InvalidInstance, StoreError, incident, internal_error

#: PS3.18 Table 10.5.3-2 / PS3.4 Annex B failure reasons used here.
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900  # "Error: Data Set does not match SOP Class" family; PS3.18 names A9xx for this
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Outcome:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    failure: int | None = None
    reason: str = ""


async def store(ctx: Context, request: Request, study: str | None = None) -> Response:
    ctx.check(request, "write")
    media, params = multipart.parse_content_type(request.headers.get("content-type"))
    if media != "multipart/related" or params.get("type", "").lower() != "application/dicom":
        return _failure_response(
            415,
            CANNOT_UNDERSTAND,
            'Content-Type must be multipart/related; type="application/dicom", not '
            f"{request.headers.get('content-type') or 'missing'!r}",
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > ctx.max_request_bytes:
        ctx.metrics.stow_failures.labels(reason=f"{OUT_OF_RESOURCES:04X}").inc()
        return _failure_response(
            413, OUT_OF_RESOURCES, f"request of {length} bytes exceeds the limit of {ctx.max_request_bytes}"
        )
    try:
        parts = await multipart.read_parts(
            _chunks(request), params.get("boundary", ""), ctx.store.blobs.temp_file, ctx.max_request_bytes
        )
    except multipart.TooLarge as exc:
        ctx.metrics.stow_failures.labels(reason=f"{OUT_OF_RESOURCES:04X}").inc()
        return _failure_response(413, OUT_OF_RESOURCES, str(exc))
    except multipart.MalformedMultipart as exc:
        return _failure_response(400, CANNOT_UNDERSTAND, f"malformed multipart body: {exc}")
    except ClientDisconnect:
        return Response(status_code=400)
    if not parts:
        return _failure_response(400, CANNOT_UNDERSTAND, "the multipart body has no parts")
    outcomes = await run_in_threadpool(_store_parts, ctx, parts, study)
    return _response(ctx, request, outcomes)


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _store_parts(ctx: Context, parts: list[multipart.Part], study: str | None) -> list[Outcome]:
    outcomes = []
    try:
        for index, part in enumerate(parts, start=1):
            outcomes.append(_store_part(ctx, index, part, study))
    finally:
        for part in parts:  # consumed parts were moved; anything left is a refused part
            try:
                os.unlink(part.path)
            except FileNotFoundError:
                pass
    return outcomes


def _peek(path: Path) -> tuple[str, str, str, str]:
    """(class, instance, study, series) UIDs as written in the part, '' where unreadable."""
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"],
        )
    except Exception:
        return "", "", "", ""
    values = []
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = ds.get(keyword, "")
        values.append(str(value).strip().rstrip("\x00")[:64] if isinstance(value, str) else "")
    return values[0], values[1], values[2], values[3]


def _add_preamble(path: Path) -> None:
    """Give a Part-10 stream without preamble and 'DICM' its 132 header bytes.

    pydicom's ``dcmwrite`` without ``enforce_file_format`` (what dicomweb-client 0.61 sends) writes the
    File Meta group directly; PS3.10 wants the preamble, and the store insists on a proper file.
    """
    with open(path, "rb") as handle:
        head = handle.read(132)
    if head[128:132] == b"DICM" or not head.startswith(b"\x02\x00"):
        return
    fixed = path.with_suffix(".preamble")
    with open(path, "rb") as source, open(fixed, "wb") as target:
        target.write(b"\x00" * 128 + b"DICM")
        shutil.copyfileobj(source, target, 1024 * 1024)
    os.replace(fixed, path)


def _store_part(ctx: Context, index: int, part: multipart.Part, study: str | None) -> Outcome:
    _add_preamble(part.path)
    sop_class, sop_instance, part_study, part_series = _peek(part.path)
    outcome = Outcome(sop_class, sop_instance, part_study, part_series)
    part_type = part.headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
    if part_type != "application/dicom":
        outcome.failure, outcome.reason = CANNOT_UNDERSTAND, f"part {index} is {part_type}, not application/dicom"
    elif study is not None and part_study and part_study != study:
        outcome.failure = STUDY_MISMATCH
        outcome.reason = f"part {index}: StudyInstanceUID {part_study} differs from the target study {study}"
    else:
        try:
            stored = ctx.store.store_file(part.path, move=True)
        except StoreError as exc:
            outcome.failure, outcome.reason = exc.status, f"part {index}: {exc}"
        except Exception:  # a bug or an I/O error must answer for this part, not the whole request
            outcome.failure = PROCESSING_FAILURE
            outcome.reason = f"part {index}: {internal_error(incident(f'STOW part {index} failed'))}"
        else:
            outcome.sop_class_uid, outcome.sop_instance_uid = stored.sop_class_uid, stored.sop_instance_uid
            outcome.study_instance_uid = stored.study_instance_uid
            outcome.series_instance_uid = stored.series_instance_uid
            ctx.metrics.instances_stored.inc()
    if outcome.failure is not None:
        ctx.metrics.stow_failures.labels(reason=f"{outcome.failure:04X}").inc()
    return outcome


def _response(ctx: Context, request: Request, outcomes: list[Outcome]) -> Response:
    base = ctx.base(request)
    ds = Dataset()
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    studies = {o.study_instance_uid for o in stored}
    if len(studies) == 1:
        ds.RetrieveURL = f"{base}/studies/{next(iter(studies))}"
    ds.ReferencedSOPSequence = []
    for o in stored:
        item = Dataset()
        item.ReferencedSOPClassUID = o.sop_class_uid
        item.ReferencedSOPInstanceUID = o.sop_instance_uid
        item.RetrieveURL = (
            f"{base}/studies/{o.study_instance_uid}/series/{o.series_instance_uid}/instances/{o.sop_instance_uid}"
        )
        ds.ReferencedSOPSequence.append(item)
    if failed:
        ds.FailedSOPSequence = [_failed_item(o.sop_class_uid, o.sop_instance_uid, o.failure, o.reason) for o in failed]
    if not ds.ReferencedSOPSequence:
        del ds.ReferencedSOPSequence
    status = 200 if not failed else 202 if stored else 409
    headers = {"Warning": _warning([o.reason for o in failed])} if failed else None
    return Response(json.dumps(dataset_to_json(ds, None)), status, headers=headers, media_type=DICOM_JSON)


def _failed_item(sop_class: str, sop_instance: str, failure: int | None, reason: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class if _looks_like_uid(sop_class) else ""
    item.ReferencedSOPInstanceUID = sop_instance if _looks_like_uid(sop_instance) else ""
    item.FailureReason = failure if failure is not None else PROCESSING_FAILURE
    item.ErrorComment = reason[:64]  # LO; the whole reason is in the Warning header
    return item


def _looks_like_uid(value: str) -> bool:
    try:
        from dicom_store.blobs import check_uid

        check_uid(value)
        return True
    except InvalidInstance:
        return False


def _warning(reasons: list[str]) -> str:
    text = "; ".join(reasons)[:2000]
    text = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "?" for ch in text)
    return f'299 marrowlink "{text}"'


def _failure_response(status: int, failure: int, reason: str) -> Response:
    """A refusal of the whole request, still in the STOW response shape (one FailedSOPSequence item)."""
    ds = Dataset()
    ds.FailedSOPSequence = [_failed_item("", "", failure, reason)]
    return Response(
        json.dumps(dataset_to_json(ds, None)),
        status,
        headers={"Warning": _warning([reason])},
        media_type=DICOM_JSON,
    )
