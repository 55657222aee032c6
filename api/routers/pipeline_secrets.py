"""A pipeline's secrets: set (write-only), list by name, delete. Setting and deleting need
`pipelines:secrets` on the service's owner team, listing `pipelines:read`. No response, log
line or audit entry carries a value; the steps get them as environment variables."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Path, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession
from core.catalog.services import authorized_service
from core.models.pipelines import Pipeline, PipelineSecret
from core.pipelines.pipelines import PipelineService
from core.pipelines.secrets import MAX_VALUE_CHARS, PipelineSecretService, check_name
from core.security.authorization import ANY_SCOPE, Principal

router = APIRouter(prefix="/pipelines", tags=["pipeline secrets"])

SecretName = Path(max_length=255, description="An environment variable name, e.g. DEPLOY_TOKEN")


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(
        min_length=1,
        max_length=MAX_VALUE_CHARS,
        description="Write-only: never returned, logged or audited",
    )


class SecretOut(BaseModel):
    """A secret as it is shown: its name and who set it when, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime
    created_by: uuid.UUID | None
    updated_by: uuid.UUID | None = Field(description="Who set the current value")


def _out(secret: PipelineSecret) -> SecretOut:
    return SecretOut(
        name=secret.name,
        created_at=secret.created_at,
        updated_at=secret.updated_at,
        created_by=secret.created_by,
        updated_by=secret.updated_by,
    )


async def _pipeline(
    session: DbSession, pipeline_id: uuid.UUID, principal: Principal, permission: str
) -> Pipeline:
    pipeline = await PipelineService(session).get(pipeline_id)
    await authorized_service(session, pipeline.service_id, principal, permission)
    return pipeline


@router.get(
    "/{pipeline_id}/secrets",
    response_model=list[SecretOut],
    summary="A pipeline's secrets by name, never their values (pipelines:read)",
)
async def list_secrets(
    pipeline_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("pipelines:read", ANY_SCOPE),
) -> list[SecretOut]:
    pipeline = await _pipeline(session, pipeline_id, principal, "pipelines:read")
    return [_out(s) for s in await PipelineSecretService(session).list(pipeline)]


@router.put(
    "/{pipeline_id}/secrets/{name}",
    response_model=SecretOut,
    responses={201: {"model": SecretOut, "description": "Created"}},
    summary="Create or replace a pipeline secret (pipelines:secrets)",
)
async def set_secret(
    pipeline_id: uuid.UUID,
    body: SecretIn,
    session: DbSession,
    name: str = SecretName,
    principal: Principal = require("pipelines:secrets", ANY_SCOPE),
) -> JSONResponse:
    check_name(name)
    pipeline = await _pipeline(session, pipeline_id, principal, "pipelines:secrets")
    change = await PipelineSecretService(session).set(pipeline, name, body.value)
    await session.commit()
    return JSONResponse(
        _out(change.secret).model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED if change.created else status.HTTP_200_OK,
    )


@router.delete(
    "/{pipeline_id}/secrets/{name}",
    status_code=204,
    summary="Delete a pipeline secret (pipelines:secrets)",
)
async def delete_secret(
    pipeline_id: uuid.UUID,
    session: DbSession,
    name: str = SecretName,
    principal: Principal = require("pipelines:secrets", ANY_SCOPE),
) -> Response:
    pipeline = await _pipeline(session, pipeline_id, principal, "pipelines:secrets")
    await PipelineSecretService(session).delete(pipeline, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
