"""QIDO-RS (PS3.18 §10.6): studies, series and instances searches answered as application/dicom+json.

An empty match is 200 with ``[]``: PS3.18 §10.6.3.2 (2019 onwards) lists 200 for a successful
search whatever the number of matches; 204 was dropped from the standard.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicom_store.dicomweb.context import DICOM_JSON, Context, json_error
from dicom_store.dicomweb.media import parse_accept, type_matches
from dicom_store.query import Level, UnsupportedQuery, parse_query

_JSON_TYPES = (DICOM_JSON, "application/json")


def _accepts_json(accept: str | None) -> bool:
    return any(any(type_matches(item.media_type, media) for media in _JSON_TYPES) for item in parse_accept(accept))


def _retrieve_url(base: str, level: Level, item: dict) -> str:
    url = f"{base}/studies/{item['0020000D']['Value'][0]}"
    if level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{item['0020000E']['Value'][0]}"
    if level == Level.IMAGE:
        url += f"/instances/{item['00080018']['Value'][0]}"
    return url


async def search(ctx: Context, request: Request, level: Level, fixed: dict[str, str]) -> Response:
    """Run one search; ``fixed`` are the UIDs taken from the resource path."""
    ctx.check(request, "read")
    if not _accepts_json(request.headers.get("accept")):
        return json_error(406, "QIDO-RS answers application/dicom+json only (XML is not supported)")
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in fixed]
    params += list(fixed.items())
    try:
        query = parse_query(level, params)
    except UnsupportedQuery as exc:
        return json_error(400, str(exc))
    warnings = []
    if query.ignored:
        warnings.append(
            f'299 marrowlink "The following query keys are not supported and were ignored: '
            f'{", ".join(sorted(set(query.ignored)))}"'
        )
    wanted = query.limit
    if wanted is None or wanted > ctx.qido_max_results:
        query.limit = ctx.qido_max_results + 1
    try:
        results = await run_in_threadpool(ctx.store.search_json, level, query)
    except UnsupportedQuery as exc:
        return json_error(400, str(exc))
    if (wanted is None or wanted > ctx.qido_max_results) and len(results) > ctx.qido_max_results:
        results = results[: ctx.qido_max_results]
        warnings.append(
            '299 marrowlink "The number of results exceeded the maximum supported by the server. '
            'Additional results can be requested."'
        )
    base = ctx.base(request)
    for item in results:
        item["00081190"] = {"vr": "UR", "Value": [_retrieve_url(base, level, item)]}
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return Response(json.dumps(results, ensure_ascii=False), 200, headers=headers, media_type=DICOM_JSON)
