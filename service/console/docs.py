"""``/docs`` (Swagger UI) and ``/redoc`` built from files pinned in the fastapi-offline wheel, never a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet ``/docs``
is blank. The app turns them off (``docs_url=None, redoc_url=None``) and this router serves the same
pages (FastAPI's HTML builders) with the scripts from ``fastapi_offline/static`` (Swagger UI 5,
ReDoc 2; MIT; pinned as ``fastapi-offline==1.7.7``). A Content-Security-Policy keeps every request on
this origin, enforced by the browser: ReDoc's menu shows a logo from cdn.redoc.ly that no option turns
off; the policy stops that request and ReDoc hides the image that failed.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from service.errors import ErrorCode, ServiceError

ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSET_PREFIX = "/docs-assets/"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# 'unsafe-inline': FastAPI's page starts Swagger UI from an inline script, and both UIs set inline styles;
# blob: workers: ReDoc's search index.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def _asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}{ASSET_PREFIX}{name}"


def _secured(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


@router.get("/docs")
def read_swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json."""
    app = request.app
    return _secured(
        get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=_asset(request, "swagger-ui.css"),
            swagger_favicon_url=_asset(request, "favicon.png"),
            oauth2_redirect_url=None,  # no OAuth flows: bearer keys only
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
    )


@router.get("/redoc")
def read_redoc(request: Request) -> HTMLResponse:
    """ReDoc over /openapi.json (system fonts: no Google Fonts)."""
    app = request.app
    return _secured(
        get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=_asset(request, "redoc.standalone.js"),
            redoc_favicon_url=_asset(request, "favicon.png"),
            with_google_fonts=False,
        )
    )


@router.get(ASSET_PREFIX + "{name}")
def read_docs_asset(name: str) -> FileResponse:
    """One of the four pinned docs files, by name (nothing else is reachable)."""
    if name not in ASSETS:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no docs asset {name[:100]!r}")
    return FileResponse(ASSET_DIR / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
