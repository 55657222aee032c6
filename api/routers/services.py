"""The service catalog: services, their versions and their dependency graph. Writes need
`services:write` on the owning team; reads `services:read`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.catalog.dependencies import MAX_DEPTH, DependencyService, DependencySpec, Graph
from core.catalog.health import HealthCheckService
from core.catalog.health_starter import stop_monitors
from core.catalog.services import (
    ServiceFields,
    ServiceFilter,
    ServiceService,
    ServiceView,
    service_resource,
)
from core.catalog.versions import VersionService
from core.errors import ValidationFailed
from core.git_hosts.bindings import prove
from core.identity.organizations import Visibility
from core.identity.teams import TeamService, team_resource
from core.models.catalog import Service, ServiceVersion
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, authorize

router = APIRouter(prefix="/services", tags=["services"])

Lifecycle = Literal["experimental", "production", "deprecated"]
Kind = Literal["component", "api", "system", "resource"]
DependencyType = Literal["runtime", "build", "data"]


class DocLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("", max_length=200)
    url: str = Field(max_length=2048, examples=["https://docs.example.com/payments"])


class ServiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        max_length=63,
        description="Unique in the organization: lower-case letters, digits and hyphens",
        examples=["payments-api"],
    )
    owner_team_id: uuid.UUID
    description: str = Field("", max_length=10_000)
    repository_url: str | None = Field(
        None,
        max_length=2048,
        description="GitHub, GitLab or Bitbucket repository; stored as https://host/owner/name",
        examples=["git@github.com:acme/payments-api.git"],
    )
    docs: list[DocLink] = Field(default_factory=list, max_length=50)
    tags: list[str] = Field(default_factory=list, max_length=50)
    lifecycle: Lifecycle = "experimental"
    kind: Kind = "component"
    type: str | None = Field(None, max_length=100, description="e.g. service, website, library")
    system: str | None = Field(None, max_length=63)


class ServicePut(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=63)
    owner_team_id: uuid.UUID | None = Field(
        None, description="Hand the service to another team (services:write on both teams)"
    )
    description: str | None = Field(None, max_length=10_000)
    repository_url: str | None = Field(None, max_length=2048, description='"" removes it')
    docs: list[DocLink] | None = Field(None, max_length=50)
    tags: list[str] | None = Field(None, max_length=50, description="Replaces the tags")
    lifecycle: Lifecycle | None = None
    kind: Kind | None = None
    type: str | None = Field(None, max_length=100)
    system: str | None = Field(None, max_length=63)


class ServiceOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    owner_team_id: uuid.UUID
    name: str
    kind: str
    type: str | None
    description: str
    repository_url: str | None
    repository_host: str | None
    docs: list[dict[str, str]]
    tags: list[str]
    lifecycle: str
    system: str | None
    provides_apis: list[str]
    annotations: dict[str, str]
    created_at: datetime
    updated_at: datetime
    created_by: uuid.UUID | None
    updated_by: uuid.UUID | None

    @classmethod
    def of(cls, view: ServiceView) -> ServiceOut:
        s = view.service
        return cls(
            id=s.id,
            org_id=s.org_id,
            owner_team_id=s.owner_team_id,
            name=s.name,
            kind=s.kind,
            type=s.type,
            description=s.description,
            repository_url=s.repository_url,
            repository_host=s.repository_host,
            docs=list(s.docs or []),
            tags=view.tags,
            lifecycle=s.lifecycle,
            system=s.system,
            provides_apis=list(s.provides_apis or []),
            annotations=dict(s.annotations or {}),
            created_at=s.created_at,
            updated_at=s.updated_at,
            created_by=s.created_by,
            updated_by=s.updated_by,
        )


class VersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(max_length=100, examples=["1.4.2"])
    git_sha: str | None = Field(
        None, max_length=40, examples=["9fceb02d0ae598e95dc970b74767f19372d61af8"]
    )
    dockerfile_path: str | None = Field(None, max_length=1024, examples=["Dockerfile"])
    config: dict[str, Any] = Field(default_factory=dict)
    pipeline_run_id: uuid.UUID | None = Field(
        None,
        description="The succeeded run of this service's pipeline that built it: its "
        "provenance (the branch and commit promotions are checked against)",
    )


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    service_id: uuid.UUID
    version: str
    git_sha: str | None
    dockerfile_path: str | None
    config: dict[str, Any]
    pipeline_run_id: uuid.UUID | None
    created_at: datetime
    created_by: uuid.UUID | None


class DependencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_id: uuid.UUID | None = Field(None, description="The service depended on")
    service: str | None = Field(None, description="...or its name in the same organization")
    type: DependencyType = "runtime"
    version_constraint: str | None = Field(
        None, max_length=200, description="A semver range: ^1.2.0, ~1.4, >=1.0.0 <2.0.0, 1.x"
    )


class DependenciesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dependencies: list[DependencyIn] = Field(max_length=500)


class NodeOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    lifecycle: str
    owner_team_id: uuid.UUID
    depth: int = Field(description="0 the service; 1.. its dependencies; -1.. its dependents")
    latest_version: str | None


class EdgeOut(BaseModel):
    source: uuid.UUID = Field(description="The service that depends...")
    target: uuid.UUID = Field(description="...on this one")
    type: str
    version_constraint: str | None
    satisfied: bool | None = Field(description="None when there is no constraint")
    satisfying_versions: list[str]


class GraphOut(BaseModel):
    root: uuid.UUID
    depth: int
    nodes: list[NodeOut]
    edges: list[EdgeOut]
    problems: list[dict[str, Any]]

    @classmethod
    def of(cls, graph: Graph) -> GraphOut:
        return cls(
            root=graph.root,
            depth=graph.depth,
            nodes=[NodeOut(**vars(n)) for n in graph.nodes],
            edges=[EdgeOut(**vars(e)) for e in graph.edges],
            problems=graph.problems,
        )


def _services(state: State, session: DbSession) -> ServiceService:
    return ServiceService(session, git_hosts=state.settings.git_hosts)


async def _service(
    services: ServiceService, service_id: uuid.UUID, principal: Principal, permission: str
) -> Service:
    service = await services.get(service_id)
    authorize(principal, permission, service_resource(service))
    return service


def _fields(body: ServiceIn | ServicePut) -> ServiceFields:
    data = body.model_dump(exclude={"owner_team_id"}, exclude_unset=isinstance(body, ServicePut))
    if "docs" in data and data["docs"] is not None:
        data["docs"] = [dict(d) for d in data["docs"]]
    return ServiceFields(**{k: v for k, v in data.items() if v is not None})


@router.get("", response_model=PageOut[ServiceOut], summary="List services (services:read)")
async def list_services(
    request: Request,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:read", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None),
    owner_team_id: uuid.UUID | None = Query(None),
    name: str | None = Query(None, max_length=63, description="Exact name"),
    tag: str | None = Query(None, max_length=63),
    lifecycle: Lifecycle | None = Query(None),
    kind: Kind | None = Query(None),
    q: str | None = Query(None, max_length=200, description="Part of the name or description"),
    page: PageRequest = Depends(page_params),
) -> PageOut[ServiceOut]:
    f = ServiceFilter(
        org_id=org_id,
        owner_team_id=owner_team_id,
        name=name,
        tag=tag,
        lifecycle=lifecycle,
        kind=kind,
        q=q,
        visible=Visibility.of(principal, "services:read"),
    )
    return page_response(request, await services.list(f, page), ServiceOut.of)


@router.post(
    "",
    response_model=ServiceOut,
    status_code=201,
    summary="Register a service (services:write on the owner team)",
)
async def create_service(
    body: ServiceIn,
    session: DbSession,
    state: State,
    principal: Principal = require("services:write", ANY_SCOPE),
) -> ServiceOut:
    team = await TeamService(session).get(body.owner_team_id)
    authorize(principal, "services:write", team_resource(team))
    proven = await prove(session, team.org_id, [body.repository_url], state.settings)
    services = ServiceService(session, git_hosts=state.settings.git_hosts, proven=proven)
    return ServiceOut.of(await services.create(team, _fields(body)))


@router.get("/{service_id}", response_model=ServiceOut, summary="A service (services:read)")
async def get_service(
    service_id: uuid.UUID,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:read", ANY_SCOPE),
) -> ServiceOut:
    service = await _service(services, service_id, principal, "services:read")
    return ServiceOut.of(await services.view(service))


@router.put("/{service_id}", response_model=ServiceOut, summary="Change a service (services:write)")
async def update_service(
    service_id: uuid.UUID,
    body: ServicePut,
    session: DbSession,
    state: State,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:write", ANY_SCOPE),
) -> ServiceOut:
    service = await _service(services, service_id, principal, "services:write")
    owner = None
    if body.owner_team_id is not None and body.owner_team_id != service.owner_team_id:
        owner = await TeamService(session).get(body.owner_team_id)
        authorize(principal, "services:write", team_resource(owner))
    if body.repository_url:
        proven = await prove(session, service.org_id, [body.repository_url], state.settings)
        services = ServiceService(session, git_hosts=state.settings.git_hosts, proven=proven)
    return ServiceOut.of(await services.update(service, _fields(body), owner=owner))


@router.delete(
    "/{service_id}",
    status_code=204,
    summary="Delete a service and its health checks (soft; services:write); 409 while depended on",
)
async def delete_service(
    service_id: uuid.UUID,
    session: DbSession,
    state: State,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:write", ANY_SCOPE),
) -> Response:
    service = await _service(services, service_id, principal, "services:write")
    await services.delete(service)
    stopped = await HealthCheckService(session).delete_all(service)
    await session.commit()
    await stop_monitors(state.temporal.client, stopped)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- versions ----------------------------------------------------------------------------------
@router.get(
    "/{service_id}/versions",
    response_model=PageOut[VersionOut],
    summary="A service's versions, newest first (services:read)",
)
async def list_versions(
    request: Request,
    service_id: uuid.UUID,
    session: DbSession,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:read", ANY_SCOPE),
    page: PageRequest = Depends(page_params),
) -> PageOut[VersionOut]:
    service = await _service(services, service_id, principal, "services:read")
    found = await VersionService(session).list(service, page)
    return page_response(request, found, VersionOut.model_validate)


@router.post(
    "/{service_id}/versions",
    response_model=VersionOut,
    status_code=201,
    summary="Register a version (services:write); a duplicate is 409",
)
async def create_version(
    service_id: uuid.UUID,
    body: VersionIn,
    session: DbSession,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:write", ANY_SCOPE),
) -> VersionOut:
    service = await _service(services, service_id, principal, "services:write")
    row: ServiceVersion = await VersionService(session).create(
        service,
        body.version,
        git_sha=body.git_sha,
        dockerfile_path=body.dockerfile_path,
        config=body.config,
        pipeline_run_id=body.pipeline_run_id,
    )
    return VersionOut.model_validate(row)


# -- dependencies ------------------------------------------------------------------------------
async def _specs(
    services: ServiceService, service: Service, body: DependenciesIn
) -> list[DependencySpec]:
    specs = []
    for i, dep in enumerate(body.dependencies):
        if (dep.service_id is None) == (dep.service is None):
            message = "give either service_id or service (a name), not both or neither"
            raise ValidationFailed(
                message, details=[{"field": f"dependencies[{i}]", "message": message}]
            )
        target_id = dep.service_id
        if target_id is None:
            assert dep.service is not None
            target = await services.find_by_name(service.org_id, dep.service)
            if target is None:
                message = f"no service named {dep.service!r} in this organization"
                raise ValidationFailed(
                    message, details=[{"field": f"dependencies[{i}].service", "message": message}]
                )
            target_id = target.id
        specs.append(DependencySpec(target_id, dep.type, dep.version_constraint))
    return specs


def _graph_response(graph: Graph, format: str) -> Any:
    if format == "mermaid":
        return PlainTextResponse(graph.mermaid(), media_type="text/vnd.mermaid; charset=utf-8")
    return GraphOut.of(graph)


@router.put(
    "/{service_id}/dependencies",
    response_model=GraphOut,
    summary="Replace a service's direct dependencies (services:write); a runtime cycle is 409",
)
async def replace_dependencies(
    service_id: uuid.UUID,
    body: DependenciesIn,
    session: DbSession,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:write", ANY_SCOPE),
) -> Any:
    service = await _service(services, service_id, principal, "services:write")
    deps = DependencyService(session)
    await deps.replace(service, await _specs(services, service, body))
    return GraphOut.of(await deps.graph(service, 1, "dependencies"))


@router.get(
    "/{service_id}/dependencies",
    response_model=GraphOut,
    summary="The dependency graph around a service (services:read)",
    responses={200: {"content": {"text/vnd.mermaid": {}}}},
)
async def dependency_graph(
    service_id: uuid.UUID,
    session: DbSession,
    services: ServiceService = Depends(_services),
    principal: Principal = require("services:read", ANY_SCOPE),
    depth: int = Query(1, ge=1, le=MAX_DEPTH, description="How many levels to follow"),
    direction: Literal["dependencies", "dependents", "both"] = Query("both"),
    format: Literal["json", "mermaid"] = Query("json", description="mermaid: flowchart text"),
) -> Any:
    service = await _service(services, service_id, principal, "services:read")
    graph = await DependencyService(session).graph(service, depth, direction)
    return _graph_response(graph, format)
