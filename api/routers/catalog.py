"""Backstage interoperability: import `catalog-info.yaml` documents, export a service as one."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.auth import require
from api.bodies import read_capped
from api.deps import DbSession, State
from core.catalog.backstage import (
    BackstageImporter,
    ImportReport,
    dump_yaml,
    export_entity,
    load_documents,
    repository_urls,
)
from core.catalog.services import ServiceService, service_resource
from core.errors import ValidationFailed
from core.git_hosts.bindings import prove
from core.identity.organizations import OrganizationService
from core.identity.teams import team_resource
from core.models.identity import Team
from core.security.authorization import ANY_SCOPE, Principal, authorize

router = APIRouter(tags=["catalog"])

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
MAX_BYTES = 5 * 1024 * 1024


class ImportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID = Field(description="The organization whose teams own the entities")
    content: str = Field(description="One or more YAML documents (--- separated)")


class RelationOut(BaseModel):
    relation: str = Field(description="dependsOn or consumesApis")
    target: str = Field(description="The entity reference as written")
    action: str = Field(description="added or refused")
    reason: str | None
    cycle: list[str] | None = Field(description="The runtime cycle the edge would close")


class EntityOut(BaseModel):
    index: int = Field(description="Position of the document in the input, from 0")
    ref: str | None = Field(description="kind:namespace/name")
    action: str = Field(description="created, updated, unchanged, refused or skipped")
    service_id: uuid.UUID | None
    reasons: list[str] = Field(description="Why it was refused or skipped")
    warnings: list[str]
    relations: list[RelationOut]


class ImportOut(BaseModel):
    summary: dict[str, int]
    entities: list[EntityOut]

    @classmethod
    def of(cls, report: ImportReport) -> ImportOut:
        return cls(
            summary=report.summary(),
            entities=[
                EntityOut(
                    index=e.index,
                    ref=e.ref,
                    action=e.action,
                    service_id=e.service_id,
                    reasons=e.reasons,
                    warnings=e.warnings,
                    relations=[RelationOut(**vars(r)) for r in e.relations],
                )
                for e in report.entities
            ],
        )


async def _import_body(request: Request, org_id: uuid.UUID | None) -> ImportIn:
    """JSON `{org_id, content}`, or the YAML itself with `?org_id=`."""
    raw = await read_capped(request, MAX_BYTES)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        try:
            data: Any = json.loads(raw)
            return ImportIn.model_validate(data if org_id is None else {"org_id": org_id, **data})
        except (json.JSONDecodeError, ValidationError) as exc:
            message = "expected a JSON body {org_id, content}"
            raise ValidationFailed(
                message, details=[{"message": str(exc).splitlines()[0]}]
            ) from None
    if media in YAML_TYPES:
        if org_id is None:
            message = "org_id is required (a query parameter when the body is YAML)"
            raise ValidationFailed(message, details=[{"field": "org_id", "message": message}])
        try:
            return ImportIn(org_id=org_id, content=raw.decode())
        except UnicodeDecodeError:
            raise ValidationFailed("the catalog file is not UTF-8 text") from None
    raise ValidationFailed(
        f"send the catalog as application/yaml (with ?org_id=) or as JSON, not {media or 'nothing'}"
    )


@router.post(
    "/catalog/import",
    response_model=ImportOut,
    summary="Import Backstage catalog-info.yaml documents (services:write on each owner team)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": ImportIn.model_json_schema()},
                "application/yaml": {"schema": {"type": "string"}},
            },
            "required": True,
        }
    },
)
async def import_catalog(
    request: Request,
    session: DbSession,
    state: State,
    principal: Principal = require("services:write", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None, description="With a YAML body"),
) -> ImportOut:
    body = await _import_body(request, org_id)
    documents = load_documents(body.content)
    org = await OrganizationService(session).get(body.org_id)

    def may_write(team: Team) -> bool:
        return principal.can("services:write", team_resource(team))

    urls = repository_urls(documents, state.settings.git_hosts)
    proven = await prove(session, org.id, urls, state.settings)
    importer = BackstageImporter(
        session, org, may_write, git_hosts=state.settings.git_hosts, proven=proven
    )
    return ImportOut.of(await importer.run(documents))


@router.get(
    "/services/{service_id}/catalog-info",
    summary="A service as a Backstage catalog-info.yaml (services:read)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/yaml": {}}}},
)
async def export_catalog_info(
    service_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("services:read", ANY_SCOPE),
) -> PlainTextResponse:
    service = await ServiceService(session).get(service_id)
    authorize(principal, "services:read", service_resource(service))
    entity = await export_entity(session, service)
    return PlainTextResponse(
        dump_yaml(entity),
        media_type="application/yaml",
        headers={"Content-Disposition": f'inline; filename="{service.name}-catalog-info.yaml"'},
    )
