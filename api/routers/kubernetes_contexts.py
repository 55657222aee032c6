"""The kubeconfig contexts (clusters) an organization's environments may deploy to: read by
those who may read its environments, set only by a platform admin (organizations:write
platform-wide), audited."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession
from core.environments.kubernetes import (
    CONTEXT_MAX,
    CONTEXTS_MAX,
    PLATFORM_PERMISSION,
    KubernetesContextService,
)
from core.identity.organizations import OrganizationService
from core.security.authorization import ANY_SCOPE, Principal, Resource, authorize

router = APIRouter(prefix="/organizations", tags=["environments"])


class ContextsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contexts: list[str] = Field(
        max_length=CONTEXTS_MAX,
        description=f"The whole allow-list: kubeconfig context names (1-{CONTEXT_MAX} characters)",
        examples=[["prod-eu", "staging-eu"]],
    )


class ContextsOut(BaseModel):
    org_id: uuid.UUID
    contexts: list[str] = Field(description="Sorted; empty: only the worker's default cluster")


@router.get(
    "/{org_id}/kubernetes-contexts",
    response_model=ContextsOut,
    summary="The kubeconfig contexts the organization's environments may use (environments:read)",
)
async def list_contexts(
    org_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("environments:read", ANY_SCOPE),
) -> ContextsOut:
    org = await OrganizationService(session).get(org_id)
    authorize(principal, "environments:read", Resource(organization_id=org.id))
    return ContextsOut(org_id=org.id, contexts=await KubernetesContextService(session).of(org))


@router.put(
    "/{org_id}/kubernetes-contexts",
    response_model=ContextsOut,
    summary=f"Set the organization's allowed kubeconfig contexts ({PLATFORM_PERMISSION} "
    "platform-wide: a platform admin)",
)
async def set_contexts(
    org_id: uuid.UUID,
    body: ContextsIn,
    session: DbSession,
    _: Principal = require(PLATFORM_PERMISSION),
) -> ContextsOut:
    org = await OrganizationService(session).get(org_id)
    contexts = await KubernetesContextService(session).replace(org, body.contexts)
    return ContextsOut(org_id=org.id, contexts=contexts)
