"""Users and their role grants."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import CurrentPrincipal, require
from api.deps import DbSession
from api.pagination import PageOut, page_params, page_response
from core.errors import Conflict, Forbidden, NotFound, Unauthorized
from core.identity.grants import load_grants
from core.identity.users import UserFilter, UserService, organization_ids
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, Scope
from core.security.passwords import verify_password

router = APIRouter(prefix="/users", tags=["users"])


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    avatar_url: str | None
    status: str
    mfa_enabled: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class UserIn(BaseModel):
    email: str = Field(max_length=320)
    name: str = Field("", max_length=200)
    password: str | None = Field(None, max_length=256, description="Omit for SSO-only users")
    status: Literal["active", "disabled"] = "active"


class UserPatch(BaseModel):
    name: str | None = Field(None, max_length=200)
    avatar_url: str | None = Field(None, max_length=2048)
    status: Literal["active", "disabled"] | None = None
    password: str | None = Field(None, max_length=256)
    current_password: str | None = Field(
        None, max_length=256, description="Required to change your own password"
    )


class GrantIn(BaseModel):
    role: str = Field(max_length=60)
    scope: Scope = "global"
    scope_id: uuid.UUID | None = None


class GrantOut(BaseModel):
    grant_id: uuid.UUID | None
    role: str
    scope: str
    scope_id: uuid.UUID | None
    source: str


def _self_or(principal: Principal, user_id: uuid.UUID, permission: str) -> None:
    if principal.user_id != user_id and not principal.can(permission):
        raise Forbidden(f"missing permission {permission}", details={"permission": permission})


@router.get("", response_model=PageOut[UserOut], summary="List users (admin)")
async def list_users(
    request: Request,
    session: DbSession,
    _: Principal = require("users:admin"),
    q: str | None = Query(None, max_length=200, description="Part of the email or name"),
    status_: Literal["active", "disabled"] | None = Query(None, alias="status"),
    include_deleted: bool = False,
    page: PageRequest = Depends(page_params),
) -> PageOut[UserOut]:
    found = await UserService(session).list(UserFilter(q, status_, include_deleted), page)
    return page_response(request, found, UserOut.model_validate)


@router.post("", response_model=UserOut, status_code=201, summary="Create a user (admin)")
async def create_user(
    body: UserIn, session: DbSession, _: Principal = require("users:admin")
) -> UserOut:
    user = await UserService(session).create(
        body.email, body.name, body.password, status=body.status
    )
    return UserOut.model_validate(user)


@router.get(
    "/{user_id}",
    response_model=UserOut,
    summary="A user (yourself, or with users:read in an organization you share)",
)
async def get_user(user_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> UserOut:
    if principal.user_id != user_id and not principal.can("users:read"):
        if not principal.can("users:read", ANY_SCOPE):
            raise Forbidden("missing permission users:read", details={"permission": "users:read"})
        # The organization is the tenant boundary: someone else's profile is visible only
        # where the caller reads users, and otherwise does not exist (the same 404).
        mine = await organization_ids(session, principal.grants, "users:read")
        if not mine & await organization_ids(session, await load_grants(session, user_id)):
            raise NotFound(f"user {user_id} not found")
    return UserOut.model_validate(await UserService(session).get(user_id))


@router.patch("/{user_id}", response_model=UserOut, summary="Change a user")
async def update_user(
    user_id: uuid.UUID, body: UserPatch, principal: CurrentPrincipal, session: DbSession
) -> UserOut:
    _self_or(principal, user_id, "users:admin")  # before any lookup: reveal nothing
    is_admin = principal.can("users:admin")
    if not is_admin and body.status is not None:
        raise Forbidden(
            "missing permission users:admin (to change status)",
            details={"permission": "users:admin"},
        )
    users = UserService(session)
    user = await users.get(user_id)
    own = user_id == principal.user_id
    # Changing one's own password always proves the current one (a stolen session is not enough).
    if (
        own
        and body.password is not None
        and not verify_password(user.password_hash, body.current_password or "")
    ):
        raise Unauthorized("current_password is wrong", code="invalid_credentials")
    if own and body.status == "disabled":
        raise Conflict("you cannot disable your own account")
    user = await users.update(
        user,
        name=body.name,
        avatar_url=body.avatar_url,
        status=body.status,
        password=body.password,
    )
    return UserOut.model_validate(user)


@router.delete("/{user_id}", status_code=204, summary="Delete a user (soft; admin)")
async def delete_user(
    user_id: uuid.UUID, session: DbSession, principal: Principal = require("users:admin")
) -> Response:
    if user_id == principal.user_id:
        raise Conflict("you cannot delete your own account")
    users = UserService(session)
    await users.delete(await users.get(user_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{user_id}/roles", response_model=list[GrantOut], summary="A user's role grants")
async def list_grants(
    user_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession
) -> list[GrantOut]:
    _self_or(principal, user_id, "users:admin")
    await UserService(session).get(user_id)
    return [
        GrantOut(
            grant_id=g.grant_id, role=g.role, scope=g.scope, scope_id=g.scope_id, source=g.source
        )
        for g in await load_grants(session, user_id)
    ]


@router.post(
    "/{user_id}/roles",
    response_model=GrantOut,
    status_code=201,
    summary="Grant a role at a scope (admin)",
)
async def grant_role(
    user_id: uuid.UUID, body: GrantIn, session: DbSession, _: Principal = require("users:admin")
) -> GrantOut:
    users = UserService(session)
    grant = await users.grant_role(await users.get(user_id), body.role, body.scope, body.scope_id)
    return GrantOut(
        grant_id=grant.id, role=body.role, scope=grant.scope, scope_id=grant.scope_id, source="role"
    )


@router.delete("/{user_id}/roles/{grant_id}", status_code=204, summary="Revoke a grant (admin)")
async def revoke_role(
    user_id: uuid.UUID,
    grant_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("users:admin"),
) -> Response:
    users = UserService(session)
    if user_id == principal.user_id and any(
        g.grant_id == grant_id and g.role == "admin" and g.scope == "global"
        for g in principal.grants
    ):
        raise Conflict("you cannot remove your own admin grant; ask another admin")
    await users.revoke_role(await users.get(user_id), grant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
