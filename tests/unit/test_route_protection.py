"""Every route is authenticated and authorised, except a short, explicit public list."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from api.auth import codec_principal, current_principal
from core.settings import Settings
from core.topology import Topology

# Routes anyone may call: health probes, and the ways to obtain or end credentials.
PUBLIC = {
    "/api/health",
    "/api/health/ready",
    "/auth/login",
    "/auth/refresh",
    "/auth/logout",
    "/api/temporal/codec/sign-in",  # an HTML page; signing in happens through /auth/login
    "/webhooks/{host_kind}",  # Git hosts prove themselves with a signature or token instead
    "/integrations/slack/interactions",  # Slack signs its requests (SLACK_SIGNING_SECRET)
}
PUBLIC_PREFIXES = ("/auth/sso/",)  # the SSO redirect flow happens before there is a token


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, looking inside included routers (FastAPI keeps them nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


AUTHENTICATORS = (current_principal, codec_principal)  # codec: also the UI's session cookie


def authenticates(dependant: Dependant) -> bool:
    return any(d.call in AUTHENTICATORS or authenticates(d) for d in dependant.dependencies)


def test_every_route_requires_a_principal(settings: Settings, topology: Topology) -> None:
    routes = list(api_routes(create_app(settings, topology).routes))
    assert routes
    unprotected = sorted(
        f"{sorted(r.methods)} {r.path}"
        for r in routes
        if r.path not in PUBLIC
        and not r.path.startswith(PUBLIC_PREFIXES)
        and not authenticates(r.dependant)
    )
    assert unprotected == []
    public = {r.path for r in routes if r.path in PUBLIC}
    assert public == PUBLIC  # no stale entry in the public list
    assert not any(authenticates(r.dependant) for r in routes if r.path in PUBLIC)
