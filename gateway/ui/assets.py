"""``GET /ui`` (the shell) and ``GET /ui/static/{name}`` (its assets).

The assets are a fixed set of files of this package, looked up by exact name (no path is
ever joined from the request). Every answer carries a Content-Security-Policy that allows
scripts, styles and requests only from this origin and no form submission at all: a payload
rendered by the page cannot load a script, and the sign-in form cannot put the token in a URL.

They are pages, not API operations: like the OpenAPI pages, they are left out of the OpenAPI
document.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

from litestar import Response, get
from litestar.params import FromPath

from codeq.errors import NotFound

__all__ = ["UI_HANDLERS", "ui_asset", "ui_shell"]

_MEDIA_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}
#: What the browser may load for these pages: only this origin, no inline script, no frames.
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """Name → (content, media type) of every file in ``static/``, read once on first use."""
    folder = resources.files("gateway.ui") / "static"
    out = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if item.is_file() and suffix in _MEDIA_TYPES:
            out[item.name] = (item.read_bytes(), _MEDIA_TYPES[suffix])
    return out


def _answer(name: str) -> Response[bytes]:
    found = _assets().get(name)
    if found is None:
        raise NotFound(f"no dashboard file {name[:64]!r}")
    content, media_type = found
    return Response(content, media_type=media_type, headers=_HEADERS)


@get(
    "/ui",
    tags=["dashboard"],
    summary="The dashboard (an HTML page; sign in with a bearer token)",
    media_type="text/html",
    include_in_schema=False,
)
async def ui_shell() -> Response[bytes]:
    return _answer("index.html")


@get(
    "/ui/static/{name:str}",
    tags=["dashboard"],
    summary="A file of the dashboard (script, style sheet, icon)",
    media_type="text/plain",
    include_in_schema=False,
)
async def ui_asset(name: FromPath[str]) -> Response[bytes]:
    return _answer(name)


UI_HANDLERS: Final = (ui_shell, ui_asset)
