"""The landing page and who-am-I: the research-use notice first, then where to go."""

from __future__ import annotations

import html

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from api.auth import User, require_roles
from api.notice import RESEARCH_NOTICE

router = APIRouter()

_LINKS = [
    ("/review", "Review: the worklist (log in)"),
    ("/dicomweb/studies", "DICOMweb: studies (QIDO-RS)"),
    ("/docs", "API documentation (OpenAPI)"),
    ("/healthz", "Liveness"),
    ("/readyz", "Readiness"),
    ("/metrics", "Metrics (Prometheus)"),
]


@router.get("/", response_class=HTMLResponse, tags=["pages"])
def landing() -> str:
    items = "".join(f'<li><a href="{href}">{html.escape(label)}</a></li>' for href, label in _LINKS)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>marrowlink</title></head><body>"
        f'<p role="alert" style="background:#fee;border:1px solid #c00;padding:.5em"><strong>'
        f"{html.escape(RESEARCH_NOTICE)}</strong></p>"
        "<h1>marrowlink</h1><p>DICOM/HL7 archive and AI differentials for bone-marrow smears.</p>"
        f"<ul>{items}</ul></body></html>"
    )


class Me(BaseModel):
    user: str
    roles: list[str]
    name: str = ""  # a person's name (Family^Given); empty for a machine's token
    csrf: str = ""  # a person's session CSRF token, to send back as X-CSRF-Token with changes


@router.get("/api/me", response_model=Me, tags=["auth"])
def me(user: User = Depends(require_roles())) -> Me:  # noqa: B008 - FastAPI dependency idiom
    """Who the token or session belongs to (lets a client check before doing work; pages get their CSRF token)."""
    return Me(user=user.name, roles=sorted(user.roles), name=user.person.name if user.person else "", csrf=user.csrf)
