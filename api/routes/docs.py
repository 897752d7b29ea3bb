"""The API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), served with their
scripts from the gateway itself: they render on a box with no internet, and no third party's
code runs on the gateway's origin.

Swagger UI (Apache-2.0) and ReDoc (MIT) come built from the `fastapi-offline` distribution
(MIT), which packages them for exactly this; only its files are used, not its app factory,
whose pages start Swagger UI with an inline script that our Content-Security-Policy forbids.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from gateway.errors import NotFound

router = APIRouter(include_in_schema=False)

_OFFLINE = Path(fastapi_offline.__file__).resolve().parent / "static"
_OWN = Path(__file__).resolve().parents[1] / "static"
#: name -> (file, media type): only these are served.
ASSETS = {
    "swagger-ui.css": (_OFFLINE / "swagger-ui.css", "text/css"),
    "swagger-ui-bundle.js": (_OFFLINE / "swagger-ui-bundle.js", "text/javascript"),
    "redoc.standalone.js": (_OFFLINE / "redoc.standalone.js", "text/javascript"),
    "swagger-init.js": (_OWN / "swagger-init.js", "text/javascript"),
}
#: As /status's: only the gateway's own scripts, no inline script; the pages style themselves
#: inline and draw icons from data: URLs, and ReDoc runs its search in a worker made from a blob.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")
_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"}

_SWAGGER = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API (Swagger UI)</title>
<link rel="icon" href="/status/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/swagger-init.js"></script>
</body>
</html>
"""

_REDOC = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API (ReDoc)</title>
<link rel="icon" href="/status/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<redoc spec-url="{openapi}"></redoc>
<script src="/docs/static/redoc.standalone.js"></script>
</body>
</html>
"""


def _page(template: str, request: Request) -> HTMLResponse:
    app = request.app
    html = template.format(title=escape(app.title), openapi=escape(app.openapi_url or "/openapi.json"))
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json (try calls with a key: Authorize)."""
    return _page(_SWAGGER, request)


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over /openapi.json."""
    return _page(_REDOC, request)


@router.get("/docs/static/{name}")
async def asset(name: str) -> FileResponse:
    """A script or style of the documentation pages, from the installed packages."""
    found = ASSETS.get(name)
    if found is None:
        raise NotFound("documentation file", name)
    path, media = found
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})
