"""Bearer-token authentication and role checks, shared by FastAPI routes and the DICOMweb app.

Tokens are compared by their SHA-256 digest, so lookup time does not depend on how much of a guessed
token is right. No endpoint that writes is reachable without a token; DICOMweb reads are open only
when the configuration says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import HTTPException, Request

from api.config import ApiConfig
from dicom_store.dicomweb import Action, Denied


class Role(StrEnum):
    VIEWER = "viewer"
    TECHNOLOGIST = "technologist"
    PATHOLOGIST = "pathologist"
    ADMIN = "admin"
    INTEGRATOR = "integrator"


#: Who may do what over DICOMweb: every role reads; a viewer may not store.
DICOMWEB_READ = frozenset(Role)
DICOMWEB_WRITE = frozenset({Role.TECHNOLOGIST, Role.PATHOLOGIST, Role.ADMIN, Role.INTEGRATOR})


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[str]


class TokenAuth:
    """Resolves ``Authorization: Bearer <token>`` headers to users."""

    def __init__(self, config: ApiConfig) -> None:
        self._users: dict[bytes, User] = {}
        for entry in config.tokens:
            unknown = set(entry.roles) - {r.value for r in Role}
            if unknown:
                raise ValueError(f"token of {entry.user!r} has unknown roles {sorted(unknown)}")
            self._users[_digest(entry.token)] = User(entry.user, frozenset(entry.roles))
        self.public_read = config.dicomweb_public_read

    def user(self, authorization: str | None) -> User:
        """The token's user; Denied(401) when the header is missing, malformed or unknown."""
        if not authorization:
            raise Denied(401, "authentication required: send Authorization: Bearer <token>")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Denied(401, "only Bearer tokens are accepted")
        user = self._users.get(_digest(token.strip()))
        if user is None:
            raise Denied(401, "unknown or expired token")
        return user

    def require(self, authorization: str | None, roles: frozenset[str]) -> User:
        user = self.user(authorization)
        if not user.roles & roles:
            raise Denied(403, f"user {user.name!r} lacks a role for this ({', '.join(sorted(roles))})")
        return user

    def dicomweb(self, authorization: str | None, action: Action) -> None:
        """The ``authorize`` callable handed to the DICOMweb app."""
        if action == "read":
            if self.public_read:
                return
            self.require(authorization, DICOMWEB_READ)
        else:
            self.require(authorization, DICOMWEB_WRITE)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def require_roles(*roles: Role) -> Callable[[Request], User]:
    """FastAPI dependency: the caller's User, or 401/403 with the Bearer challenge."""
    wanted = frozenset(roles) if roles else frozenset(Role)

    def dependency(request: Request) -> User:
        auth: TokenAuth = request.app.state.auth
        try:
            return auth.require(request.headers.get("authorization"), wanted)
        except Denied as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="marrowlink"'} if exc.status == 401 else None
            raise HTTPException(exc.status, exc.detail, headers=headers) from exc

    return dependency
