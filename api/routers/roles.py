"""Roles: the built-in ones (read-only) and custom ones. Grant them with POST /users/{id}/roles."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, Field

from api.auth import CurrentPrincipal, require
from api.deps import DbSession
from api.pagination import PageOut, page_params, page_response
from core.identity.roles import RoleService, permissions_of
from core.models.identity import Role
from core.pagination import PageRequest
from core.security.authorization import Principal

router = APIRouter(prefix="/roles", tags=["roles"])

NAME_DESCRIPTION = "Lower-case letters, digits and hyphens, 1 to 60, not starting with a hyphen"


class RoleOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    permissions: list[str]
    builtin: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, role: Role) -> RoleOut:
        return cls(
            id=role.id,
            name=role.name,
            description=role.description,
            permissions=permissions_of(role),
            builtin=role.builtin,
            created_at=role.created_at,
            updated_at=role.updated_at,
        )


class RoleIn(BaseModel):
    name: str = Field(max_length=60, description=NAME_DESCRIPTION)
    description: str = Field("", max_length=2000)
    permissions: list[str] = Field(
        min_length=1, max_length=100, description="Permission strings, see GET /roles"
    )


class RolePatch(BaseModel):
    name: str | None = Field(None, max_length=60, description=NAME_DESCRIPTION)
    description: str | None = Field(None, max_length=2000)
    permissions: list[str] | None = Field(
        None, min_length=1, max_length=100, description="Replaces the whole list"
    )


@router.get("", response_model=PageOut[RoleOut], summary="Built-in and custom roles")
async def list_roles(
    request: Request,
    _: CurrentPrincipal,
    session: DbSession,
    page: PageRequest = Depends(page_params),
) -> PageOut[RoleOut]:
    found = await RoleService(session).list(page)
    return page_response(request, found, RoleOut.of)


@router.post("", response_model=RoleOut, status_code=201, summary="Create a custom role")
async def create_role(
    body: RoleIn, session: DbSession, principal: Principal = require("roles:admin")
) -> RoleOut:
    role = await RoleService(session).create(
        body.name, body.permissions, body.description, by=principal
    )
    return RoleOut.of(role)


@router.get("/{role_id}", response_model=RoleOut, summary="A role")
async def get_role(role_id: uuid.UUID, _: CurrentPrincipal, session: DbSession) -> RoleOut:
    return RoleOut.of(await RoleService(session).get(role_id))


@router.patch("/{role_id}", response_model=RoleOut, summary="Change a custom role")
async def update_role(
    role_id: uuid.UUID,
    body: RolePatch,
    session: DbSession,
    principal: Principal = require("roles:admin"),
) -> RoleOut:
    roles = RoleService(session)
    role = await roles.update(
        await roles.get(role_id),
        name=body.name,
        description=body.description,
        permissions=body.permissions,
        by=principal,
    )
    return RoleOut.of(role)


@router.delete("/{role_id}", status_code=204, summary="Delete a custom role no longer granted")
async def delete_role(
    role_id: uuid.UUID, session: DbSession, _: Principal = require("roles:admin")
) -> Response:
    roles = RoleService(session)
    await roles.delete(await roles.get(role_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
