"""Authentication and authorization dependencies. Every non-public route depends on
`require(permission)` (or on `CurrentPrincipal` plus an explicit `authorize` call once the
resource is loaded); tests/unit/test_route_protection.py fails for a route that does not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import DbSession, State
from api.ratelimit import known_keys
from core import context
from core.errors import Unauthorized
from core.identity.authn import authenticate
from core.security.authorization import GLOBAL, Principal, Resource, _AnyScope, authorize
from core.security.tokens import ACCESS, API_KEY_PREFIX, CODEC_SESSION, token_hash

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# The Temporal UI's browser session for the codec endpoints (api/routers/temporal_codec.py).
CODEC_SESSION_COOKIE = "idp_codec_session"


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized(
                "use Authorization: Bearer <token or API key>",
                code="invalid_token",
                headers=_CHALLENGE,
            )
        return value.strip()
    key = request.headers.get("x-api-key")
    if key and not key.startswith(API_KEY_PREFIX):
        raise Unauthorized(
            "X-API-Key carries API keys only", code="invalid_api_key", headers=_CHALLENGE
        )
    return key or None


# Declared so OpenAPI (and Swagger UI's Authorize button) shows both ways to authenticate;
# the header parsing above is what decides.
_bearer_scheme = HTTPBearer(auto_error=False, description="An access token or an API key")
_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


async def _authenticated(
    request: Request, state: State, session: DbSession, credential: str, typ: str = ACCESS
) -> Principal:
    assert state.settings.jwt_secret is not None  # filled by with_local_secrets or required
    try:
        principal = await authenticate(
            session, state.settings.jwt_secret.get_secret_value(), credential, typ
        )
    except Unauthorized as exc:
        exc.headers = exc.headers or _CHALLENGE
        raise
    # End authentication's transaction now: a route that only talks to Temporal then holds
    # none, and one that reads further begins its own (core/db/transactions.py).
    await session.commit()
    # Audit entries and Temporal headers written for this request now name the actor.
    context.update(
        actor_id=principal.user_id, actor_type=principal.kind, actor_label=principal.label
    )
    request.state.principal = principal
    if principal.kind == "api_key" and (keys := known_keys(request.app)) is not None:
        keys.add(token_hash(credential))  # its requests now get a rate-limit bucket of their own
    return principal


async def current_principal(
    request: Request,
    state: State,
    session: DbSession,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)] = None,
    _key: Annotated[str | None, Security(_key_scheme)] = None,
) -> Principal:
    credential = _credential(request)
    if credential is None:
        raise Unauthorized("authentication required", headers=_CHALLENGE)
    return await _authenticated(request, state, session, credential)


async def codec_principal(
    request: Request,
    state: State,
    session: DbSession,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)] = None,
    _key: Annotated[str | None, Security(_key_scheme)] = None,
) -> Principal:
    """For the codec endpoints only: a bearer token or API key as usual, or else the codec
    session cookie, which is what the Temporal UI sends with "include credentials" on."""
    credential = _credential(request)
    if credential is not None:
        return await _authenticated(request, state, session, credential)
    cookie = request.cookies.get(CODEC_SESSION_COOKIE)
    if not cookie:
        raise Unauthorized(
            "authentication required: a bearer token, or a codec session "
            "(sign in at /api/temporal/codec/sign-in)",
            headers=_CHALLENGE,
        )
    return await _authenticated(request, state, session, cookie, CODEC_SESSION)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(
    permission: str,
    resource: Resource | _AnyScope = GLOBAL,
    authenticate_with: Callable[..., Awaitable[Principal]] = current_principal,
) -> Any:
    """A dependency: the caller must hold `permission` for `resource` (default platform-wide)."""

    # A default, not Annotated: the annotation is a string here, and `authenticate_with` is
    # local, so FastAPI could not resolve it.
    async def check(principal: Principal = Depends(authenticate_with)) -> Principal:
        authorize(principal, permission, resource)
        return principal

    check.required_permission = permission  # type: ignore[attr-defined]
    return Depends(check)
