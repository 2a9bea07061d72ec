"""Local user accounts and their browser sessions.

Passwords are stored as argon2id hashes (argon2-cffi's defaults, the OWASP recommendation), never as
text; a session is a random token in an HttpOnly cookie whose SHA-256 is what the database keeps, so a
copy of the database opens no session. Every session has its own CSRF token for form posts. Logging in,
out and failing to are audited (integration.cases.audit) like every other change.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from acquisition.timestamps import stored_utc
from integration.cases import audit, utcnow

ROLES = ("viewer", "technologist", "pathologist", "admin", "integrator")
SESSION_LIFETIME = timedelta(hours=12)
_HASHER = PasswordHasher()
#: Verified against when the login is unknown, so both answers take the same time.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


class UserRow(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(max_length=100, unique=True)
    #: The name in DICOM PN form (Family^Given), as it goes into a signed SR and the ORU.
    name: str = Field(default="", max_length=200)
    organization: str = Field(default="", max_length=200)
    role: str = Field(max_length=20)
    password_hash: str = Field(max_length=200)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class UserSession(SQLModel, table=True):
    __tablename__ = "user_sessions"

    id: str = Field(primary_key=True, max_length=64)  # SHA-256 of the cookie's token, hex
    user_id: int = Field(foreign_key="users.id", index=True)
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Account:
    """A user as the rest of the system sees one: no hash."""

    login: str
    name: str
    organization: str
    role: str

    @property
    def display_name(self) -> str:
        family, _, given = self.name.partition("^")
        return " ".join(p for p in (given, family) if p) or self.login


class UserError(ValueError):
    pass


def _account(row: UserRow) -> Account:
    return Account(row.login, row.name, row.organization, row.role)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """Accounts and sessions in the index database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, login: str, password: str, role: str, *, name: str = "", organization: str = "",
            actor: str = "cli") -> Account:  # fmt: skip
        if role not in ROLES:
            raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not login or not login.replace(".", "").replace("-", "").replace("_", "").isalnum():
            raise UserError("a login is letters, digits, '.', '-' and '_'")
        if len(password) < 8:
            raise UserError("a password has at least 8 characters")
        with Session(self.engine) as session, session.begin():
            if session.exec(select(UserRow).where(UserRow.login == login)).first() is not None:
                raise UserError(f"user {login!r} exists")
            row = UserRow(login=login, name=name or login, organization=organization, role=role,
                          password_hash=_HASHER.hash(password))  # fmt: skip
            session.add(row)
            audit(session, actor, "user.added", "user", login, role=role)
            return _account(row)

    def set_password(self, login: str, password: str, *, actor: str = "cli") -> None:
        if len(password) < 8:
            raise UserError("a password has at least 8 characters")
        with Session(self.engine) as session, session.begin():
            row = session.exec(select(UserRow).where(UserRow.login == login)).first()
            if row is None:
                raise UserError(f"no user {login!r}")
            row.password_hash = _HASHER.hash(password)
            session.add(row)
            audit(session, actor, "user.password_set", "user", login)

    def list(self) -> list[Account]:
        with Session(self.engine) as session:
            return [_account(r) for r in session.exec(select(UserRow).order_by(col(UserRow.login))).all()]

    def get(self, login: str) -> Account | None:
        with Session(self.engine) as session:
            row = session.exec(select(UserRow).where(UserRow.login == login, UserRow.active == True)).first()  # noqa: E712
            return _account(row) if row is not None else None

    def login(self, login: str, password: str, *, source: str = "") -> tuple[Account, str, str] | None:
        """(account, session token, CSRF token) for a right password; None otherwise (audited either way)."""
        with Session(self.engine) as session, session.begin():
            row = session.exec(select(UserRow).where(UserRow.login == login, UserRow.active == True)).first()  # noqa: E712
            try:
                _HASHER.verify(row.password_hash if row is not None else _DUMMY_HASH, password)
                ok = row is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                ok = False
            if not ok or row is None:
                audit(session, f"user:{login}"[:200], "user.login_failed", "user", login, source=source)
                return None
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
            session.add(UserSession(id=_digest(token), user_id=row.id, csrf=csrf,  # type: ignore[arg-type]
                                    expires_at=utcnow() + SESSION_LIFETIME))  # fmt: skip
            audit(session, f"user:{login}", "user.login", "user", login, source=source)
            return _account(row), token, csrf

    def session(self, token: str) -> tuple[Account, str] | None:
        """(account, CSRF token) of a live session."""
        if not token:
            return None
        with Session(self.engine) as session:
            found = session.get(UserSession, _digest(token))
            if found is None or found.ended_at is not None or stored_utc(found.expires_at) < utcnow():
                return None
            row = session.get(UserRow, found.user_id)
            if row is None or not row.active:
                return None
            return _account(row), found.csrf

    def logout(self, token: str) -> None:
        with Session(self.engine) as session, session.begin():
            found = session.get(UserSession, _digest(token))
            if found is not None and found.ended_at is None:
                found.ended_at = utcnow()
                session.add(found)
                row = session.get(UserRow, found.user_id)
                login = row.login if row is not None else "?"
                audit(session, f"user:{login}", "user.logout", "user", login)
