"""The frames route answered inside uvicorn's protocol (dicom_store.dicomweb.fast_http).

Every request is sent, as raw bytes, to two servers over one store: uvicorn as usual, and uvicorn with
the fast-path protocol. The answers must be byte for byte the same (but for the Date header); a counting
ASGI wrapper shows which requests the fast path answered itself and which it left to the app.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api import ApiConfig, create_app
from dicom_store import Store
from dicom_store.dicomweb.fast_http import app_frames_route, frames_protocol
from tests.dicom_factory import secondary_capture, wsi_level
from tests.test_dicomweb_support import TOKENS, serve

OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
VIEWER = "Bearer viewer-token-0001"


class Counting:
    """ASGI wrapper: how many HTTP requests reached the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


@dataclass
class Pair:
    plain: int
    fast: int
    counting: Counting
    app: Any
    frames_url: str
    sc_frames_url: str
    frames: list[bytes]


@contextmanager
def pair(store: Store, **config: Any) -> Iterator[Pair]:
    settings = {"tokens": TOKENS, "dicomweb_public_read": True, **config}
    plain_app = create_app(store, ApiConfig(**settings))
    fast_app = create_app(store, ApiConfig(**settings))
    route = app_frames_route(fast_app)
    assert route is not None
    protocol = frames_protocol(route, prefix="/dicomweb", observe=fast_app.metrics.observe)
    assert protocol is not None
    counting = Counting(fast_app)
    with serve(plain_app, lifespan="auto") as plain, serve(counting, lifespan="auto", http=protocol) as fast:
        yield Pair(_port(plain), _port(fast), counting, fast_app, *_urls(store))


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _urls(store: Store) -> tuple[str, str, list[bytes]]:
    rows = store.instances()
    slide = next(r for r in rows if r.number_of_frames > 1)
    sc = next(r for r in rows if r.number_of_frames == 1)
    frames = store.get_frames(slide.sop_instance_uid, range(1, slide.number_of_frames + 1))

    def url(row: Any) -> str:
        return (
            f"/dicomweb/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
            f"/instances/{row.sop_instance_uid}/frames/"
        )

    return url(slide), url(sc), frames


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    from integration.database import open_index

    engine = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    store = Store(engine, tmp_path / "blobs")
    slide, _ = wsi_level(frames=6)
    store.store_dataset(slide)
    store.store_dataset(secondary_capture(size=8))
    yield store
    engine.dispose()


def request(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, buffer: bytearray, head_only: bool = False) -> bytes:
    """One response from ``sock`` (``buffer`` keeps what was read past it)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {bytes(buffer)[:200]!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if head_only:
        length = 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        rest += chunk
    buffer[:] = rest[length:]
    return head + b"\r\n\r\n" + rest[:length]


def exchange(port: int, *requests: bytes, head_only: bool = False) -> tuple[list[bytes], bool]:
    """Send ``requests`` in one write (pipelined when several); the answers, and whether the server
    then closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        buffer = bytearray()
        answers = [read_response(sock, buffer, head_only) for _ in requests]
        sock.settimeout(0.3)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return [_without_date(a) for a in answers], closed


