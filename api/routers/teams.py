"""Teams and their members. A membership role (owner, maintainer, member) grants a built-in
role on the team; it takes effect on the member's next request."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession
from api.pagination import PageOut, page_params, page_response
from core.identity.organizations import OrganizationService, Visibility
from core.identity.teams import Member, TeamFilter, TeamService, team_resource
from core.identity.users import UserService
from core.models.identity import Team
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, Resource, authorize

router = APIRouter(prefix="/teams", tags=["teams"])

MembershipRole = Literal["owner", "maintainer", "member"]


class TeamOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    slug: str
    description: str
    created_at: datetime
    updated_at: datetime
    created_by: uuid.UUID | None


class TeamIn(BaseModel):
    org_id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(
        max_length=100,
        description="Unique in the organization: lower-case letters, digits and hyphens",
    )
    description: str = Field("", max_length=10_000)


class TeamPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    slug: str | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=10_000)


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime

    @classmethod
    def of(cls, member: Member) -> MemberOut:
        return cls(
            user_id=member.user.id,
            email=member.user.email,
            name=member.user.name,
            role=member.membership.role,
            joined_at=member.membership.joined_at,
        )


class MemberIn(BaseModel):
    user_id: uuid.UUID
    role: MembershipRole = "member"


class MemberPatch(BaseModel):
    role: MembershipRole


async def _team(
    session: DbSession, team_id: uuid.UUID, principal: Principal, permission: str
) -> Team:
    team = await TeamService(session).get(team_id)
    authorize(principal, permission, team_resource(team))
    return team


@router.get("", response_model=PageOut[TeamOut], summary="List the teams you may see (teams:read)")
async def list_teams(
    request: Request,
    session: DbSession,
    principal: Principal = require("teams:read", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None, description="Only this organization's teams"),
    q: str | None = Query(None, max_length=200, description="Part of the name or slug"),
    page: PageRequest = Depends(page_params),
) -> PageOut[TeamOut]:
    visible = Visibility.of(principal, "teams:read")
    found = await TeamService(session).list(TeamFilter(org_id, q, visible), page)
    return page_response(request, found, TeamOut.model_validate)


@router.post(
    "",
    response_model=TeamOut,
    status_code=201,
    summary="Create a team (teams:write on the organization)",
)
async def create_team(
    body: TeamIn, session: DbSession, principal: Principal = require("teams:write", ANY_SCOPE)
) -> TeamOut:
    org = await OrganizationService(session).get(body.org_id)
    authorize(principal, "teams:write", Resource(organization_id=org.id))
    team = await TeamService(session).create(org, body.name, body.slug, body.description)
    return TeamOut.model_validate(team)


@router.get("/{team_id}", response_model=TeamOut, summary="A team (teams:read)")
async def get_team(
    team_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("teams:read", ANY_SCOPE),
) -> TeamOut:
    return TeamOut.model_validate(await _team(session, team_id, principal, "teams:read"))


@router.patch("/{team_id}", response_model=TeamOut, summary="Change a team (teams:write)")
async def update_team(
    team_id: uuid.UUID,
    body: TeamPatch,
    session: DbSession,
    principal: Principal = require("teams:write", ANY_SCOPE),
) -> TeamOut:
    team = await _team(session, team_id, principal, "teams:write")
    team = await TeamService(session).update(
        team, name=body.name, slug=body.slug, description=body.description
    )
    return TeamOut.model_validate(team)


@router.delete("/{team_id}", status_code=204, summary="Delete a team (soft; teams:write)")
async def delete_team(
    team_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("teams:write", ANY_SCOPE),
) -> Response:
    team = await _team(session, team_id, principal, "teams:write")
    await TeamService(session).delete(team)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- members ---------------------------------------------------------------------------------
@router.get(
    "/{team_id}/members",
    response_model=PageOut[MemberOut],
    summary="A team's members (teams:read)",
)
async def list_members(
    request: Request,
    team_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("teams:read", ANY_SCOPE),
    page: PageRequest = Depends(page_params),
) -> PageOut[MemberOut]:
    team = await _team(session, team_id, principal, "teams:read")
    found = await TeamService(session).members(team, page)
    return page_response(request, found, MemberOut.of)


@router.post(
    "/{team_id}/members",
    response_model=MemberOut,
    status_code=201,
    summary="Add a member with a membership role (teams:write)",
)
async def add_member(
    team_id: uuid.UUID,
    body: MemberIn,
    session: DbSession,
    principal: Principal = require("teams:write", ANY_SCOPE),
) -> MemberOut:
    team = await _team(session, team_id, principal, "teams:write")
    user = await UserService(session).get(body.user_id)
    membership = await TeamService(session).add_member(team, user, body.role)
    return MemberOut.of(Member(membership, user))


@router.patch(
    "/{team_id}/members/{user_id}",
    response_model=MemberOut,
    summary="Change a member's role (teams:write)",
)
async def update_member(
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MemberPatch,
    session: DbSession,
    principal: Principal = require("teams:write", ANY_SCOPE),
) -> MemberOut:
    team = await _team(session, team_id, principal, "teams:write")
    membership = await TeamService(session).update_member(team, user_id, body.role)
    user = await UserService(session).get(user_id, include_deleted=True)
    return MemberOut.of(Member(membership, user))


@router.delete(
    "/{team_id}/members/{user_id}",
    status_code=204,
    summary="Remove a member (teams:write)",
)
async def remove_member(
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("teams:write", ANY_SCOPE),
) -> Response:
    team = await _team(session, team_id, principal, "teams:write")
    await TeamService(session).remove_member(team, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
