"""The frames route answered inside uvicorn's HTTP protocol, below ASGI (the "native front", docs/architecture.md §7).

Through ASGI every request costs uvicorn an asyncio Task, an Event, a scope and message dicts and two
coroutine sends: about 21 µs of CPU per request on the project's machine, twice the frames handler
itself. :func:`frames_protocol` makes a subclass of uvicorn's httptools protocol that answers a plain
``GET {prefix}/studies/…/frames/{list}`` synchronously, as soon as its headers are parsed, with
``FramesRoute.answer`` (the same code and bytes as the ASGI route) and one ``transport.write``
(measured: 8.5 instead of 21 µs per request for a constant answer).

It answers only what the ASGI route would answer with 200 from stored bytes, and only when nothing
else could differ; every other request goes the usual way through the app, unchanged:

- not a GET, a body or Expect header, an Upgrade, a percent-encoded or absolute-form target;
- a request pipelined behind one that is still being answered, or a connection whose writes are
  paused (the ASGI path applies back-pressure);
- a refused ``authorize`` (the ASGI route words the 401/403);
- anything ``FramesRoute.answer`` declines (unknown instance, bad frame list, decoding needed, …).

It records what the gateway records for the route (``observe(route, method, status, seconds)``) and
the frames metric, and keeps uvicorn's keep-alive, request counting and shutdown behaviour. With CORS
configured there is no fast path: the CORS middleware adds headers (``Vary: Origin``) to every answer. Tied to
uvicorn's ``HttpToolsProtocol`` internals (uvicorn is pinned); :func:`frames_protocol` returns None
when they are not as expected, and the server then runs without the fast path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dicom_store.dicomweb.asgi import Denied
from dicom_store.dicomweb.frames_asgi import FRAMES_PATH, ROUTE, FramesRoute

#: Request headers that mean the request is not a plain GET the fast path may answer.
_DECLINE = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})

Observe = Callable[[str, str, int, float], None]


class _Event:
    def set(self) -> None:
        """Nothing waits on an answered request."""


class _Answered:
    """Stands in for uvicorn's RequestResponseCycle of a request answered here: complete."""

    response_complete = True
    disconnected = False
    keep_alive = True
    more_body = False
    message_event = _Event()


_ANSWERED = _Answered()


def frames_protocol(
    frames: FramesRoute,
    *,
    prefix: str = "/dicomweb",
    observe: Observe | None = None,
    cors: bool = False,
) -> type | None:
    """A uvicorn ``http`` protocol class that answers frames requests under ``prefix`` itself.

    ``observe``: the gateway's per-route metrics (called with ``ROUTE``, "GET", 200 and the seconds
    taken); ``cors``: whether the app applies CORS (then None: every answer goes through it). None
    also when uvicorn's httptools protocol is unavailable or not the one this was written against.
    """
    if cors:
        return None
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: uvicorn uses h11, no fast path
        return None
    needed = ("on_headers_complete", "timeout_keep_alive_handler", "_unset_keepalive_if_required")
    if not all(hasattr(HttpToolsProtocol, name) for name in needed):  # pragma: no cover - uvicorn changed
        return None
    prefix_bytes = prefix.rstrip("/").encode("ascii")
    start = len(prefix)
    authorize = frames.ctx.authorize
    answer = frames.answer
    match_path = FRAMES_PATH.match
    clock = time.perf_counter

    class FramesHttpProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        def on_headers_complete(self) -> None:
            started = clock()
            if not self._answer_frames(started):
                super().on_headers_complete()

        def _answer_frames(self, started: float) -> bool:
            url: bytes = self.url
            if not url.startswith(prefix_bytes):
                return False
            cycle = self.cycle
            if (cycle is not None and not cycle.response_complete) or self.pipeline or self.flow.write_paused:
                return False
            if self.root_path or self.access_log or self.limit_concurrency is not None:
                return False  # configurations the fast path does not reproduce
            parser = self.parser
            if parser.get_method() != b"GET" or parser.should_upgrade():
                return False
            query = url.find(b"?")
            raw = url if query < 0 else url[:query]
            if b"%" in raw:
                return False
            path = raw.decode("ascii", "replace")
            match = match_path(path, start)
            if match is None:
                return False
            accept = authorization = None
            for name, value in self.headers:
                if name == b"accept":
                    accept = value.decode("latin-1")
                elif name == b"authorization":
                    authorization = value.decode("latin-1")
                elif name in _DECLINE:
                    return False
            try:
                authorize(authorization, "read")
            except Denied:
                return False
            answered = answer(match, accept)
            if answered is None:
                return False
            content_type, body = answered
            keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"  # as uvicorn
            head = [b"HTTP/1.1 200 OK\r\n"]
            for name, value in self.server_state.default_headers:  # date, server
                head += [name, b": ", value, b"\r\n"]
            head += [b"content-type: ", content_type, b"\r\ncontent-length: ", b"%d" % len(body), b"\r\n"]
            if not keep_alive:
                head.append(b"connection: close\r\n")
            head += [b"\r\n", body]
            self.transport.write(b"".join(head))
            self.cycle = _ANSWERED
            # what uvicorn does when a response completes (on_response_complete)
            self.server_state.total_requests += 1
            if not keep_alive:
                self.transport.close()
            elif not self.transport.is_closing():
                self._unset_keepalive_if_required()
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
            if observe is not None:
                observe(ROUTE, "GET", 200, clock() - started)
            return True

    FramesHttpProtocol.__qualname__ = FramesHttpProtocol.__name__ = "FramesHttpProtocol"
    return FramesHttpProtocol


def app_frames_route(app: Any) -> FramesRoute | None:
    """The FramesRoute of an app built by ``api.create_app`` or ``dicomweb_app`` (None if it has none)."""
    dicomweb = getattr(app, "dicomweb", app)
    route = getattr(dicomweb, "frames", None)
    return route if isinstance(route, FramesRoute) else None
