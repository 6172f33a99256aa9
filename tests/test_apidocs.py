"""The API docs work offline: every page the gateway serves under ``/schema`` loads only what
the gateway itself serves (gateway/apidocs), and every asset a page names is there.

The pages are taken from the app's own routes, not from a list kept here, so a page added
later is checked the day it is added.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from gateway.apidocs import DOCS_PATH, STATIC_PATH, static_dir
from tests.asgi import ApiClient, serve_in_process
from tests.test_openapi import make_app

BASE = "http://testserver"
#: Attributes whose URL a browser fetches (or follows) on its own.
URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action", "formaction"}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")


class _Links(HTMLParser):
    """Every URL a page makes the browser load: attributes, and ``url()``/``@import`` of
    inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if value and name in URL_ATTRIBUTES:
                self.urls.extend(u.split()[0] for u in value.split(",") if u.strip())
            if value and name == "style":
                self.urls.extend(a or b for a, b in CSS_URL.findall(value))

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls.extend(a or b for a, b in CSS_URL.findall(data))


def links_of(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def foreign(url: str, page: str) -> bool:
    """Whether ``url`` (as written in ``page``) points at another host than the gateway."""
    resolved = urlsplit(urljoin(page, url))
    if resolved.scheme in ("data", "blob", "about", "javascript"):
        return False
    return resolved.scheme not in ("http", "https") or resolved.netloc != urlsplit(BASE).netloc


def doc_pages(app: Litestar) -> list[str]:
    """Every HTML page the app serves under the docs path (paths without parameters)."""
    pages = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "{" in route.path:
            continue
        if route.path != DOCS_PATH and not route.path.startswith(DOCS_PATH + "/"):
            continue
        for handler in route.route_handlers:
            media = str(getattr(handler.media_type, "value", handler.media_type))
            if "GET" in handler.http_methods and media.startswith("text/html"):
                pages.append(route.path)
    return sorted(set(pages))


@pytest.fixture
def app(tmp_path: Path) -> Litestar:
    return make_app(tmp_path)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[ApiClient]:
    async with serve_in_process(app) as c:
        yield c


async def test_every_docs_page_loads_only_what_the_gateway_serves(
    app: Litestar, client: ApiClient
) -> None:
    pages = doc_pages(app)
    assert {DOCS_PATH, f"{DOCS_PATH}/swagger"} <= set(pages), pages
    fetched: set[str] = set()
    for page in pages:
        r = await client.get(page)
        assert r.status_code == 200, f"{page}: {r.status_code}"
        assert r.headers["content-type"].startswith("text/html"), page
        urls = links_of(r.text)
        outside = [u for u in urls if foreign(u, BASE + page)]
        assert not outside, f"{page} loads from another host: {outside}"
        for url in urls:
            target = urljoin(BASE + page, url)
            if target in fetched or urlsplit(target).scheme == "data":
                continue
            fetched.add(target)
            asset = await client.get(target)
            assert asset.status_code == 200, f"{page} → {url}: {asset.status_code}"
            assert asset.content, f"{page} → {url}: empty"
    scripts = {urlsplit(u).path for u in fetched}  # the UIs' own pages name their bundles
    assert f"{STATIC_PATH}/swagger-ui/swagger-ui-bundle.js" in scripts
    assert f"{STATIC_PATH}/swagger-ui/swagger-ui.css" in scripts


async def test_the_assets_have_their_types_and_licences(client: ApiClient) -> None:
    expected = {
        "swagger-ui/swagger-ui-bundle.js": "javascript",
        "swagger-ui/swagger-ui.css": "text/css",
        "swagger-ui/favicon-32x32.png": "image/png",
    }
    for name, media in expected.items():
        r = await client.get(f"{STATIC_PATH}/{name}")
        assert r.status_code == 200, name
        assert media in r.headers["content-type"], (name, r.headers["content-type"])
        assert r.content == (static_dir() / name).read_bytes()
    licence = await client.get(f"{STATIC_PATH}/swagger-ui/LICENSE")
    assert licence.status_code == 200 and "Apache License" in licence.text
    assert (await client.get(f"{STATIC_PATH}/nothing-here.js")).status_code == 404
    assert (await client.get(f"{STATIC_PATH}/../__init__.py")).status_code == 404


async def test_the_docs_pages_embed_the_document_and_take_the_bearer_token(
    client: ApiClient,
) -> None:
    document = (await client.get(f"{DOCS_PATH}/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    swagger = (await client.get(f"{DOCS_PATH}/swagger")).text
    assert "SwaggerUIBundle(" in swagger and '"securitySchemes"' in swagger
    assert (await client.get(DOCS_PATH)).text == swagger  # the root page is Swagger UI
    yaml = await client.get(f"{DOCS_PATH}/openapi.yaml")
    assert yaml.status_code == 200 and "securitySchemes" in yaml.text


def test_every_vendored_file_is_in_the_package_with_its_source_named() -> None:
    root = static_dir()
    notes = (root / "VENDORED.md").read_text()
    for vendored in ("swagger-ui",):
        assert (root / vendored / "LICENSE").is_file(), vendored
        for asset in (root / vendored).iterdir():
            if asset.suffix in (".js", ".css"):
                assert asset.name in notes, f"{asset.name}: not in VENDORED.md"
