"""The API docs the gateway serves itself, offline: Swagger UI from vendored assets.

Litestar's render plugins load their scripts, styles, fonts and favicon from CDNs by default:
without internet the pages stay blank. Here every asset comes from this package
(``static/``, copied unchanged from the npm registry with its licence; ``static/VENDORED.md``
says which versions and how to update them), served under ``/schema/static/`` by the same
router as the pages:

* ``/schema`` and ``/schema/swagger``: Swagger UI (its "Authorize" button takes the bearer
  token; "Try it out" calls this gateway);
* ``/schema/openapi.json``, ``/schema/openapi.yaml``: the document itself.

No ReDoc: its page loads the Redocly logo from cdn.redoc.ly whatever its options say (seen in
Chromium with every other host blocked), and two UIs of one document add nothing.

:func:`openapi_config` is the whole ``openapi_config=`` of the app; the document it starts is
finished by :func:`gateway.openapi_errors.complete_document`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.static_files import create_static_files_router

import codeq
from gateway.openapi_errors import security_components

__all__ = ["DOCS_PATH", "STATIC_PATH", "openapi_config", "render_plugins", "static_dir"]

#: Where the pages are served.
DOCS_PATH = "/schema"
#: Where their assets are served (under :data:`DOCS_PATH`).
STATIC_PATH = f"{DOCS_PATH}/static"

_DESCRIPTION = (
    "Task queue and signed-webhook gateway. Errors are "
    '`{"error": "<message>", "code": "<machine code>"}`. Every route under '
    "`/v1/codeq/` takes `Authorization: Bearer <token>`."
)


def static_dir() -> Path:
    """The vendored assets (a real directory: the package is installed unzipped)."""
    return Path(str(resources.files("gateway.apidocs") / "static"))


def _favicon() -> str:
    return f"<link rel='icon' type='image/png' href='{STATIC_PATH}/swagger-ui/favicon-32x32.png'>"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The pages under :data:`DOCS_PATH`, each pointed at the assets served here. Swagger UI
    comes first, so it is also the page at :data:`DOCS_PATH` itself."""
    favicon = _favicon()
    return [
        SwaggerRenderPlugin(
            path="/swagger",
            js_url=f"{STATIC_PATH}/swagger-ui/swagger-ui-bundle.js",
            css_url=f"{STATIC_PATH}/swagger-ui/swagger-ui.css",
            standalone_preset_js_url=f"{STATIC_PATH}/swagger-ui/swagger-ui-standalone-preset.js",
            favicon=favicon,
        ),
        JsonRenderPlugin(path="/openapi.json"),
        YamlRenderPlugin(path=["/openapi.yaml", "/openapi.yml"]),
    ]


def _docs_router() -> Router:
    """The router the pages are registered on (Litestar adds them), holding the assets."""
    assets = create_static_files_router(
        path="/static",
        directories=[static_dir()],
        include_in_schema=False,
        # the file names carry no version: a day's cache, revalidated by ETag after
        cache_control=CacheControlHeader(max_age=86400, public=True),
        name="apidocs-static",
    )
    return Router(DOCS_PATH, route_handlers=[assets], include_in_schema=False)


def openapi_config() -> OpenAPIConfig:
    """``openapi_config=`` of the gateway app: the document's title, version, description
    and bearer scheme, with the self-hosted pages and their assets."""
    return OpenAPIConfig(
        title="codeQ",
        version=codeq.__version__,
        path=DOCS_PATH,
        description=_DESCRIPTION,
        components=security_components(),
        render_plugins=render_plugins(),
        openapi_router=_docs_router(),
    )
