"""The pipeline in the REST API: jobs and slide stages for the review pages and operators.

Everyone who may read cases may read these; technologists, pathologists and admins may retry a failed
job or cancel one (a change, so a logged-in person sends the CSRF token, as for every change).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from api.auth import Role, User, require_roles
from api.review import ReviewService
from api.routers.review import READERS, _call, actor, service

router = APIRouter(prefix="/api", tags=["pipeline"])

OPERATORS = (Role.TECHNOLOGIST, Role.PATHOLOGIST, Role.ADMIN)


@router.get("/jobs")
def jobs(
    state: str | None = Query(None, description="waiting, queued, running, done, failed or cancelled"),
    limit: int = Query(100, ge=1, le=1000),
    user: User = Depends(require_roles(*READERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> list[dict[str, Any]]:
    """Import and analysis jobs, newest first: state, attempts, and why one waits or failed."""
    return _call(review.jobs, state=state, limit=limit)


@router.get("/slides")
def slides(
    limit: int = Query(100, ge=1, le=1000),
    user: User = Depends(require_roles(*READERS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> list[dict[str, Any]]:
    """Ordered slides and where each stands: ordered, scanned, imported, analysing, preliminary(_sent), …"""
    return _call(review.slides, limit=limit)


@router.post("/jobs/{job_id}/retry")
def retry(
    job_id: int,
    user: User = Depends(require_roles(*OPERATORS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    """Run a failed or cancelled job again from its first attempt (409 for a job in another state)."""
    return _call(review.retry_job, job_id, actor=actor(user))


@router.post("/jobs/{job_id}/cancel")
def cancel(
    job_id: int,
    user: User = Depends(require_roles(*OPERATORS)),  # noqa: B008
    review: ReviewService = Depends(service),  # noqa: B008
) -> dict[str, Any]:
    """Do not run the job (a running one's result is discarded); 409 for a job already done or cancelled."""
    return _call(review.cancel_job, job_id, actor=actor(user))
