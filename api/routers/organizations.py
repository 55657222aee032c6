"""Organizations: the top of the ownership tree (organization > team > service)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession
from api.pagination import PageOut, page_params, page_response
from core.identity.organizations import OrganizationFilter, OrganizationService, Visibility
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, Resource, authorize

router = APIRouter(prefix="/organizations", tags=["organizations"])

SLUG_DESCRIPTION = "Lower-case letters, digits and hyphens, 1 to 63, not starting with a hyphen"


class OrganizationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_by: uuid.UUID | None
    deleted_at: datetime | None


class OrganizationIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(max_length=100, description=SLUG_DESCRIPTION)
    settings: dict[str, Any] = Field(default_factory=dict, description="Any JSON object")


class OrganizationPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    slug: str | None = Field(None, max_length=100, description=SLUG_DESCRIPTION)
    settings: dict[str, Any] | None = Field(None, description="Replaces the whole object")


def _resource(org_id: uuid.UUID) -> Resource:
    return Resource(organization_id=org_id)


@router.get(
    "",
    response_model=PageOut[OrganizationOut],
    summary="List the organizations you may see (organizations:read)",
)
async def list_organizations(
    request: Request,
    session: DbSession,
    principal: Principal = require("organizations:read", ANY_SCOPE),
    q: str | None = Query(None, max_length=200, description="Part of the name or slug"),
    page: PageRequest = Depends(page_params),
) -> PageOut[OrganizationOut]:
    visible = Visibility.of(principal, "organizations:read")
    found = await OrganizationService(session).list(OrganizationFilter(q, visible), page)
    return page_response(request, found, OrganizationOut.model_validate)


@router.post(
    "",
    response_model=OrganizationOut,
    status_code=201,
    summary="Create an organization (organizations:write platform-wide)",
)
async def create_organization(
    body: OrganizationIn, session: DbSession, _: Principal = require("organizations:write")
) -> OrganizationOut:
    org = await OrganizationService(session).create(body.name, body.slug, body.settings)
    return OrganizationOut.model_validate(org)


@router.get(
    "/{org_id}", response_model=OrganizationOut, summary="An organization (organizations:read)"
)
async def get_organization(
    org_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("organizations:read", ANY_SCOPE),
) -> OrganizationOut:
    org = await OrganizationService(session).get(org_id)
    authorize(principal, "organizations:read", _resource(org.id))
    return OrganizationOut.model_validate(org)


@router.patch(
    "/{org_id}",
    response_model=OrganizationOut,
    summary="Change an organization (organizations:write)",
)
async def update_organization(
    org_id: uuid.UUID,
    body: OrganizationPatch,
    session: DbSession,
    principal: Principal = require("organizations:write", ANY_SCOPE),
) -> OrganizationOut:
    orgs = OrganizationService(session)
    org = await orgs.get(org_id)
    authorize(principal, "organizations:write", _resource(org.id))
    org = await orgs.update(org, name=body.name, slug=body.slug, settings=body.settings)
    return OrganizationOut.model_validate(org)


@router.delete(
    "/{org_id}",
    status_code=204,
    summary="Delete an organization without teams (soft; organizations:write)",
)
async def delete_organization(
    org_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("organizations:write", ANY_SCOPE),
) -> Response:
    orgs = OrganizationService(session)
    org = await orgs.get(org_id)
    authorize(principal, "organizations:write", _resource(org.id))
    await orgs.delete(org)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
