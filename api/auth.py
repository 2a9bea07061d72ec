"""Authentication and role checks, shared by FastAPI routes and the DICOMweb app.

Machines send `Authorization: Bearer <token>`; people log in and carry a session cookie (HttpOnly,
SameSite=Lax). Tokens are compared by their SHA-256 digest, so lookup time does not depend on how much of
a guessed token is right. A request that changes something with a session cookie must carry the
session's CSRF token (`X-CSRF-Token` header or `csrf` form field); over DICOMweb a session may read only.
No endpoint that writes is reachable without a user; DICOMweb reads are open only when configured so.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import HTTPException, Request

from api.config import ApiConfig
from api.review import Person
from dicom_store.dicomweb import Action, Denied

SESSION_COOKIE = "marrowlink_session"
#: How long a session lookup is trusted without asking the database again (the frames route asks per tile).
_SESSION_CACHE_SECONDS = 10.0
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
    #: Set for a person logged in with a session (None for a machine's bearer token).
    person: Person | None = None
    #: The session's CSRF token ("" for bearer tokens, which need none).
    csrf: str = ""


Sessions = Callable[[str], "tuple[Person, str] | None"]


class TokenAuth:
    """Resolves bearer tokens and session cookies to users."""

    def __init__(self, config: ApiConfig, sessions: Sessions | None = None) -> None:
        self._users: dict[bytes, User] = {}
        for entry in config.tokens:
            unknown = set(entry.roles) - {r.value for r in Role}
            if unknown:
                raise ValueError(f"token of {entry.user!r} has unknown roles {sorted(unknown)}")
            self._users[_digest(entry.token)] = User(entry.user, frozenset(entry.roles))
        self.public_read = config.dicomweb_public_read
        self._sessions = sessions
        self._session_cache: dict[str, tuple[float, User | None]] = {}

    def user(self, authorization: str | None, session_token: str | None = None) -> User:
        """The bearer token's or the session's user; Denied(401) when neither is given or known."""
        if authorization:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "session" and token.strip():
                return self._session_user(token.strip())
            if scheme.lower() != "bearer" or not token.strip():
                raise Denied(401, "only Bearer tokens are accepted")
            user = self._users.get(_digest(token.strip()))
            if user is None:
                raise Denied(401, "unknown or expired token")
            return user
        if session_token:
            return self._session_user(session_token)
        raise Denied(401, "authentication required: log in, or send Authorization: Bearer <token>")

    def _session_user(self, token: str) -> User:
        now = time.monotonic()
        cached = self._session_cache.get(token)
        if cached is None or cached[0] < now:
            found = self._sessions(token) if self._sessions is not None else None
            user = None
            if found is not None:
                person, csrf = found
                user = User(person.login, frozenset({person.role}), person, csrf)
            if len(self._session_cache) > 10_000:
                self._session_cache.clear()
            self._session_cache[token] = cached = (now + _SESSION_CACHE_SECONDS, user)
        if cached[1] is None:
            raise Denied(401, "session expired: log in again")
        return cached[1]

    def forget_session(self, token: str) -> None:
        """After a logout, so that this process does not trust the cached session any longer."""
        self._session_cache.pop(token, None)

    def require(self, authorization: str | None, roles: frozenset[str], session_token: str | None = None) -> User:
        user = self.user(authorization, session_token)
        if not user.roles & roles:
            raise Denied(403, f"user {user.name!r} lacks a role for this ({', '.join(sorted(roles))})")
        return user

    def dicomweb(self, authorization: str | None, action: Action) -> None:
        """The ``authorize`` callable handed to the DICOMweb app (the gateway passes a session as `Session <t>`)."""
        if action == "read":
            if self.public_read:
                return
            self.require(authorization, DICOMWEB_READ)
        else:
            user = self.require(authorization, DICOMWEB_WRITE)
            if user.person is not None:
                raise Denied(403, "storing over DICOMweb needs a bearer token, not a browser session")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def require_roles(*roles: Role) -> Callable[[Request], User]:
    """FastAPI dependency: the caller's User, or 401/403 with the Bearer challenge."""
    wanted = frozenset(roles) if roles else frozenset(Role)

    async def dependency(request: Request) -> User:
        auth: TokenAuth = request.app.state.auth
        try:
            user = auth.require(request.headers.get("authorization"), wanted, request.cookies.get(SESSION_COOKIE))
        except Denied as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="marrowlink"'} if exc.status == 401 else None
            raise HTTPException(exc.status, exc.detail, headers=headers) from exc
        if user.person is not None and request.method in _UNSAFE:
            sent = request.headers.get("x-csrf-token")
            if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                sent = str((await request.form()).get("csrf", ""))
            if not sent or not hmac.compare_digest(sent, user.csrf):
                raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token header or csrf form field)")
        return user

    return dependency
