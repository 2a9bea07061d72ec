"""The outermost ASGI callable: sends ``/dicomweb`` straight to the DICOMweb app (whose frames route
must not pay for FastAPI routing, docs/architecture.md §7) and everything else to FastAPI, timing every request
for Prometheus by route template (never by raw path, which would explode label cardinality).
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from api.auth import SESSION_COOKIE
from dicom_store.dicomweb.frames_asgi import FRAMES_PATH, TRIED
from dicom_store.dicomweb.frames_asgi import ROUTE as FRAMES_ROUTE
from dicom_store.errors import incident, internal_error

PREFIX = "/dicomweb"
SESSION_COOKIE_BYTES = SESSION_COOKIE.encode()
_PLACEHOLDERS = {"studies": "{study}", "series": "{series}", "instances": "{instance}", "frames": "{frames}"}
_DICOMWEB_ROUTES = {
    "/studies",
    "/series",
    "/instances",
    "/studies/{study}",
    "/studies/{study}/metadata",
    "/studies/{study}/series",
    "/studies/{study}/instances",
    "/studies/{study}/series/{series}",
    "/studies/{study}/series/{series}/metadata",
    "/studies/{study}/series/{series}/instances",
    "/studies/{study}/series/{series}/instances/{instance}",
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path}",
    "/studies/{study}/series/{series}/instances/{instance}/rendered",
    "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
}


def dicomweb_route(path: str) -> str:
    """``/studies/1.2/series/3.4`` → ``/dicomweb/studies/{study}/series/{series}``."""
    out: list[str] = []
    placeholder = None
    for segment in path.split("/")[1:]:
        if placeholder is not None:
            out.append(placeholder)
            placeholder = None
            continue
        if segment == "bulkdata":
            out.append("bulkdata/{path}")
            break
        out.append(segment)
        placeholder = _PLACEHOLDERS.get(segment)
    route = "/" + "/".join(out)
    return PREFIX + (route if route in _DICOMWEB_ROUTES else "/other")


class HttpMetrics:
    """Requests and latency by route: prometheus_client metrics, so that in multiprocess mode (several
    HTTP processes, api.metrics) every process's requests are in the shared files. Each label set's
    child is looked up once and kept: ``labels()`` takes a lock and costs more than ``inc`` itself."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "marrowlink_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "marrowlink_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        count = self._counts.get((route, method, status))
        if count is None:
            count = self._counts[(route, method, status)] = self.requests.labels(route, method, str(status))
        count.inc()
        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = self.latency.labels(route)
        latency.observe(seconds)


class Gateway:
    """Dispatch by path prefix; lifespan and anything not HTTP go to FastAPI."""

    def __init__(self, fastapi_app: Any, dicomweb: Any, metrics: HttpMetrics, cors: Any = None) -> None:
        self.fastapi = fastapi_app
        self.dicomweb = dicomweb
        self.metrics = metrics
        self._inner = cors(self._dispatch) if cors is not None else self._dispatch

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.fastapi(scope, receive, send)
            return
        await self._inner(scope, receive, send)

    async def _dispatch(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        root = scope.get("root_path", "")
        path = scope["path"][len(root) :] if root and scope["path"].startswith(root) else scope["path"]
        dicomweb = path.startswith(PREFIX + "/") or path == PREFIX
        if dicomweb:
            _session_as_authorization(scope)
        if dicomweb and scope["method"] == "GET":
            match = FRAMES_PATH.match(path, len(PREFIX))
            if match is not None:  # the hot path: no scope copy, no send wrapper
                status = await self.dicomweb.frames(scope, send, match)
                if status:
                    self.metrics.observe(FRAMES_ROUTE, "GET", status, time.perf_counter() - start)
                    return
                scope[TRIED] = True
        status = 500
        started = False

        async def timed_send(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        if dicomweb:
            child = dict(scope)
            child["root_path"] = root + PREFIX
            try:
                await self.dicomweb(child, receive, timed_send)
            except Exception as exc:
                await _answer_failure(exc, scope, send, started)
            finally:
                route = dicomweb_route(path[len(PREFIX) :])
                self.metrics.observe(route, scope["method"], status, time.perf_counter() - start)
            return
        try:
            await self.fastapi(scope, receive, timed_send)
        except Exception as exc:
            await _answer_failure(exc, scope, send, started)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            self.metrics.observe(template, scope["method"], status, time.perf_counter() - start)


def _session_as_authorization(scope: dict[str, Any]) -> None:
    """A viewer inside the review pages reaches /dicomweb with the person's session cookie: hand it to
    the DICOMweb app's authorize hook as `Authorization: Session <token>` (only when no Authorization
    header came, so a token always wins)."""
    cookie = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            return
        if name == b"cookie":
            cookie = value
    if cookie is None:
        return
    for part in cookie.split(b";"):
        key, _, token = part.strip().partition(b"=")
        if key == SESSION_COOKIE_BYTES and token:
            scope["headers"] = [*scope["headers"], (b"authorization", b"Session " + token)]
            return


async def _answer_failure(exc: Exception, scope: dict[str, Any], send: Any, started: bool) -> None:
    """The last line: an exception that reached the top is logged once, under an incident id, and the
    client gets that id only. Starlette's error handler has usually answered and logged already (it marks
    the exception); the server then has nothing more to log or send."""
    incident_id = getattr(exc, "incident_id", None)
    if incident_id is None:
        incident_id = incident(f"{scope.get('method')} {scope.get('path')} failed")
    if not started:
        body = json.dumps({"detail": internal_error(incident_id), "incident": incident_id}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})