def _without_date(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def same_answer(p: Pair, *requests: bytes, fast: bool, head_only: bool = False) -> list[bytes]:
    """Both servers answer alike; ``fast``: the fast path answered (the app saw none of them)."""
    before = p.counting.requests
    plain, plain_closed = exchange(p.plain, *requests, head_only=head_only)
    quick, quick_closed = exchange(p.fast, *requests, head_only=head_only)
    assert quick == plain
    assert quick_closed == plain_closed
    reached_app = p.counting.requests - before
    assert reached_app == (0 if fast else len(requests)), reached_app
    return quick


def test_fast_answers_are_the_apps_answers(store: Store) -> None:
    with pair(store) as p:
        url = p.frames_url
        (one,) = same_answer(p, request(f"{url}3", f"Accept: {OCTET_ANY}"), fast=True)
        assert one.startswith(b"HTTP/1.1 200 OK\r\n") and p.frames[2] in one
        (two,) = same_answer(p, request(f"{url}2,4", f"Accept: {OCTET_ANY}"), fast=True)
        assert p.frames[1] in two and p.frames[3] in two
        (jpeg,) = same_answer(p, request(f"{url}1", "Accept: image/jpeg"), fast=True)
        assert jpeg.endswith(p.frames[0])
        same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}", "User-Agent: x"), fast=True)
        same_answer(p, request(f"{url}5?cache=1", f"Accept: {OCTET_ANY}"), fast=True)
        same_answer(p, request(f"{url}1"), fast=True)  # no Accept header at all

        # left to the app, answered as before
        same_answer(p, request(f"{url}1,2", "Accept: image/jpeg"), fast=False)  # 406
        same_answer(p, request(f"{url}99", f"Accept: {OCTET_ANY}"), fast=False)  # 404
        same_answer(p, request(f"{url}1,,2", f"Accept: {OCTET_ANY}"), fast=False)  # 400
        same_answer(p, request(f"{url}1", "Accept: application/octet-stream"), fast=False)  # decoded pixels
        same_answer(p, request(f"{p.sc_frames_url}1", f"Accept: {OCTET_ANY}"), fast=True)
        wrong_series = url.replace("/series/", "/series/9")
        same_answer(p, request(f"{wrong_series}1", f"Accept: {OCTET_ANY}"), fast=False)
        same_answer(p, request(f"{url}%31", f"Accept: {OCTET_ANY}"), fast=False)  # percent-encoded
        same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}", method="HEAD"), fast=False, head_only=True)
        same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}", "Content-Length: 0"), fast=False)
        links = "X-Forwarded-Host: archive.example.org"  # QIDO links name the host: the same for both
        same_answer(p, request("/dicomweb/studies", "Accept: application/dicom+json", links), fast=False)


def test_connection_handling_is_uvicorns(store: Store) -> None:
    with pair(store) as p:
        url = p.frames_url
        answers = same_answer(
            p, request(f"{url}1", f"Accept: {OCTET_ANY}"), request(f"{url}2", f"Accept: {OCTET_ANY}"), fast=True
        )
        assert p.frames[0] in answers[0] and p.frames[1] in answers[1]  # pipelined, in order
        # a fast answer pipelined behind one the app answers waits for it
        same_answer(p, request("/healthz"), request(f"{url}2", f"Accept: {OCTET_ANY}"), fast=False)
        _, closed = exchange(p.fast, request(f"{url}1", f"Accept: {OCTET_ANY}"))
        assert not closed  # keep-alive
        (closing,) = same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}", "Connection: close"), fast=True)
        assert b"connection: close" in closing.lower()
        (old,) = same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}", version="1.0"), fast=True)
        _, closed = exchange(p.fast, request(f"{url}1", f"Accept: {OCTET_ANY}", version="1.0"))
        assert closed and b"connection: close" in old.lower()


def test_auth_stays_with_the_app(store: Store) -> None:
    with pair(store, dicomweb_public_read=False) as p:
        url = p.frames_url
        (denied,) = same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}"), fast=False)
        assert denied.startswith(b"HTTP/1.1 401")
        same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}", "Authorization: Bearer nope"), fast=False)
        (allowed,) = same_answer(p, request(f"{url}1", f"Accept: {OCTET_ANY}", f"Authorization: {VIEWER}"), fast=True)
        assert p.frames[0] in allowed


def test_no_fast_path_with_cors(store: Store) -> None:
    """The CORS middleware adds headers to every answer (Vary: Origin), so it must see them all."""
    app = create_app(store, ApiConfig(tokens=TOKENS, cors_origins=["https://viewer.example.org"]))
    assert frames_protocol(app_frames_route(app), prefix="/dicomweb", cors=True) is None


def test_fast_answers_are_counted_like_the_apps(store: Store) -> None:
    with pair(store) as p:
        for number in (1, 2, 3):
            exchange(p.fast, request(f"{p.frames_url}{number}", f"Accept: {OCTET_ANY}"))
        exchange(p.fast, request(f"{p.frames_url}4,5", f"Accept: {OCTET_ANY}"))
        assert p.counting.requests == 0
        (metrics,), _ = exchange(p.fast, request("/metrics"))
        route = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
        text = metrics.decode()
        assert f'marrowlink_http_requests_total{{method="GET",route="{route}",status="200"}} 4.0' in text
        assert f'marrowlink_http_request_seconds_count{{route="{route}"}} 4.0' in text
        assert "marrowlink_frames_served_total 5.0" in text
