"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

router = APIRouter(tags=["operations"])


class Readiness(BaseModel):
    database: str
    blob_store: str
    #: Present when jobs go through a broker (scale-out).
    broker: str | None = None


@router.get("/healthz", response_class=PlainTextResponse)
def healthz() -> str:
    """Liveness: the process answers (no dependencies checked, so a slow DB does not restart us)."""
    return "ok"


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(request: Request) -> Response:
    """Readiness: the index answers a query, the blob store accepts a file (write, fsync, delete) and, with
    scale-out, the broker answers."""
    store = request.app.state.store
    database = blob_store = "ok"
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        database = f"error: {type(exc).__name__}: {exc}"[:300]
    probe = store.blobs.tmp / f"readyz-{secrets.token_hex(4)}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        blob_store = f"error: {exc}"[:300]
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
    extra: dict[str, str] = {}
    review = getattr(request.app.state, "review", None)
    if review is not None:
        try:
            extra = review.readiness()
        except Exception as exc:
            extra = {"broker": f"error: {type(exc).__name__}: {exc}"[:300]}
    ready = database == "ok" and blob_store == "ok" and all(v == "ok" for v in extra.values())
    body = Readiness(database=database, blob_store=blob_store, **extra).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> Response:
    """Prometheus text format: HTTP requests/latency by route, instances stored, STOW failures, frames."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
