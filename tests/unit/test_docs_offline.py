"""/docs (Swagger UI) and /redoc work offline: their pages reference this origin only, every
asset they reference is served from the installed package, and in a real browser with every
request to another host refused, both render the API's operations."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import uvicorn
from playwright.sync_api import Route, sync_playwright

from api.app import create_app
from core.settings import Settings
from core.topology import Topology
from tests.e2e.test_temporal_ui_codec import chromium
from tests.helpers import http_client

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


def references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCE.findall(html)]


@pytest.fixture
async def client(settings: Settings, topology: Topology) -> Iterator[httpx.AsyncClient]:
    async with http_client(create_app(settings, topology)) as c:
        yield c


async def test_pages_reference_only_local_assets_that_are_served(
    client: httpx.AsyncClient,
) -> None:
    seen: set[str] = set()
    for page in PAGES:
        response = await client.get(page)
        assert response.status_code == 200, page
        assert response.headers["content-type"].startswith("text/html")
        assert "cdn" not in response.text.lower() and "fonts.googleapis" not in response.text
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "http" not in csp, csp
        for ref in references(response.text):
            assert not urlsplit(ref).netloc, f"{page} references {ref}"
            seen.add(urljoin(page, ref))
    # Swagger's bundle and stylesheet, ReDoc's bundle, the favicon and the spec, all local.
    assert len({u for u in seen if u.startswith("/docs/assets/")}) == 4, seen
    assert "/openapi.json" in seen
    for url in sorted(seen):
        response = await client.get(url)
        assert response.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert response.headers["content-type"].startswith(CONTENT_TYPES[suffix]), url
        assert len(response.content) > 1000, url  # a real bundle, not an error page


async def test_swagger_inline_script_is_allowed_by_its_hash(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    csp = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]{44}'", csp), csp


@pytest.fixture
def served(settings: Settings, topology: Topology) -> Iterator[str]:
    """The app under uvicorn on a loopback port, in a thread of its own."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, topology), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the API did not start")
            threading.Event().wait(0.01)
        # The app builds its OpenAPI document once, on the first request, and keeps it.
        httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=120).raise_for_status()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def test_docs_render_in_a_browser_with_the_outside_network_blocked(served: str) -> None:
    origin = urlsplit(served).netloc
    outside: list[str] = []
    problems: list[str] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).netloc == origin:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda msg: problems.append(msg.text) if msg.type == "error" else None,
            )
            page.goto(f"{served}/docs")
            # Swagger UI lists the operations, with their paths, from /openapi.json.
            page.locator(".opblock-summary-path", has_text="/api/health/ready").first.wait_for()
            assert page.locator(".opblock").count() > 50
            page.goto(f"{served}/redoc")
            # ReDoc renders each operation as a section with the operation's summary.
            page.locator("h2", has_text="Readiness: the database").first.wait_for()
            assert page.locator("[data-section-id^='operation/']").count() > 50
        finally:
            browser.close()
    assert outside == []
    # ReDoc's sidebar credit ("API docs by Redocly") tries a logo from its CDN, which the CSP
    # blocks; ReDoc then leaves the logo out. Nothing else may fail.
    assert [p for p in problems if REDOC_LOGO not in p] == [], problems
