"""Swagger UI at /docs and ReDoc at /redoc, served without a CDN.

FastAPI's own pages load their JavaScript and CSS from a CDN, so they are blank on a machine
without internet access. The `fastapi-offline` package ships the same bundles (Swagger UI 5,
ReDoc 2) and a favicon; they are served here from that package under `/docs/assets`, and the
pages are FastAPI's, pointed at those local URLs.

The pages carry a Content-Security-Policy that allows this origin only (plus the hash of the
page's own inline script), so a browser fetches nothing from elsewhere: ReDoc's sidebar credit
asks for a logo from its CDN, which the policy blocks, and ReDoc then leaves the logo out.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _csp(html: str) -> str:
    """Only this origin; inline scripts by their hash; styles inline too (both UIs set them)."""
    scripts = ["'self'"] + [
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html)
    ]
    return (
        f"default-src 'self'; script-src {' '.join(scripts)}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    html = bytes(response.body).decode()
    response.headers["Content-Security-Policy"] = _csp(html)
    response.headers["X-Frame-Options"] = "DENY"
    return response


def install_docs(app: FastAPI) -> None:
    """Add /docs, its OAuth2 redirect page, /redoc and their assets to an app created with
    `docs_url=None, redoc_url=None`."""
    assert app.openapi_url is not None and app.swagger_ui_oauth2_redirect_url is not None
    openapi_url = app.openapi_url
    redirect_url = app.swagger_ui_oauth2_redirect_url
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return _page(
            get_swagger_ui_html(
                openapi_url=base + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{base}{ASSETS_URL}/{SWAGGER_JS}",
                swagger_css_url=f"{base}{ASSETS_URL}/{SWAGGER_CSS}",
                swagger_favicon_url=f"{base}{ASSETS_URL}/{FAVICON}",
                oauth2_redirect_url=base + redirect_url,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return _page(
            get_redoc_html(
                openapi_url=base + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{base}{ASSETS_URL}/{REDOC_JS}",
                redoc_favicon_url=f"{base}{ASSETS_URL}/{FAVICON}",
                with_google_fonts=False,
            )
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
