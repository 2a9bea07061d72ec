"""What the api needs from integration, as one plain object (no package but integration reads Settings)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TokenEntry(BaseModel):
    """A bearer token and who holds it."""

    token: str
    user: str
    roles: list[str] = Field(default_factory=lambda: ["viewer"])


class ApiConfig(BaseModel):
    """Configuration of the HTTP application.

    tokens: bearer tokens with their user and roles (viewer, technologist, pathologist, admin, integrator).
    cors_origins: origins allowed to call us from a browser (a viewer served elsewhere); ``*`` for any.
    dicomweb_public_read: DICOMweb reads without a token (writes always need one).
    max_request_bytes: largest STOW-RS body accepted (413 above).
    base_url: how we are reached, for links when a request carries no Host header.
    """

    tokens: list[TokenEntry] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)
    dicomweb_public_read: bool = False
    max_request_bytes: int = 2 * 1024**3
    base_url: str = "http://127.0.0.1:8000"
