"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import ERROR_RESPONSES, install_error_handlers
from api.middleware import CURRENT_VERSION, RequestContextMiddleware
from api.routers import health
from api.state import AppState
from core import __version__
from core.local_secrets import with_local_secrets
from core.settings import Settings, load_settings
from core.topology import Topology, load_topology

TAGS = [
    {"name": "system", "description": "Liveness and readiness of the platform."},
]

DESCRIPTION = f"""
Internal Developer Platform API. Long-running work runs as Temporal workflows; this API
starts them and reads their state.

* **Versioning**: send `X-API-Version: {CURRENT_VERSION}` (absent means the current version);
  an unsupported version is a 400.
* **Errors** always have the shape
  `{{"error": {{"code", "message", "details", "request_id"}}}}`.
* **Request ids**: every response carries `X-Request-ID` (yours, if you sent a valid one).
* **Lists** are paginated with `limit` plus `cursor` (or `offset`), and return a `next` link.
"""


def create_app(settings: Settings | None = None, topology: Topology | None = None) -> FastAPI:
    settings = with_local_secrets(settings or load_settings())
    topology = topology or load_topology(settings.temporal_config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.create(settings, topology)
        app.state.idp = state
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="Internal Developer Platform",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    return app
