"""The web console: static HTML/CSS/ES modules served at ``/`` and ``/console/...``; no build step.

The files are public (the API-key middleware lets ``/`` and ``/console/`` through); every API call the
console makes carries the key itself. Only files that ship in ``static/`` can be served: a request path
is looked up in the set listed at import, never joined onto the file system, so no traversal is possible.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import ErrorCode, ServiceError

STATIC = Path(__file__).parent / "static"
PREFIX = "/console/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The console loads nothing from anywhere else; the browser enforces it too (and reports a violation).
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
# Revalidate every time (ETag / Last-Modified make that cheap), so an upgraded service serves its own files.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
ASSETS: dict[str, Path] = {
    p.relative_to(STATIC).as_posix(): p
    for p in sorted(STATIC.rglob("*"))
    if p.is_file() and p.suffix in MEDIA_TYPES and p.name != "index.html"
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def read_console() -> FileResponse:
    """The console's single page (hash routing: every page lives behind ``/#/...``)."""
    return FileResponse(
        STATIC / "index.html",
        media_type=MEDIA_TYPES[".html"],
        headers={**HEADERS, "Content-Security-Policy": CSP},
    )


@router.get(PREFIX + "{name:path}")
def read_console_asset(name: str) -> FileResponse:
    """One of the console's own files, by its name under ``static/``."""
    path = ASSETS.get(name)
    if path is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"the console has no file {name[:100]!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
