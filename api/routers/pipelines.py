"""Pipelines of catalog services. Writes need `pipelines:write` on the service's owner team;
reads `pipelines:read`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.catalog.services import authorized_service
from core.db.compensation import before_image, commit_then_call
from core.identity.organizations import Visibility
from core.models.catalog import Service
from core.models.pipelines import Pipeline
from core.pagination import PageRequest
from core.pipelines.pipelines import PipelineFields, PipelineFilter, PipelineService
from core.pipelines.schedules import sync_pipeline_schedule
from core.pipelines.templates import PipelineTemplate, list_templates
from core.security.authorization import ANY_SCOPE, Principal

router = APIRouter(prefix="/pipelines", tags=["pipelines"])


class TemplateRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(examples=["python"])
    parameters: dict[str, Any] = Field(default_factory=dict)


class PipelineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_id: uuid.UUID
    name: str = Field(max_length=63, examples=["ci"])
    description: str = Field("", max_length=10_000)
    source: Literal["inline", "repository"] = Field(
        "inline", description="repository: read .idp/pipeline.yaml at each run's commit"
    )
    definition: str | dict[str, Any] | None = Field(
        None, description="The pipeline YAML (errors name its lines), or the same as an object"
    )
    template: TemplateRef | None = Field(None, description="Instead of a definition")
    triggers: dict[str, Any] = Field(default_factory=dict)
    concurrency_limit: int | None = Field(None, ge=0, description="Runs at once; 0 or null: any")
    cancel_superseded: bool = Field(
        False, description="A new run of a branch cancels that branch's older running runs"
    )
    enabled: bool = True


class PipelinePut(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=63)
    description: str | None = Field(None, max_length=10_000)
    source: Literal["inline", "repository"] | None = None
    definition: str | dict[str, Any] | None = None
    template: TemplateRef | None = None
    triggers: dict[str, Any] | None = None
    concurrency_limit: int | None = Field(None, ge=0)
    cancel_superseded: bool | None = None
    enabled: bool | None = None


class PipelineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    service_id: uuid.UUID
    name: str
    description: str
    source: str
    definition: str | None = Field(description="The YAML as written (inline pipelines)")
    config: dict[str, Any] = Field(description="The parsed definition")
    triggers: dict[str, Any]
    concurrency_limit: int | None
    cancel_superseded: bool
    enabled: bool
    created_at: datetime
    updated_at: datetime
    created_by: uuid.UUID | None
    updated_by: uuid.UUID | None


def _fields(body: PipelineIn | PipelinePut) -> PipelineFields:
    data = body.model_dump(
        exclude={"service_id", "template"}, exclude_unset=isinstance(body, PipelinePut)
    )
    template = body.template
    return PipelineFields(
        **{k: v for k, v in data.items() if v is not None},
        template=template.name if template else None,
        template_parameters=template.parameters if template else None,
    )


def _has_cron(triggers: dict[str, Any] | None) -> bool:
    return bool((triggers or {}).get("cron"))


async def _sync_schedule(
    session: AsyncSession,
    state: State,
    pipeline: Pipeline,
    had_cron: bool,
    before: dict[str, Any] | None,
) -> None:
    """Keep the cron schedule in step: the change is committed, then the schedule synced; if
    Temporal cannot be reached the change is reverted and the answer is a 503, so nothing
    is saved. Pipelines without cron triggers never need Temporal here."""
    if not (had_cron or _has_cron(pipeline.triggers)):
        return

    async def sync() -> None:
        await sync_pipeline_schedule(await state.temporal.client(), pipeline)

    await commit_then_call(session, sync, entity=pipeline, before=before, resource_type="pipeline")


async def _pipeline(
    session: DbSession, pipeline_id: uuid.UUID, principal: Principal, permission: str
) -> tuple[Pipeline, Service]:
    pipeline = await PipelineService(session).get(pipeline_id)
    service = await authorized_service(session, pipeline.service_id, principal, permission)
    return pipeline, service


@router.get("", response_model=PageOut[PipelineOut], summary="List pipelines (pipelines:read)")
async def list_pipelines(
    request: Request,
    session: DbSession,
    principal: Principal = require("pipelines:read", ANY_SCOPE),
    service_id: uuid.UUID | None = Query(None),
    q: str | None = Query(None, max_length=200, description="Part of the name"),
    page: PageRequest = Depends(page_params),
) -> PageOut[PipelineOut]:
    f = PipelineFilter(service_id, q, Visibility.of(principal, "pipelines:read"))
    found = await PipelineService(session).list(f, page)
    return page_response(request, found, PipelineOut.model_validate)


@router.post(
    "",
    response_model=PipelineOut,
    status_code=201,
    summary="Create a pipeline (pipelines:write on the service's owner team)",
)
async def create_pipeline(
    body: PipelineIn,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:write", ANY_SCOPE),
) -> PipelineOut:
    service = await authorized_service(session, body.service_id, principal, "pipelines:write")
    pipeline = await PipelineService(session).create(service, _fields(body))
    await _sync_schedule(session, state, pipeline, had_cron=False, before=None)
    return PipelineOut.model_validate(pipeline)


@router.get(
    "/templates",
    response_model=list[PipelineTemplate],
    summary="The pipeline templates and their parameters (pipelines:read)",
)
async def pipeline_templates(
    principal: Principal = require("pipelines:read", ANY_SCOPE),
) -> list[PipelineTemplate]:
    return list(list_templates().values())


@router.get("/{pipeline_id}", response_model=PipelineOut, summary="A pipeline (pipelines:read)")
async def get_pipeline(
    pipeline_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("pipelines:read", ANY_SCOPE),
) -> PipelineOut:
    pipeline, _ = await _pipeline(session, pipeline_id, principal, "pipelines:read")
    return PipelineOut.model_validate(pipeline)


@router.put(
    "/{pipeline_id}", response_model=PipelineOut, summary="Change a pipeline (pipelines:write)"
)
async def update_pipeline(
    pipeline_id: uuid.UUID,
    body: PipelinePut,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:write", ANY_SCOPE),
) -> PipelineOut:
    pipeline, service = await _pipeline(session, pipeline_id, principal, "pipelines:write")
    had_cron, before = _has_cron(pipeline.triggers), before_image(pipeline)
    updated = await PipelineService(session).update(pipeline, service, _fields(body))
    await _sync_schedule(session, state, updated, had_cron, before)
    return PipelineOut.model_validate(updated)


@router.delete(
    "/{pipeline_id}", status_code=204, summary="Delete a pipeline (soft; pipelines:write)"
)
async def delete_pipeline(
    pipeline_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("pipelines:write", ANY_SCOPE),
) -> Response:
    pipeline, _ = await _pipeline(session, pipeline_id, principal, "pipelines:write")
    had_cron, before = _has_cron(pipeline.triggers), before_image(pipeline)
    await PipelineService(session).delete(pipeline)
    await _sync_schedule(session, state, pipeline, had_cron, before)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
