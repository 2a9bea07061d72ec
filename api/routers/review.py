"""The review REST API: worklist, case, cells and crops, reclassification, sign-off, corrections, audit, outbox.

Every route needs a user (a bearer token or a logged-in person); roles decide what they may do:
viewers and integrators read, technologists and pathologists change cells, only pathologists sign and
correct, integrators and admins read the outbox. Refusals are 4xx with `{"detail": "..."}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.auth import Role, User, require_roles
from api.review import Person, ReviewError, ReviewService

router = APIRouter(prefix="/api", tags=["review"])

READERS = (Role.VIEWER, Role.TECHNOLOGIST, Role.PATHOLOGIST, Role.ADMIN, Role.INTEGRATOR)
REVIEWERS = (Role.TECHNOLOGIST, Role.PATHOLOGIST)


def service(request: Request) -> ReviewService:
    review = getattr(request.app.state, "review", None)
    if review is None:
        raise HTTPException(503, "the review service is not configured on this server")
    return review


def actor(user: User) -> str:
    return f"user:{user.name}" if user.person is not None else f"token:{user.name}"


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except ReviewError as exc:
        raise HTTPException(exc.status, exc.detail) from exc


class Reclassification(BaseModel):
    cls: str = Field(alias="class", description="One of the 23 cell class codes, e.g. BLA.")


class NewCell(BaseModel):
    """A cell the AI missed, in an analysed region of the 40x level (region-local pixels)."""

    region: list[int] = Field(description="[column, row, width, height] of the analysed region.")
    polygon: list[list[float]] | None = Field(default=None, description="Outline, at least 3 [x, y] points.")
    point: list[float] | None = Field(default=None, description="Or the cell's centre [x, y]: a circle is drawn.")
    cls: str = Field(alias="class", description="Its class code.")


class Correction(BaseModel):
    reason: str = ""


@router.get("/cases")
def worklist(
    status: str | None = None,
    limit: int = Query(200, ge=1, le=1000),
    user: User = Depends(require_roles(*READERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> list[dict[str, Any]]:
    """Cases with critical cells first, then oldest first; each with its critical counts and state."""
    return _call(review.worklist, status=status, limit=limit)


@router.get("/cases/{accession}")
def case(
    accession: str,
    user: User = Depends(require_roles(*READERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    """Case, patient, slides, the differential as it stands, state and history (the view is audited)."""
    return _call(review.case, accession, actor=actor(user))


@router.get("/cases/{accession}/cells")
def cells(
    accession: str,
    cls: str | None = Query(None, alias="class", description="Only cells counted as this class (UNIDENTIFIED too)."),
    limit: int = Query(200, ge=1, le=2000),
    after: int = Query(0, ge=0, description="Cells with an id above this one (paging)."),
    user: User = Depends(require_roles(*READERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> list[dict[str, Any]]:
    return _call(review.cells, accession, cls=cls, limit=limit, after=after)


@router.get("/cases/{accession}/cells/at")
def cell_at(
    accession: str,
    x: float = Query(description="Slide X (mm), as the viewer reports a click on an outline."),
    y: float = Query(description="Slide Y (mm)."),
    user: User = Depends(require_roles(*READERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    """The cell whose outline holds this point of the slide (404 when none does)."""
    return _call(review.cell_at, accession, x_mm=x, y_mm=y)


@router.get("/cells/{cell_id}/image", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def cell_image(
    cell_id: int,
    size: int = Query(128, ge=32, le=512),
    user: User = Depends(require_roles(*READERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> Response:
    """The cell's crop cut from the stored 40x frames, `size` px square, PNG."""
    data = _call(review.cell_image, cell_id, size=size)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


@router.patch("/cells/{cell_id}")
def reclassify(
    cell_id: int,
    body: Reclassification,
    user: User = Depends(require_roles(*REVIEWERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    return _call(review.reclassify, cell_id, body.cls, actor=actor(user))


@router.delete("/cells/{cell_id}")
def delete_cell(
    cell_id: int,
    user: User = Depends(require_roles(*REVIEWERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    """A false cell: it no longer counts (the AI's detection stays on record)."""
    return _call(review.delete_cell, cell_id, actor=actor(user))


@router.post("/cases/{accession}/cells", status_code=201)
def add_cell(
    accession: str,
    body: NewCell,
    user: User = Depends(require_roles(*REVIEWERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    if (body.polygon is None) == (body.point is None):
        raise HTTPException(422, "give either polygon or point")
    return _call(review.add_cell, accession, body.model_dump(by_alias=True), actor=actor(user))


@router.post("/cases/{accession}/sign")
def sign(
    accession: str,
    user: User = Depends(require_roles(Role.PATHOLOGIST)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    """Sign-off: the final SR (or, after a correction, the corrected one) and the ORU F (or C)."""
    signer = user.person or Person(user.name, Role.PATHOLOGIST.value, user.name)
    return _call(review.sign, accession, signer, actor=actor(user))


@router.post("/cases/{accession}/corrections")
def correct(
    accession: str,
    body: Correction,
    user: User = Depends(require_roles(Role.PATHOLOGIST)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    """Reopen a signed case; its next sign-off supersedes the signed report."""
    return _call(review.reopen, accession, reason=body.reason, actor=actor(user))


@router.get("/cases/{accession}/audit")
def audit(
    accession: str,
    user: User = Depends(require_roles(Role.PATHOLOGIST, Role.TECHNOLOGIST, Role.ADMIN)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> list[dict[str, Any]]:
    """Who did what to the case and its cells, when (append-only)."""
    return _call(review.audit, accession)


@router.get("/outbox")
def outbox(
    limit: int = Query(100, ge=1, le=1000),
    user: User = Depends(require_roles(Role.INTEGRATOR, Role.ADMIN, Role.PATHOLOGIST)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> list[dict[str, Any]]:
    """HL7 results and their delivery state, newest first."""
    return _call(review.outbox, limit=limit)
