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

    # ---- the pipeline -------------------------------------------------------------------------------
    def jobs(self, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        """Import and analysis jobs, newest first, with their state, attempts and reason."""

    def slides(self, *, limit: int) -> list[dict[str, Any]]:
        """Ordered slides and their pipeline stage."""

    def retry_job(self, job_id: int, *, actor: str) -> dict[str, Any]: ...

    def cancel_job(self, job_id: int, *, actor: str) -> dict[str, Any]: ...

    def pipeline_status(self) -> PipelineStatus:
        """Counts for /metrics, read when scraped (every process sees the same database)."""

    def readiness(self) -> dict[str, str]:
        """Checks beyond the index and blob store that /readyz adds ("ok" or "error: …"): the broker."""


@dataclass(frozen=True)
class PipelineStatus:
    """jobs: (step, state) → count; durations: step → (finished jobs, seconds in all); queued messages in
    the broker (None without one, or when it does not answer)."""

    jobs: dict[tuple[str, str], int]
    durations: dict[str, tuple[int, float]]
    broker_messages: int | None = None
