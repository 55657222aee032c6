"""An organization's Git host connections (`git_connections:read` / `git_connections:write` on
the organization): its own API token and webhook secret per host, which bind its repositories
to it. The webhook secret is answered once, on create and on rotate; the token never."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.git_hosts.connections import ConnectionFields, GitHostConnectionService
from core.identity.organizations import OrganizationService
from core.models.git_hosts import GitHostConnection
from core.models.identity import Organization
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, Resource, authorize
from core.settings import Settings

router = APIRouter(prefix="/organizations/{org_id}/git-connections", tags=["git connections"])

HostKind = Literal["github", "gitlab", "bitbucket"]


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63, examples=["github"])
    host: str = Field(max_length=255, examples=["github.com"], description="As in repository URLs")
    kind: HostKind | None = Field(None, description="Checked against the host when given")
    token: str | None = Field(
        None,
        max_length=4096,
        description="API token with read access to the repositories (and commit statuses: "
        "write); stored encrypted, never returned",
    )
    webhook_secret: str | None = Field(
        None,
        max_length=256,
        description="Generated when left out; answered once, in this response",
    )


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_secret: str | None = Field(None, max_length=256, description="Generated when left out")


class ConnectionOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    kind: str
    host: str
    has_token: bool
    webhook_url: str = Field(description="Where the host sends this connection's webhooks")
    webhook_secret_rotated_at: datetime | None
    created_at: datetime
    created_by: uuid.UUID | None

    @classmethod
    def of(cls, row: GitHostConnection, settings: Settings) -> ConnectionOut:
        return cls(
            id=row.id,
            org_id=row.org_id,
            name=row.name,
            kind=row.kind,
            host=row.host,
            has_token=row.token is not None,
            webhook_url=f"{settings.platform_url.rstrip('/')}/webhooks/{row.kind}",
            webhook_secret_rotated_at=row.webhook_secret_rotated_at,
            created_at=row.created_at,
            created_by=row.created_by,
        )


class ConnectionWithSecretOut(ConnectionOut):
    webhook_secret: str = Field(description="Shown this once: set it on the host's webhook")


async def _org(
    session: DbSession, org_id: uuid.UUID, principal: Principal, perm: str
) -> Organization:
    org = await OrganizationService(session).get(org_id)
    authorize(principal, perm, Resource(organization_id=org.id))
    return org


def _service(state: State, session: DbSession) -> GitHostConnectionService:
    return GitHostConnectionService(session, git_hosts=state.settings.git_hosts)


@router.get(
    "",
    response_model=PageOut[ConnectionOut],
    summary="List the organization's Git host connections (git_connections:read)",
)
async def list_connections(
    org_id: uuid.UUID,
    request: Request,
    session: DbSession,
    state: State,
    principal: Principal = require("git_connections:read", ANY_SCOPE),
    page: PageRequest = Depends(page_params),
) -> PageOut[ConnectionOut]:
    await _org(session, org_id, principal, "git_connections:read")
    found = await _service(state, session).list(org_id, page)
    return page_response(request, found, lambda row: ConnectionOut.of(row, state.settings))


@router.post(
    "",
    response_model=ConnectionWithSecretOut,
    status_code=201,
    summary="Add a Git host connection (git_connections:write); answers its webhook secret once",
    responses={409: {"description": "The organization has a connection for this host already"}},
)
async def create_connection(
    org_id: uuid.UUID,
    body: ConnectionIn,
    session: DbSession,
    state: State,
    principal: Principal = require("git_connections:write", ANY_SCOPE),
) -> ConnectionWithSecretOut:
    org = await _org(session, org_id, principal, "git_connections:write")
    row, secret = await _service(state, session).create(org, ConnectionFields(**body.model_dump()))
    out = ConnectionOut.of(row, state.settings).model_dump()
    return ConnectionWithSecretOut(**out, webhook_secret=secret)


@router.get(
    "/{connection_id}",
    response_model=ConnectionOut,
    summary="A Git host connection (git_connections:read)",
)
async def get_connection(
    org_id: uuid.UUID,
    connection_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("git_connections:read", ANY_SCOPE),
) -> ConnectionOut:
    await _org(session, org_id, principal, "git_connections:read")
    return ConnectionOut.of(
        await _service(state, session).get(org_id, connection_id), state.settings
    )


@router.post(
    "/{connection_id}/rotate-webhook-secret",
    response_model=ConnectionWithSecretOut,
    summary="Replace the webhook secret (git_connections:write); answers the new one once",
)
async def rotate_webhook_secret(
    org_id: uuid.UUID,
    connection_id: uuid.UUID,
    session: DbSession,
    state: State,
    body: RotateIn | None = None,
    principal: Principal = require("git_connections:write", ANY_SCOPE),
) -> ConnectionWithSecretOut:
    await _org(session, org_id, principal, "git_connections:write")
    service = _service(state, session)
    row = await service.get(org_id, connection_id)
    secret = await service.rotate_webhook_secret(row, body.webhook_secret if body else None)
    out = ConnectionOut.of(row, state.settings).model_dump()
    return ConnectionWithSecretOut(**out, webhook_secret=secret)


@router.delete(
    "/{connection_id}",
    status_code=204,
    summary="Delete a Git host connection and its secrets (git_connections:write); 409 while "
    "repositories are bound through it",
)
async def delete_connection(
    org_id: uuid.UUID,
    connection_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("git_connections:write", ANY_SCOPE),
) -> Response:
    await _org(session, org_id, principal, "git_connections:write")
    service = _service(state, session)
    await service.delete(await service.get(org_id, connection_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
