"""The HTTP application factory; integration passes in the store and an ApiConfig.

Layout: FastAPI for REST, pages and operations (routers/), the DICOMweb ASGI app at /dicomweb, and a
thin gateway in front so DICOMweb's hot frames route bypasses FastAPI's routing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select
from sqlmodel import Session

from api.auth import TokenAuth
from api.config import ApiConfig
from api.gateway import Gateway, HttpMetrics
from api.metrics import Registries
from api.notice import RESEARCH_NOTICE
from api.review import ReviewService
from api.routers import health, home, jobs, pages, session
from api.routers import review as review_routes
from dicom_store.dicomweb import DicomWebApp, cors, dicomweb_app, internal_error_response
from dicom_store.models import Instance
from dicom_store.store import Store

#: Scripts, styles and the vendored viewer of the review pages (served by the app: nothing from the internet).
STATIC = Path(__file__).resolve().parent / "static"


class MarrowlinkApp(Gateway):
    """The ASGI app uvicorn serves; ``fastapi`` and ``dicomweb`` are reachable for tests and extensions."""

    fastapi: FastAPI
    dicomweb: DicomWebApp


def create_app(store: Store, config: ApiConfig | None = None, review: ReviewService | None = None) -> MarrowlinkApp:
    """The whole HTTP application; `review` is the workflow (integration hands it in), None for an archive only."""
    config = config or ApiConfig()
    registries = Registries(_instance_count(store), pipeline=review.pipeline_status if review is not None else None)
    auth = TokenAuth(config, sessions=review.session if review is not None else None)
    dicomweb = dicomweb_app(
        store,
        authorize=auth.dicomweb,
        max_request_bytes=config.max_request_bytes,
        base_url=config.base_url,
        registry=registries.local,
    )

    fastapi_app = FastAPI(
        title="marrowlink",
        description=RESEARCH_NOTICE,
        version="0.1.0",
        exception_handlers={Exception: internal_error_response},  # an incident id, never the exception
    )
    fastapi_app.state.store = store
    fastapi_app.state.auth = auth
    fastapi_app.state.registry = registries.served
    fastapi_app.state.config = config
    fastapi_app.state.review = review
    fastapi_app.include_router(home.router)
    fastapi_app.include_router(health.router)
    fastapi_app.include_router(session.router)
    fastapi_app.include_router(review_routes.router)
    fastapi_app.include_router(jobs.router)
    fastapi_app.include_router(pages.router)
    fastapi_app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def with_cors(app):  # type: ignore[no-untyped-def]
        return cors(app, config.cors_origins)

    metrics = HttpMetrics(registries.local)
    return MarrowlinkApp(fastapi_app, dicomweb, metrics, cors=with_cors if config.cors_origins else None)


def _instance_count(store: Store) -> Callable[[], float]:
    """Instances in the index, read at scrape time (covers DIMSE and CLI stores too, not only STOW)."""

    def count() -> float:
        try:
            with Session(store.engine) as session:
                return float(session.scalar(select(func.count()).select_from(Instance)) or 0)
        except Exception:
            return float("nan")

    return count
