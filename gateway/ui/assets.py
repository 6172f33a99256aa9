"""``GET /ui`` (the shell) and ``/ui/static/`` (its assets, by Litestar's static files router,
as the API docs' assets are: gateway/apidocs).

The shell carries a Content-Security-Policy that allows scripts, styles and requests only from
this origin and no form submission at all: a payload rendered by the page cannot load a
script, and the sign-in form cannot put the token in a URL.

They are pages, not API operations: like the OpenAPI pages, they are left out of the OpenAPI
document.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Final

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.static_files import create_static_files_router

__all__ = ["ui_handlers", "ui_shell"]

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


def _static_dir() -> Path:
    return Path(str(resources.files("gateway.ui") / "static"))


@functools.cache
def _shell() -> bytes:
    return (_static_dir() / "index.html").read_bytes()


@get(
    "/ui",
    tags=["dashboard"],
    summary="The dashboard (an HTML page; sign in with a bearer token)",
    media_type="text/html",
    include_in_schema=False,
)
async def ui_shell() -> Response[bytes]:
    return Response(_shell(), media_type="text/html", headers=_HEADERS)


def ui_handlers() -> list[HTTPRouteHandler | Router]:
    """The shell and a router of the assets, for one app (a router belongs to one app)."""
    assets: Router = create_static_files_router(
        path="/ui/static",
        directories=[_static_dir()],
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),  # revalidated by ETag
        name="ui-static",
    )
    return [ui_shell, assets]
