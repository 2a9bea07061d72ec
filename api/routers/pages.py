"""The review pages: the worklist and the case page (differential, gallery, sign-off).

The HTML is a thin shell; the scripts in api/static read and change everything through the same REST
API that integrators use, with the person's session and its CSRF token. Nothing is fetched from the
internet: the scripts, the styles and the viewer are served by this app.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from acquisition import CELL_CLASSES
from api.auth import SESSION_COOKIE, TokenAuth, User
from api.notice import RESEARCH_NOTICE
from dicom_store.dicomweb import Denied

router = APIRouter(include_in_schema=False)

#: One key per class, as CellaVision users work: the critical forms on the digits first.
CLASS_KEYS = "1234567890qwertyuiopasd"
CLASSES = [
    {"code": c.code, "name": c.name, "critical": c.critical, "key": key}
    for c, key in zip(CELL_CLASSES, CLASS_KEYS, strict=True)
]


def _person(request: Request) -> User | None:
    auth: TokenAuth = request.app.state.auth
    try:
        return auth.user(None, request.cookies.get(SESSION_COOKIE))
    except Denied:
        return None


#: The slide viewer's published bundles (scripts/viewer-assets.sh puts them there; absent: no viewer).
VIEWER = Path(__file__).resolve().parent.parent / "static" / "viewer"
#: viewer-config.js first: dicom-microscopy-viewer finds its decoder worker and codecs under PUBLIC_LIB_URL.
VIEWER_SCRIPTS = ("viewer-config.js", "dist/dicomweb-client.js", "dist/dicomMicroscopyViewer.bundle.min.js")


def _page(title: str, user: User, body: str, script: str, data: dict[str, object]) -> HTMLResponse:
    name = user.person.name.replace("^", " ") if user.person else user.name
    role = next(iter(user.roles), "")
    return HTMLResponse(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} — marrowlink</title><link rel="stylesheet" href="/static/review.css"></head>
<body><p class="banner" role="alert">{html.escape(RESEARCH_NOTICE)}</p>
<header class="bar"><h1><a href="/review">marrowlink</a></h1><span>{html.escape(title)}</span>
<span class="spacer"></span><span>{html.escape(name)} ({html.escape(role)})</span>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{html.escape(user.csrf)}">
<button class="secondary" type="submit">Log out</button></form></header>
<main>{body}</main>
<script id="page-data" type="application/json">{_script_json({**data, "csrf": user.csrf, "role": role})}</script>
<script src="/static/review.js"></script><script src="/static/{script}"></script></body></html>"""
    )


def _script_json(data: dict[str, object]) -> str:
    """JSON inside a <script> element: raw text, so it is not HTML-escaped; "</" would end the element."""
    return json.dumps(data).replace("</", "<\\/")


def _login_redirect(request: Request) -> Response:
    target = request.url.path
    return RedirectResponse(f"/login?next={target}", status_code=303)


@router.get("/review", response_class=HTMLResponse)
def worklist_page(request: Request) -> Response:
    user = _person(request)
    if user is None:
        return _login_redirect(request)
    body = """<h2>Worklist</h2><p>Cases with critical cells first, then the oldest. Arrow keys move, Enter opens.</p>
<label>State <select id="state"><option value="">open and closed</option><option>preliminary</option>
<option>in_review</option><option>correcting</option><option>final</option><option>corrected</option></select></label>
<table id="worklist"><thead><tr><th>Accession</th><th>Patient</th><th>State</th><th>Critical cells</th>
<th>Ordered</th></tr></thead><tbody></tbody></table>
<h2>Pipeline</h2><div id="messages" aria-live="polite"></div>
<p>Scans and analyses that wait, run or failed; a failed one can be run again.</p>
<table id="jobs"><thead><tr><th>Job</th><th>Step</th><th>Slide</th><th>State</th><th>Tries</th><th>Why</th>
<th></th></tr></thead><tbody></tbody></table>"""
    return _page("Worklist", user, body, "worklist.js", {})


@router.get("/review/cases/{accession}", response_class=HTMLResponse)
def case_page(accession: str, request: Request) -> Response:
    user = _person(request)
    if user is None:
        return _login_redirect(request)
    if request.app.state.review is None:
        raise HTTPException(503, "the review service is not configured on this server")
    body = """<div id="messages" aria-live="polite"></div>
<div class="layout"><aside class="panel">
<h2 id="case-title"></h2><p id="case-patient"></p><p>State: <span class="state" id="case-state"></span></p>
<div id="changes" class="changes"></div>
<p><button id="sign" disabled>Sign (pathologist)</button>
<button id="reopen" class="secondary" hidden>Reopen for a correction</button></p>
<table id="differential"><thead><tr><th>Class</th><th class="num">Count</th><th class="num">%</th></tr></thead>
<tbody></tbody><tfoot></tfoot></table>
<div id="detail" class="detail" aria-live="polite"></div>
<h3>Keys</h3><div class="keys" id="keys"></div><p class="keys">Arrows: move · Delete: not a cell</p>
</aside><section><div id="viewer" hidden></div><div class="gallery" id="gallery"></div></section></div>"""
    viewer = [f"/static/viewer/{name}" for name in VIEWER_SCRIPTS if (VIEWER / name).exists()]
    # The gallery comes first; the page loads the viewer's 2.6 MB after the first crops are up.
    scripts = [*viewer, "/static/slide-viewer.js"] if len(viewer) == len(VIEWER_SCRIPTS) else []
    data = {"accession": accession, "classes": CLASSES, "viewer_scripts": scripts}
    return _page(f"Case {accession}", user, body, "case.js", data)
