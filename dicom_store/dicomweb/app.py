"""The DICOMweb ASGI application: the raw frames route first, Starlette routes for the rest."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicom_store.dicomweb import frames_asgi, qido, rendered, stow, wado
from dicom_store.dicomweb.asgi import Authorize, Denied, denied_response
from dicom_store.dicomweb.context import Context, Metrics, json_error
from dicom_store.dicomweb.frames_asgi import TRIED
from dicom_store.errors import NotFound, incident, internal_error
from dicom_store.query import Level
from dicom_store.store import Store

S, SE, I = "{study}", "{series}", "{instance}"  # noqa: E741


def _routes(ctx: Context) -> list[Route]:
    def search(level: Level, *fixed: str):  # type: ignore[no-untyped-def]
        names = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}

        async def endpoint(request: Request) -> Response:
            params = {names[key]: request.path_params[key] for key in fixed}
            return await qido.search(ctx, request, level, params)

        return endpoint

    def path_args(request: Request) -> dict[str, str]:
        return dict(request.path_params)

    async def retrieve(request: Request) -> Response:
        return await wado.retrieve(ctx, request, **path_args(request))

    async def metadata(request: Request) -> Response:
        return await wado.metadata(ctx, request, **path_args(request))

    async def bulkdata(request: Request) -> Response:
        return await wado.bulkdata(ctx, request, **path_args(request))

    async def frames(request: Request) -> Response:
        p = request.path_params
        return await frames_asgi.frames(ctx, request, p["study"], p["series"], p["instance"], p["frames"])

    def render(thumbnail: bool):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            p = request.path_params
            return await rendered.rendered(
                ctx, request, p["study"], p["series"], p["instance"], p.get("frames"), thumbnail=thumbnail
            )

        return endpoint

    async def store(request: Request) -> Response:
        return await stow.store(ctx, request, request.path_params.get("study"))

    instance = f"/studies/{S}/series/{SE}/instances/{I}"
    return [
        Route("/studies", search(Level.STUDY), methods=["GET"]),
        Route("/studies", store, methods=["POST"]),
        Route("/series", search(Level.SERIES), methods=["GET"]),
        Route("/instances", search(Level.IMAGE), methods=["GET"]),
        Route(f"/studies/{S}/series", search(Level.SERIES, "study"), methods=["GET"]),
        Route(f"/studies/{S}/instances", search(Level.IMAGE, "study"), methods=["GET"]),
        Route(f"/studies/{S}/series/{SE}/instances", search(Level.IMAGE, "study", "series"), methods=["GET"]),
        Route(f"/studies/{S}", retrieve, methods=["GET"]),
        Route(f"/studies/{S}", store, methods=["POST"]),
        Route(f"/studies/{S}/metadata", metadata, methods=["GET"]),
        Route(f"/studies/{S}/series/{SE}", retrieve, methods=["GET"]),
        Route(f"/studies/{S}/series/{SE}/metadata", metadata, methods=["GET"]),
        Route(instance, retrieve, methods=["GET"]),
        Route(f"{instance}/metadata", metadata, methods=["GET"]),
        Route(f"{instance}/bulkdata/{{path:path}}", bulkdata, methods=["GET"]),
        Route(f"{instance}/rendered", render(False), methods=["GET"]),
        Route(f"{instance}/thumbnail", render(True), methods=["GET"]),
        Route(f"{instance}/frames/{{frames}}", frames, methods=["GET"]),
        Route(f"{instance}/frames/{{frames}}/rendered", render(False), methods=["GET"]),
        Route(f"{instance}/frames/{{frames}}/thumbnail", render(True), methods=["GET"]),
    ]


async def _denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Denied)
    status, body, headers = denied_response(exc)
    return Response(body, status, headers={k.decode(): v.decode() for k, v in headers})


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_error(404, str(exc))


async def internal_error_response(request: Request, exc: Exception) -> Response:
    """500 with an incident id only; the exception goes to the log under the same id (marked on it, so the
    outermost layer does not log it twice)."""
    incident_id = incident(f"{request.method} {request.url.path} failed")
    exc.incident_id = incident_id  # type: ignore[attr-defined]
    return Response(
        json.dumps({"detail": internal_error(incident_id), "incident": incident_id}), 500, media_type="application/json"
    )


class DicomWebApp:
    """ASGI app for ``/dicomweb``: frames requests are answered before any framework routing."""

    def __init__(self, ctx: Context, cors_origins: list[str] | None = None) -> None:
        self.ctx = ctx
        self.frames = frames_asgi.FramesRoute(ctx)
        self.routes = Starlette(
            routes=_routes(ctx),
            exception_handlers={Denied: _denied, NotFound: _not_found, Exception: internal_error_response},
        )
        self._slow: Any = self.routes
        if cors_origins:
            self._slow = cors(self.routes, cors_origins)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and TRIED not in scope:
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            match = frames_asgi.FRAMES_PATH.match(path)
            if match is not None and await self.frames(scope, send, match):
                return
        await self._slow(scope, receive, send)


def cors(app: Any, origins: list[str]) -> CORSMiddleware:
    """CORS for viewers on another origin: preflight for Accept and Authorization included."""
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
        allow_headers=["Accept", "Authorization", "Content-Type", "Range", "X-Requested-With"],
        expose_headers=["Warning", "Content-Location", "Content-Type", "Content-Length"],
        max_age=600,
    )


def dicomweb_app(
    store: Store,
    *,
    authorize: Authorize,
    max_request_bytes: int,
    bulkdata_threshold: int = 0,
    base_url: str = "",
    cors_origins: list[str] | None = None,
    registry: CollectorRegistry | None = None,
    qido_max_results: int = 1000,
) -> DicomWebApp:
    """Build the DICOMweb service over ``store``.

    Parameters
    ----------
    store:
        The archive.
    authorize:
        ``authorize(authorization_header, "read" | "write")``; raises ``Denied`` to refuse.
    max_request_bytes:
        STOW bodies larger than this are refused with 413 (checked on Content-Length and while streaming).
    bulkdata_threshold:
        Binary values longer than this many bytes are sent as BulkDataURI; shorter ones as
        InlineBinary. 0 (default): every binary value is a BulkDataURI.
    base_url:
        Used for links only when a request carries no Host header.
    cors_origins:
        Origins allowed by CORS when this app is served alone (the api applies CORS around everything).
    registry:
        Prometheus registry for the DICOMweb counters.
    qido_max_results:
        Most results per search; more are announced by a Warning header (PS3.18 §8.3.4.5).
    """
    ctx = Context(
        store=store,
        authorize=authorize,
        max_request_bytes=max_request_bytes,
        bulkdata_threshold=bulkdata_threshold,
        fallback_base_url=base_url,
        metrics=Metrics(registry),
        qido_max_results=qido_max_results,
    )
    return DicomWebApp(ctx, cors_origins)
