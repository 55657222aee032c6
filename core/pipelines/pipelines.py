"""Pipelines of catalog services: creation (from YAML, a JSON object or a template), lookup,
listing, changes and soft deletion. A definition is validated whole before anything is saved."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import Conflict, NotFound, ValidationFailed
from core.identity.organizations import EVERYTHING, Visibility, check_slug, flush_unique
from core.models.catalog import Service
from core.models.pipelines import Pipeline
from core.pagination import Page, PageRequest, paginate
from core.pipelines.definition import definition_from_json, parse_definition
from core.pipelines.templates import render_template
from core.pipelines.triggers import parse_triggers

Source = Literal["inline", "repository"]


@dataclass
class PipelineFields:
    """What a create or an update sets; `None` leaves a field as it is (on update).

    The definition comes from exactly one of `definition` (YAML text or a JSON object) and
    `template` (a template name and its parameters); `source="repository"` reads it from the
    repository at each run's commit instead."""

    name: str | None = None
    description: str | None = None
    source: Source | None = None
    definition: str | dict[str, Any] | None = None
    template: str | None = None
    template_parameters: dict[str, Any] | None = None
    triggers: dict[str, Any] | None = None
    concurrency_limit: int | None = None
    cancel_superseded: bool | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class PipelineFilter:
    service_id: uuid.UUID | None = None
    q: str | None = None
    visible: Visibility = EVERYTHING


def _definition(fields: PipelineFields) -> tuple[str | None, dict[str, Any]] | None:
    """(the YAML as written, the parsed definition) from the fields, or None if not given."""
    if fields.definition is not None and fields.template is not None:
        raise ValidationFailed.on("template", "give either definition or template, not both")
    if fields.template is not None:
        text = render_template(fields.template, fields.template_parameters or {})
    elif isinstance(fields.definition, dict):
        parsed = definition_from_json(fields.definition)
        return yaml.safe_dump(fields.definition, sort_keys=False), parsed.model_dump(mode="json")
    elif fields.definition is not None:
        text = fields.definition
    else:
        return None
    return text, parse_definition(text).model_dump(mode="json")


class PipelineService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, pipeline_id: uuid.UUID) -> Pipeline:
        pipeline = await self.session.get(Pipeline, pipeline_id)
        if pipeline is None or pipeline.is_deleted:
            raise NotFound(f"pipeline {pipeline_id} not found", details={"id": str(pipeline_id)})
        return pipeline

    async def _check_name_free(self, service: Service, name: str, own: uuid.UUID | None) -> None:
        holder = await self.session.scalar(
            select(Pipeline.id).where(
                Pipeline.service_id == service.id,
                Pipeline.name == name,
                Pipeline.deleted_at.is_(None),
            )
        )
        if holder is not None and holder != own:
            raise Conflict(
                f"{service.name} already has a pipeline named {name}",
                details={"name": name, "id": str(holder)},
            )

    def _apply(self, pipeline: Pipeline, service: Service, fields: PipelineFields) -> None:
        if fields.description is not None:
            pipeline.description = fields.description.strip()
        if fields.source is not None:
            pipeline.source = fields.source
        definition = _definition(fields)
        if definition is not None:
            pipeline.definition, pipeline.config = definition
        if pipeline.source == "repository":
            if not service.repository_url:
                raise ValidationFailed.on(
                    "source",
                    f"{service.name} has no repository_url, so the definition cannot be read "
                    "from the repository; set one or give the definition inline",
                )
            if definition is not None:
                raise ValidationFailed.on(
                    "definition", "a repository-sourced pipeline takes no definition"
                )
            pipeline.definition, pipeline.config = None, {}
        elif pipeline.definition is None:
            raise ValidationFailed.on(
                "definition", "an inline pipeline needs a definition or a template"
            )
        if fields.triggers is not None:
            pipeline.triggers = parse_triggers(fields.triggers).model_dump(mode="json")
        if fields.concurrency_limit is not None:
            if fields.concurrency_limit < 0:
                raise ValidationFailed.on(
                    "concurrency_limit", "concurrency_limit cannot be negative"
                )
            pipeline.concurrency_limit = fields.concurrency_limit or None  # 0: no limit
        if fields.cancel_superseded is not None:
            pipeline.cancel_superseded = fields.cancel_superseded
        if fields.enabled is not None:
            pipeline.enabled = fields.enabled

    async def create(self, service: Service, fields: PipelineFields) -> Pipeline:
        if fields.name is None:
            raise ValidationFailed.on("name", "name is required")
        name = check_slug(fields.name, "name")
        await self._check_name_free(service, name, None)
        pipeline = Pipeline(
            service_id=service.id,
            name=name,
            source="inline",
            triggers=parse_triggers({}).model_dump(mode="json"),
        )
        self._apply(pipeline, service, fields)
        self.session.add(pipeline)
        await flush_unique(self.session, f"{service.name} already has a pipeline named {name}")
        await self.audit.record(
            "pipeline.create", "pipeline", pipeline.id, after=snapshot(pipeline)
        )
        return pipeline

    async def update(
        self, pipeline: Pipeline, service: Service, fields: PipelineFields
    ) -> Pipeline:
        before = snapshot(pipeline)
        if fields.name is not None and fields.name != pipeline.name:
            name = check_slug(fields.name, "name")
            await self._check_name_free(service, name, pipeline.id)
            pipeline.name = name
        self._apply(pipeline, service, fields)
        await flush_unique(
            self.session, f"{service.name} already has a pipeline named {pipeline.name}"
        )
        after = snapshot(pipeline)
        if after != before:
            await self.audit.record(
                "pipeline.update", "pipeline", pipeline.id, before=before, after=after
            )
        return pipeline

    async def delete(self, pipeline: Pipeline) -> None:
        before = snapshot(pipeline)
        pipeline.soft_delete()
        await self.session.flush()
        await self.audit.record("pipeline.delete", "pipeline", pipeline.id, before=before)

    def _query(self, f: PipelineFilter) -> Select[Any]:
        stmt = (
            select(Pipeline)
            .join(Service, Service.id == Pipeline.service_id)
            .where(Pipeline.deleted_at.is_(None), Service.deleted_at.is_(None))
        )
        if not f.visible.everything:
            stmt = stmt.where(f.visible.where(Service.org_id, Service.owner_team_id))
        if f.service_id is not None:
            stmt = stmt.where(Pipeline.service_id == f.service_id)
        if f.q:
            stmt = stmt.where(Pipeline.name.contains(f.q.lower(), autoescape=True))
        return stmt

    async def list(self, f: PipelineFilter, page: PageRequest) -> Page[Pipeline]:
        return await paginate(
            self.session, self._query(f), page, order=(Pipeline.name, Pipeline.id)
        )
