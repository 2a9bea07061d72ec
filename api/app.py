"""The FastAPI application factory; integration passes in everything it needs."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

RESEARCH_NOTICE = "Research use only, not for clinical diagnosis."


def create_app(*, title: str = "marrowlink") -> FastAPI:
    app = FastAPI(title=title, description=RESEARCH_NOTICE, version="0.1.0")

    @app.get("/healthz", response_class=PlainTextResponse, tags=["operations"])
    def healthz() -> str:
        """Liveness: the process answers."""
        return "ok"

    return app
