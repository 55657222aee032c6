"""Single sign-on: log in with GitHub or an OpenID Connect provider (core/identity/sso.py).

Public routes (there is no token yet): the browser is sent to `/auth/sso/{provider}/login`,
goes on to the provider, and comes back to `/auth/sso/{provider}/callback`, which answers with
the platform's token pair, the same as `POST /auth/login` (or, for a privileged user with MFA
on, `401 mfa_required` with an `mfa_token` to redeem at `POST /auth/sso/mfa`).

A signed-in user links a provider account to their own with `POST /auth/sso/{provider}/link`,
which starts the same flow for that user: accounts are never linked by e-mail alone.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from api.auth import CurrentPrincipal
from api.deps import DbSession, State
from api.errors import ErrorResponse
from api.routers.auth import TokenOut, token_policy
from core.audit import AuditService
from core.errors import Forbidden, Unauthorized
from core.identity.sso import (
    STATE_TTL,
    VERIFIER_COOKIE,
    SsoRegistry,
    SsoResult,
    SsoService,
    SsoStart,
    start_login,
)
from core.settings import Settings

router = APIRouter(prefix="/auth/sso", tags=["auth"])

ProviderName = Annotated[str, Path(max_length=60, description="github, or the OIDC provider name")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (404, "The provider is not configured"),
        (502, "The provider could not be reached or answered nonsense"),
    )
}


def sso_registry(request: Request, state: State) -> SsoRegistry:
    """The providers from the settings, built on first use (tests may set `app.state.sso` to a
    registry with their own HTTP transport)."""
    registry: SsoRegistry | None = getattr(request.app.state, "sso", None)
    if registry is None:
        registry = request.app.state.sso = SsoRegistry.from_settings(state.settings)
    return registry


Registry = Annotated[SsoRegistry, Depends(sso_registry)]


def _callback_path(provider: str) -> str:
    return f"/auth/sso/{provider}/callback"


def _redirect_uri(request: Request, settings: Settings, provider: str) -> str:
    base = settings.public_url or str(request.base_url).rstrip("/")
    return base + _callback_path(provider)


class ProviderOut(BaseModel):
    name: str
    kind: str = Field(description="github or oidc")
    label: str
    login_url: str = Field(description="Send the browser here to log in")


class ProvidersOut(BaseModel):
    providers: list[ProviderOut]


class SsoTokenOut(TokenOut):
    return_to: str | None = Field(
        None, description="The return_to given at login: where the front end should go next"
    )


@router.get(
    "/providers", response_model=ProvidersOut, summary="The configured single sign-on providers"
)
async def providers(registry: Registry) -> ProvidersOut:
    return ProvidersOut(
        providers=[
            ProviderOut(
                name=p.name, kind=p.kind, label=p.label, login_url=f"/auth/sso/{p.name}/login"
            )
            for p in registry.providers.values()
        ]
    )


@router.get(
    "/{provider}/login",
    status_code=302,
    response_class=RedirectResponse,
    summary="Start a single sign-on login (redirects to the provider)",
    responses={302: {"description": "To the provider's authorization page"}, **_ERRORS},
)
async def login(
    provider: ProviderName,
    request: Request,
    state: State,
    registry: Registry,
    return_to: Annotated[
        str | None,
        Query(max_length=512, description="A path on this site to hand back after login"),
    ] = None,
) -> RedirectResponse:
    assert state.settings.jwt_secret is not None
    redirect_uri = _redirect_uri(request, state.settings, provider)
    start = await start_login(
        registry,
        provider,
        secret=state.settings.jwt_secret.get_secret_value(),
        redirect_uri=redirect_uri,
        return_to=return_to,
    )
    response = RedirectResponse(start.url, status_code=302, headers={"Cache-Control": "no-store"})
    _keep_verifier(response, start, provider, redirect_uri)
    return response


def _keep_verifier(response: Response, start: SsoStart, provider: str, redirect_uri: str) -> None:
    """The PKCE verifier stays with this browser: only the callback can read it."""
    response.set_cookie(
        VERIFIER_COOKIE,
        start.code_verifier,
        max_age=int(STATE_TTL.total_seconds()),
        path=_callback_path(provider),
        httponly=True,
        samesite="lax",
        secure=redirect_uri.startswith("https://"),
    )


class LinkStartOut(BaseModel):
    authorization_url: str = Field(
        description="Send this browser here (it now holds the login cookie) to link the account"
    )


class SsoMfaIn(BaseModel):
    mfa_token: str = Field(max_length=4096, description="From the callback's mfa_required error")
    totp_code: str = Field(
        min_length=6, max_length=20, description="The current code, or a recovery code"
    )


@router.post(
    "/{provider}/link",
    response_model=LinkStartOut,
    summary="Link a provider account to yours: start its login (signed in)",
    responses={
        403: {"model": ErrorResponse, "description": "With an API key"},
        **_ERRORS,
    },
)
async def link(
    provider: ProviderName,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    state: State,
    session: DbSession,
    registry: Registry,
    return_to: Annotated[
        str | None,
        Query(max_length=512, description="A path on this site to hand back after linking"),
    ] = None,
) -> LinkStartOut:
    if principal.kind != "user":
        raise Forbidden("accounts are linked by their user, signed in, not with an API key")
    assert state.settings.jwt_secret is not None
    redirect_uri = _redirect_uri(request, state.settings, provider)
    start = await start_login(
        registry,
        provider,
        secret=state.settings.jwt_secret.get_secret_value(),
        redirect_uri=redirect_uri,
        return_to=return_to,
        link_user_id=principal.user_id,
    )
    await AuditService(session).record(
        "auth.sso.link_started", "user", principal.user_id, after={"provider": provider}
    )
    _keep_verifier(response, start, provider, redirect_uri)
    response.headers["Cache-Control"] = "no-store"
    return LinkStartOut(authorization_url=start.url)


def _tokens(result: SsoResult, response: Response, settings: Settings) -> SsoTokenOut:
    if result.pair is None:
        assert result.mfa_token is not None and result.mfa_token_expires_at is not None
        raise Unauthorized(
            "this account uses MFA: send the mfa_token with a code to POST /auth/sso/mfa",
            code="mfa_required",
            details={
                "mfa_token": result.mfa_token,
                "expires_at": result.mfa_token_expires_at.isoformat(),
                "verify": "/auth/sso/mfa",
            },
            headers={"Cache-Control": "no-store"},
            keep_changes=True,  # the challenge's audit entry
        )
    response.headers["Cache-Control"] = "no-store"
    tokens = TokenOut.of(result.pair, settings)
    return SsoTokenOut(**tokens.model_dump(), return_to=result.return_to)


@router.post(
    "/mfa",
    response_model=SsoTokenOut,
    summary="Finish a privileged user's SSO login with the platform's MFA code",
    responses={401: {"model": ErrorResponse, "description": "The token or the code is wrong"}},
)
async def sso_mfa(
    body: SsoMfaIn,
    response: Response,
    state: State,
    session: DbSession,
    registry: Registry,
) -> SsoTokenOut:
    result = await SsoService(session, registry, token_policy(state)).complete_mfa(
        body.mfa_token, body.totp_code
    )
    return _tokens(result, response, state.settings)


@router.get(
    "/{provider}/callback",
    response_model=SsoTokenOut,
    summary="Finish a single sign-on login: the platform's tokens",
    responses={
        401: {
            "model": ErrorResponse,
            "description": "Refused by the provider or the platform; or mfa_required",
        },
        403: {"model": ErrorResponse, "description": "Not on the SSO allow-list"},
        409: {
            "model": ErrorResponse,
            "description": "The e-mail belongs to an account not linked to this provider account",
        },
        **_ERRORS,
    },
)
async def callback(
    provider: ProviderName,
    request: Request,
    response: Response,
    state: State,
    session: DbSession,
    registry: Registry,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    sso_state: Annotated[str | None, Query(alias="state", max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    error_description: Annotated[str | None, Query(max_length=1000)] = None,
) -> SsoTokenOut:
    result = await SsoService(session, registry, token_policy(state)).complete(
        provider,
        redirect_uri=_redirect_uri(request, state.settings, provider),
        code=code,
        state=sso_state,
        code_verifier=request.cookies.get(VERIFIER_COOKIE),
        error=error,
        error_description=error_description,
    )
    response.delete_cookie(VERIFIER_COOKIE, path=_callback_path(provider), httponly=True)
    return _tokens(result, response, state.settings)
