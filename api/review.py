"""What the review pages and REST routes need from the workflow, as a protocol `integration` implements.

`create_app(store, config, review=...)` is handed an object with these methods, the way it is handed the
`Store`, so `api` never imports `integration`. Answers are plain JSON-ready dicts; a refusal is a
`ReviewError` carrying the HTTP status (404 unknown, 409 conflict, 422 invalid) and a sentence a person
can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class ReviewError(Exception):
    """A request the workflow refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Person:
    """A logged-in person: login, role, name in DICOM PN form (Family^Given), organization."""

    login: str
    role: str
    name: str = ""
    organization: str = ""


class ReviewService(Protocol):
    # ---- people ------------------------------------------------------------------------------------
    def login(self, login: str, password: str, *, source: str) -> tuple[Person, str, str] | None:
        """(person, session token, CSRF token) for a right password, else None."""

    def session(self, token: str) -> tuple[Person, str] | None:
        """(person, CSRF token) of a live session, else None."""

    def logout(self, token: str) -> None: ...

    # ---- reading ------------------------------------------------------------------------------------
    def worklist(self, *, status: str | None, limit: int) -> list[dict[str, Any]]: ...

    def case(self, accession: str, *, actor: str) -> dict[str, Any]: ...

    def cells(self, accession: str, *, cls: str | None, limit: int, after: int) -> list[dict[str, Any]]: ...

    def cell_at(self, accession: str, *, x_mm: float, y_mm: float) -> dict[str, Any]:
        """The cell under a point of the slide (slide coordinates, mm, as the viewer reports a click)."""

    def cell_image(self, cell_id: int, *, size: int) -> bytes:
        """The cell's crop from the stored 40x frames, PNG."""

    def audit(self, accession: str) -> list[dict[str, Any]]: ...

    def outbox(self, *, limit: int) -> list[dict[str, Any]]: ...

    # ---- changing -----------------------------------------------------------------------------------
    def reclassify(self, cell_id: int, cls: str, *, actor: str) -> dict[str, Any]: ...

    def delete_cell(self, cell_id: int, *, actor: str) -> dict[str, Any]: ...

    def add_cell(self, accession: str, body: dict[str, Any], *, actor: str) -> dict[str, Any]: ...

    def sign(self, accession: str, signer: Person, *, actor: str) -> dict[str, Any]: ...

    def reopen(self, accession: str, *, reason: str, actor: str) -> dict[str, Any]: ...
