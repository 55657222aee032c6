"""Environments: create (`environments:write` on the organization), read and list
(`environments:read`), their configuration entries (secrets masked in every response), what
runs in them (`/resources`) and access grants."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession
from api.pagination import PageOut, page_params, page_response
from core.deploy.usage import group_usage
from core.environments.environments import (
    MASK,
    ConfigEntry,
    EnvironmentAccessService,
    EnvironmentFields,
    EnvironmentFilter,
    EnvironmentService,
    authorized_environment,
)
from core.environments.policy import EnvironmentType, Target
from core.identity.organizations import OrganizationService, Visibility
from core.models.environments import Environment, EnvironmentConfig
from core.pagination import PageRequest
from core.promotions.promotions import PromotionService
from core.security.authorization import ANY_SCOPE, Principal, Resource, authorize

router = APIRouter(prefix="/environments", tags=["environments"])


class EnvironmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID
    name: str = Field(max_length=63, examples=["staging"])
    type: EnvironmentType
    description: str = Field("", max_length=10_000)
    target: Target = Field("local", description="Where deploys go: local processes or Kubernetes")
    cluster_id: str | None = Field(
        None,
        max_length=255,
        description="A kubeconfig context on the organization's allow-list (kubernetes only; "
        "none: the worker's default cluster)",
    )
    namespace: str | None = Field(
        None,
        max_length=63,
        description="Default and only choice unless a platform admin: <org-slug>-<name>",
    )
    previous_id: uuid.UUID | None = Field(
        None, description="The environment a version is promoted from"
    )
    limits: dict[str, Any] = Field(default_factory=dict, description="cpu, memory, pods, ...")
    policy: dict[str, Any] = Field(default_factory=dict, description="The protection policy")
    config: dict[str, Any] = Field(default_factory=dict, description="Free-form settings")


class ConfigEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(max_length=255, examples=["DATABASE_URL"])
    value: str = Field(max_length=65_536)
    is_secret: bool = False


class ConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[ConfigEntryIn] = Field(default_factory=list, max_length=500)
    remove: list[str] = Field(default_factory=list, max_length=500)


class ConfigEntryOut(BaseModel):
    key: str
    value: str = Field(description=f"{MASK} for a secret")
    is_secret: bool
    updated_at: datetime
    updated_by: uuid.UUID | None

    @classmethod
    def of(cls, entry: EnvironmentConfig) -> ConfigEntryOut:
        return cls(
            key=entry.key,
            value=MASK if entry.is_secret else entry.value,
            is_secret=entry.is_secret,
            updated_at=entry.updated_at,
            updated_by=entry.updated_by,
        )


class EnvironmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    description: str
    type: str
    status: str
    target: str
    cluster_id: str | None
    namespace: str | None
    previous_id: uuid.UUID | None
    position: int
    limits: dict[str, Any]
    policy: dict[str, Any]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class EnvironmentDetailOut(EnvironmentOut):
    entries: list[ConfigEntryOut] = Field(description="Configuration entries, secrets masked")


async def _detail(service: EnvironmentService, env: Environment) -> EnvironmentDetailOut:
    entries = [ConfigEntryOut.of(c) for c in await service.config(env)]
    return EnvironmentDetailOut(**EnvironmentOut.model_validate(env).model_dump(), entries=entries)


@router.get("", response_model=PageOut[EnvironmentOut], summary="List environments")
async def list_environments(
    request: Request,
    session: DbSession,
    principal: Principal = require("environments:read", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None),
    type: EnvironmentType | None = Query(None),
    q: str | None = Query(None, max_length=200, description="Part of the name"),
    page: PageRequest = Depends(page_params),
) -> PageOut[EnvironmentOut]:
    visible = Visibility.of(principal, "environments:read")
    f = EnvironmentFilter(visible, org_id=org_id, type=type, q=q)
    found = await EnvironmentService(session).search(f, page)
    return page_response(request, found, EnvironmentOut.model_validate)


@router.post(
    "",
    response_model=EnvironmentDetailOut,
    status_code=201,
    summary="Create an environment (environments:write on the organization)",
)
async def create_environment(
    body: EnvironmentIn,
    session: DbSession,
    principal: Principal = require("environments:write", ANY_SCOPE),
) -> EnvironmentDetailOut:
    org = await OrganizationService(session).get(body.org_id)
    authorize(principal, "environments:write", Resource(organization_id=org.id))
    service = EnvironmentService(session)
    fields = EnvironmentFields(**body.model_dump(exclude={"org_id"}))
    env = await service.create(org, fields, principal)
    return await _detail(service, env)


@router.get(
    "/{env_id}", response_model=EnvironmentDetailOut, summary="An environment with its config"
)
async def get_environment(
    env_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("environments:read", ANY_SCOPE),
) -> EnvironmentDetailOut:
    env = await authorized_environment(session, env_id, principal, "environments:read")
    return await _detail(EnvironmentService(session), env)


@router.put(
    "/{env_id}/config",
    response_model=EnvironmentDetailOut,
    summary="Set and remove configuration entries (environments:write)",
)
async def update_config(
    env_id: uuid.UUID,
    body: ConfigIn,
    session: DbSession,
    principal: Principal = require("environments:write", ANY_SCOPE),
) -> EnvironmentDetailOut:
    env = await authorized_environment(session, env_id, principal, "environments:write")
    service = EnvironmentService(session)
    await service.set_config(
        env, [ConfigEntry(**e.model_dump()) for e in body.entries], body.remove
    )
    return await _detail(service, env)


class UsageOut(BaseModel):
    alive: bool
    processes: int
    rss_bytes: int
    cpu_seconds: float


class RunningOut(BaseModel):
    deployment_id: uuid.UUID
    service_id: uuid.UUID
    version: str
    status: str
    deployed_at: datetime | None
    promotion_id: uuid.UUID | None
    details: dict[str, Any] = Field(description="pid, port and url (local); namespace (kubernetes)")
    usage: UsageOut | None = Field(None, description="Local target: the process group's use")


class ResourcesOut(BaseModel):
    environment_id: uuid.UUID
    target: str
    namespace: str | None
    limits: dict[str, Any] = Field(description="Applied as a ResourceQuota and LimitRange")
    deployments: list[RunningOut] = Field(description="What runs now, one per service")


@router.get(
    "/{env_id}/resources",
    response_model=ResourcesOut,
    summary="What runs in the environment, its limits, and (local target) what it uses",
)
async def resources(
    env_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("environments:read", ANY_SCOPE),
) -> ResourcesOut:
    env = await authorized_environment(session, env_id, principal, "environments:read")
    running = []
    for row in await PromotionService(session).running(env.id):
        pid = row.details.get("pid")
        usage = group_usage(int(pid)) if env.target == "local" and pid else None
        running.append(
            RunningOut(
                deployment_id=row.id,
                service_id=row.service_id,
                version=row.version,
                status=row.status,
                deployed_at=row.deployed_at,
                promotion_id=row.promotion_id,
                details=row.details,
                usage=UsageOut(**usage.model_dump()) if usage else None,
            )
        )
    return ResourcesOut(
        environment_id=env.id,
        target=env.target,
        namespace=env.namespace,
        limits=env.limits,
        deployments=running,
    )


class AccessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    permissions: list[str] = Field(
        min_length=1, examples=[["environments:read", "promotions:approve"]]
    )


class AccessOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    env_id: uuid.UUID
    user_id: uuid.UUID | None
    team_id: uuid.UUID | None
    permissions: list[str]
    granted_at: datetime
    granted_by: uuid.UUID | None


@router.get(
    "/{env_id}/access",
    response_model=list[AccessOut],
    summary="Who holds permissions on this environment through access grants",
)
async def list_access(
    env_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("environments:read", ANY_SCOPE),
) -> list[AccessOut]:
    env = await authorized_environment(session, env_id, principal, "environments:read")
    return [
        AccessOut.model_validate(a) for a in await EnvironmentAccessService(session).grants(env)
    ]


@router.post(
    "/{env_id}/access",
    response_model=AccessOut,
    status_code=201,
    summary="Grant a user or team permissions on this environment (only ones you hold here)",
)
async def grant_access(
    env_id: uuid.UUID,
    body: AccessIn,
    session: DbSession,
    principal: Principal = require("environments:write", ANY_SCOPE),
) -> AccessOut:
    env = await authorized_environment(session, env_id, principal, "environments:write")
    row = await EnvironmentAccessService(session).grant(
        env, principal, body.permissions, user_id=body.user_id, team_id=body.team_id
    )
    return AccessOut.model_validate(row)


@router.delete("/{env_id}/access/{access_id}", status_code=204, summary="Revoke an access grant")
async def revoke_access(
    env_id: uuid.UUID,
    access_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("environments:write", ANY_SCOPE),
) -> Response:
    env = await authorized_environment(session, env_id, principal, "environments:write")
    await EnvironmentAccessService(session).revoke(env, access_id)
    return Response(status_code=204)
