"""Small raw-ASGI helpers shared by the hot frames path and the Starlette routes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

Action = Literal["read", "write"]
Scope = dict[str, Any]


class Denied(Exception):
    """Raised by an ``authorize`` callable: 401 (no or bad credentials) or 403 (wrong role)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Authorize(Protocol):
    """``authorize(authorization_header, action)``: return to allow, raise Denied to refuse."""

    def __call__(self, authorization: str | None, action: Action) -> object: ...


def allow_all(authorization: str | None, action: Action) -> None:
    """For tests and a store used without the api: everything is allowed."""


def header(scope: Scope, name: bytes) -> str | None:
    """A request header (``name`` lower-case bytes), latin-1 decoded; None when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def denied_response(exc: Denied) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"detail": exc.detail}).encode()
    headers = [(b"content-type", b"application/json")]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="marrowlink"'))
    return exc.status, body, headers


async def respond(
    send: Callable[[dict], Any],
    status: int,
    body: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)*$")


def base_url(scope: Scope, fallback: str = "") -> str:
    """The service's own URL as the client sees it (X-Forwarded-Host/Proto/Prefix honoured).

    Header values are checked against strict patterns, since they end up inside JSON and links: a
    hostile header falls back to the Host header, then to the configured base.
    """
    proto = header(scope, b"x-forwarded-proto")
    proto = proto.split(",")[0].strip().lower() if proto else scope.get("scheme", "http")
    if proto not in ("http", "https"):
        proto = "http"
    host = None
    forwarded = header(scope, b"x-forwarded-host")
    for candidate in (forwarded, header(scope, b"host")):
        if candidate:
            candidate = candidate.split(",")[0].strip()
            if _HOST.match(candidate):
                host = candidate
                break
    server = scope.get("server")
    if host is not None and not forwarded and not _has_port(host) and server and server[1] not in (80, 443):
        # A Host header without port straight from a client (dicomweb-client sends its hostname only):
        # the links must still reach the port this request came in on.
        host = f"{host}:{server[1]}"
    prefix = header(scope, b"x-forwarded-prefix") or ""
    prefix = prefix.strip().rstrip("/")
    if not _PREFIX.match(prefix):
        prefix = ""
    root = scope.get("root_path", "")
    if host is None:
        return fallback.rstrip("/") + root if fallback else root
    return f"{proto}://{host}{prefix}{root}"


def _has_port(host: str) -> bool:
    return host.rsplit("]", 1)[-1].count(":") == 1 if host.startswith("[") else ":" in host
