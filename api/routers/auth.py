"""Login, token refresh, logout and the caller's profile."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import CurrentPrincipal
from api.deps import DbSession, State
from api.routers.users import UserOut
from core.errors import Forbidden
from core.identity.auth import AuthService, TokenPair, TokenPolicy
from core.identity.mfa import MfaService
from core.identity.users import UserService
from core.models.identity import User
from core.security.authorization import Grant, Principal
from core.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=256)
    totp_code: str | None = Field(
        None, max_length=20, description="With MFA on: the current code, or a recovery code"
    )


class MfaCodeIn(BaseModel):
    code: str = Field(min_length=6, max_length=20)


class MfaSetupOut(BaseModel):
    otpauth_uri: str = Field(description="Scan as a QR code, or enter the secret in it by hand")


class MfaEnabledOut(BaseModel):
    recovery_codes: list[str] = Field(description="One-time codes. Shown only now: store them.")


class RefreshIn(BaseModel):
    refresh_token: str = Field(max_length=200)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime

    @classmethod
    def of(cls, pair: TokenPair, settings: Settings) -> TokenOut:
        return cls(
            access_token=pair.access_token,
            expires_in=int(settings.jwt_expires_in.total_seconds()),
            expires_at=pair.access_expires_at,
            refresh_token=pair.refresh_token,
            refresh_expires_at=pair.refresh_expires_at,
        )


class GrantOut(BaseModel):
    role: str
    scope: str
    scope_id: uuid.UUID | None
    source: str
    grant_id: uuid.UUID | None
    permissions: list[str]

    @classmethod
    def of(cls, grant: Grant) -> GrantOut:
        return cls(
            role=grant.role,
            scope=grant.scope,
            scope_id=grant.scope_id,
            source=grant.source,
            grant_id=grant.grant_id,
            permissions=sorted(grant.permissions),
        )


class MeOut(BaseModel):
    user: UserOut
    authenticated_as: str = Field(description="user, or api_key")
    roles: list[GrantOut]
    permissions: list[str] = Field(description="Permissions held platform-wide")
    scoped_permissions: list[str] = Field(description="Permissions held on some scope only")


def token_policy(state: State) -> TokenPolicy:
    assert state.settings.jwt_secret is not None
    return TokenPolicy(
        secret=state.settings.jwt_secret.get_secret_value(),
        access_ttl=state.settings.jwt_expires_in,
        refresh_ttl=state.settings.refresh_token_expires_in,
    )


@router.post("/login", response_model=TokenOut, summary="Log in with email and password")
async def login(body: LoginIn, state: State, session: DbSession) -> TokenOut:
    pair = await AuthService(session, token_policy(state)).login(
        body.email, body.password, body.totp_code
    )
    return TokenOut.of(pair, state.settings)


@router.post("/refresh", response_model=TokenOut, summary="Rotate a refresh token")
async def refresh(body: RefreshIn, state: State, session: DbSession) -> TokenOut:
    pair = await AuthService(session, token_policy(state)).refresh(body.refresh_token)
    return TokenOut.of(pair, state.settings)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End a login session")
async def logout(body: RefreshIn, state: State, session: DbSession) -> Response:
    await AuthService(session, token_policy(state)).logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=MeOut, summary="The caller: profile, roles, permissions")
async def me(principal: CurrentPrincipal, session: DbSession) -> MeOut:
    user = await UserService(session).get(principal.user_id)
    everywhere = {p for g in principal.grants if g.scope == "global" for p in g.permissions}
    somewhere = principal.held_permissions() - everywhere
    if principal.key_permissions is not None:
        everywhere &= principal.key_permissions
    return MeOut(
        user=UserOut.model_validate(user),
        authenticated_as=principal.kind,
        roles=[GrantOut.of(g) for g in principal.grants],
        permissions=sorted(everywhere),
        scoped_permissions=sorted(somewhere),
    )


async def _user_itself(principal: Principal, session: AsyncSession) -> User:
    if principal.kind != "user":
        raise Forbidden("MFA is managed by the user, not with an API key")
    return await UserService(session).get(principal.user_id)


@router.post("/mfa/setup", response_model=MfaSetupOut, summary="Start MFA enrolment (TOTP)")
async def mfa_setup(principal: CurrentPrincipal, session: DbSession) -> MfaSetupOut:
    user = await _user_itself(principal, session)
    return MfaSetupOut(otpauth_uri=await MfaService(session).setup(user))


@router.post("/mfa/verify", response_model=MfaEnabledOut, summary="Turn MFA on with a first code")
async def mfa_verify(
    body: MfaCodeIn, principal: CurrentPrincipal, session: DbSession
) -> MfaEnabledOut:
    user = await _user_itself(principal, session)
    return MfaEnabledOut(recovery_codes=await MfaService(session).verify(user, body.code))


@router.post("/mfa/disable", status_code=204, summary="Turn MFA off (needs a current code)")
async def mfa_disable(body: MfaCodeIn, principal: CurrentPrincipal, session: DbSession) -> Response:
    user = await _user_itself(principal, session)
    await MfaService(session).disable(user, body.code)
    return Response(status_code=204)
