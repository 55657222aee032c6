"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.docs_ui import install_docs
from api.errors import ERROR_RESPONSES, install_error_handlers
from api.middleware import CURRENT_VERSION, RequestContextMiddleware
from api.openapi_errors import document_errors
from api.ratelimit import RateLimitMiddleware
from api.routers import (
    api_keys,
    audit,
    auth,
    catalog,
    environments,
    git_connections,
    health,
    health_checks,
    infrastructure,
    kubernetes_contexts,
    notifications,
    organizations,
    pipeline_runs,
    pipeline_secrets,
    pipelines,
    promotions,
    provisioning,
    roles,
    services,
    slack,
    sso,
    teams,
    temporal_codec,
    users,
    webhooks,
)
from api.state import AppState
from api.strict_input import StrictInputMiddleware
from core import __version__
from core.db import transactions
from core.db.engine import transaction
from core.db.migrate import schema_status
from core.errors import ConfigError
from core.identity.bootstrap import ensure_first_admin
from core.local_secrets import with_local_secrets
from core.ratelimit import RateLimiter
from core.security.encryption import KeyRing, install_keyring
from core.settings import Settings, load_settings, refuse_wildcard_origins
from core.topology import Topology, load_topology

log = logging.getLogger("idp.api")

TAGS = [
    {"name": "system", "description": "Liveness and readiness of the platform."},
    {"name": "auth", "description": "Login, token refresh and logout; who am I."},
    {"name": "users", "description": "Users and their role grants."},
    {"name": "api-keys", "description": "API keys for service-to-service calls."},
    {"name": "audit", "description": "The append-only audit log."},
    {"name": "organizations", "description": "Organizations: the top of the ownership tree."},
    {"name": "teams", "description": "Teams of an organization and their members."},
    {"name": "roles", "description": "Built-in and custom roles and their permissions."},
    {"name": "temporal", "description": "Codec endpoints for the Temporal UI."},
    {
        "name": "notifications",
        "description": "Channels, templates, sending, delivery history and preferences.",
    },
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


async def bootstrap_admin(state: AppState) -> None:
    """On first start (no users), create the admin named by IDP_ADMIN_EMAIL/PASSWORD."""
    settings = state.settings
    if not (settings.admin_email and settings.admin_password):
        return
    async with state.engine.connect() as conn:
        if (await schema_status(conn)).problem:
            log.warning("not creating the first admin: the database is not migrated")
            return
    async with transaction(state.sessions) as session:
        created = await ensure_first_admin(
            session, settings.admin_email, settings.admin_password.get_secret_value()
        )
    if created:
        log.info("created the first admin %s", settings.admin_email)


def cors_origins(settings: Settings) -> list[str]:
    """CORS_ORIGINS, or the embedded Temporal UI's; a wildcard stops the start (credentials
    are allowed), even when the settings were built without validation."""
    try:
        return refuse_wildcard_origins(settings.effective_cors_origins)
    except ValueError as exc:
        raise ConfigError(f"invalid setting CORS_ORIGINS: {exc}") from None


def create_app(settings: Settings | None = None, topology: Topology | None = None) -> FastAPI:
    settings = with_local_secrets(settings or load_settings())
    origins = cors_origins(settings)  # before anything is installed: a wildcard stops here
    install_keyring(KeyRing.from_settings(settings))  # for encrypted columns
    transactions.configure(settings.effective_transaction_guard)
    rate_limiter = RateLimiter.from_settings(settings)
    topology = topology or load_topology(settings.temporal_config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.create(settings, topology)
        app.state.idp = state
        await bootstrap_admin(state)
        try:
            yield
        finally:
            await state.close()
            await rate_limiter.close()

    app = FastAPI(
        title="Internal Developer Platform",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # install_docs: served from a package, not a CDN
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    app.state.rate_limiter = rate_limiter
    app.add_middleware(StrictInputMiddleware)  # innermost: after the rate limit, with a request id
    app.add_middleware(  # inside RequestContextMiddleware: a 429 carries the request id
        RateLimitMiddleware, limiter=rate_limiter, jwt_secret=settings.jwt_secret
    )
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(  # outermost: answers browsers' preflight requests itself
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-Namespace",
            "X-API-Key",
            "X-API-Version",
            "X-Request-ID",
            "Authorization-Extras",  # sent by the Temporal UI to codec endpoints
        ],
        allow_credentials=True,
        expose_headers=[
            "X-Request-ID",
            "X-API-Version",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ],
    )
    for router in (
        health.router,
        auth.router,
        sso.router,
        users.router,
        api_keys.router,
        audit.router,
        temporal_codec.router,
        organizations.router,
        git_connections.router,
        teams.router,
        roles.router,
        notifications.router,
        services.router,
        catalog.router,
        environments.router,
        kubernetes_contexts.router,
        promotions.router,
        infrastructure.router,
        provisioning.router,
        pipeline_runs.router,  # before pipelines: /pipelines/runs is not a pipeline id
        pipeline_secrets.router,
        pipelines.router,
        health_checks.router,
        webhooks.router,
        slack.router,
    ):
        app.include_router(router)
    document_errors(app)
    return app
