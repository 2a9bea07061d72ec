"""Logging in and out: the login page, the session cookie, and the same as JSON for scripts and pages.

The cookie is HttpOnly (scripts cannot read it), SameSite=Lax (sent when a LIS user follows a link to a
case, not with another site's form posts) and Secure when the request came over HTTPS. The CSRF token
goes to the page, which sends it back with every change.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from api.auth import SESSION_COOKIE, TokenAuth, User, require_roles
from api.notice import RESEARCH_NOTICE
from api.review import ReviewService
from api.routers.review import service

router = APIRouter(tags=["auth"])

SESSION_SECONDS = 12 * 3600


def _safe_next(target: str) -> str:
    """Only paths of this server: an open redirect would send people to a look-alike login page."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/review"


def _set_cookie(request: Request, response: Response, token: str) -> None:
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"
    response.set_cookie(
        SESSION_COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="lax", secure=secure, path="/"
    )


def login_page(message: str = "", next_path: str = "/review", status: int = 200) -> HTMLResponse:
    notice = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>marrowlink — log in</title>
<link rel="stylesheet" href="/static/review.css"></head><body class="login">
<p class="banner" role="alert">{html.escape(RESEARCH_NOTICE)}</p>
<main><h1>marrowlink</h1>{notice}
<form method="post" action="/login">
<label>Login <input name="login" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{html.escape(next_path)}">
<button type="submit">Log in</button></form></main></body></html>"""
    return HTMLResponse(body, status)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def get_login(next: str = "/review") -> HTMLResponse:
    return login_page(next_path=_safe_next(next))


@router.post("/login", include_in_schema=False)
def post_login(
    request: Request,
    login: str = Form(...),
    password: str = Form(...),
    next: str = Form("/review"),
    review: ReviewService = Depends(service),  # noqa: B008
) -> Response:
    found = review.login(login, password, source=request.client.host if request.client else "")
    if found is None:
        return login_page("Wrong login or password.", _safe_next(next), 401)
    _, token, _ = found
    response = RedirectResponse(_safe_next(next), status_code=303)
    _set_cookie(request, response, token)
    return response


@router.post("/logout", include_in_schema=False)
def post_logout(request: Request, user: User = Depends(require_roles())) -> Response:  # noqa: B008
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        review: ReviewService = service(request)
        review.logout(token)
        auth: TokenAuth = request.app.state.auth
        auth.forget_session(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


class Credentials(BaseModel):
    login: str
    password: str


class SessionInfo(BaseModel):
    user: str
    role: str
    name: str
    csrf: str


@router.post("/api/session", response_model=SessionInfo)
def api_login(
    request: Request,
    body: Credentials,
    review: ReviewService = Depends(service),  # noqa: B008
) -> Response:
    """Log in from a script or page: sets the session cookie and answers with the CSRF token to send back."""
    found = review.login(body.login, body.password, source=request.client.host if request.client else "")
    if found is None:
        raise HTTPException(401, "wrong login or password")
    person, token, csrf = found
    info = SessionInfo(user=person.login, role=person.role, name=person.name, csrf=csrf)
    response = Response(info.model_dump_json(), media_type="application/json")
    _set_cookie(request, response, token)
    return response
