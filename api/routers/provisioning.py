"""Provisioning: start a run of an environment's stack (`infrastructure:provision` on the
environment), follow it (its live state by query, its log), approve or reject it
(`infrastructure:approve`; the workflow's validator decides and answers at once), cancel it
before it changes anything, extend a preview environment's time to live, and destroy a
resource (or its whole stack) through a workflow."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.approvals import CancelRequest, Decision, approval_count
from core.audit import AuditService
from core.db.types import utcnow
from core.durations import Duration
from core.environments.approvers import environment_approver as approver
from core.environments.environments import authorized_environment, environment_resource
from core.errors import Conflict, Unavailable, ValidationFailed
from core.identity.organizations import Visibility
from core.infrastructure import provision_control as control
from core.infrastructure.inventory import InventoryService
from core.infrastructure.providers import ProviderService
from core.infrastructure.provision_messages import Extension, ProvisionView
from core.infrastructure.provisioning import ProvisionFilter, ProvisioningService, ProvisionRequest
from core.models.environments import Environment
from core.models.provisioning import Provision
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, authorize

router = APIRouter(prefix="/infrastructure", tags=["provisioning"])


class ProvisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment_id: uuid.UUID
    provider_id: uuid.UUID
    team_id: uuid.UUID = Field(description="The team that owns the stack (its `team` tag)")
    cost_centre: str = Field(max_length=20, examples=["cc-1234"])
    service: str | None = Field(
        None, max_length=63, description="The `service` tag (default: the environment's name)"
    )
    tier: Literal["small", "medium", "large"] = "small"
    region: str | None = Field(None, max_length=63, description="Default: the provider's first")
    ttl: Duration | None = Field(
        None, description="Preview environments only (default 3d): destroyed after it"
    )


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field("", max_length=2000)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field(min_length=1, max_length=2000, description="Why it is rejected")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class ExtendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Duration = Field(description="How much longer, e.g. 24h", examples=["24h"])


class ProvisionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    org_id: uuid.UUID
    environment_id: uuid.UUID
    provider_id: uuid.UUID
    action: str = Field(description="up or destroy")
    status: str
    reason: str | None
    stack: str
    spec: dict[str, Any]
    resource_id: uuid.UUID | None
    requested_by: uuid.UUID | None
    plan: dict[str, Any] = Field(description="The preview: changes by operation, and resources")
    estimate_monthly: Decimal | None
    currency: str
    violations: list[dict[str, Any]]
    approval_reason: str | None
    decisions: list[dict[str, Any]]
    outputs: dict[str, Any]
    expires_at: datetime | None = Field(description="When an approval request expires")
    destroy_at: datetime | None = Field(description="When a preview environment is destroyed")
    workflow_id: str = Field(description="Its workflow in the Temporal UI")
    created_at: datetime
    finished_at: datetime | None


class ProvisionDetailOut(ProvisionOut):
    required_approvals: int = 0
    approvals: int = 0
    waiting_on: str | None = None
    seconds_left: float | None = None
    live: bool = Field(description="Whether the state came from the running workflow")


def _detail(row: Provision, view: ProvisionView | None) -> ProvisionDetailOut:
    base = ProvisionOut.model_validate(row).model_dump()
    approvals = approval_count(row.decisions)
    out = ProvisionDetailOut(**base, approvals=approvals, live=view is not None)
    if view is None:
        return out
    return out.model_copy(
        update={
            "status": view.status,
            "reason": view.reason,
            "approval_reason": view.approval_reason or row.approval_reason,
            "decisions": [d.model_dump(mode="json") for d in view.decisions],
            "required_approvals": view.required_approvals,
            "approvals": view.approvals,
            "waiting_on": view.waiting_on,
            "seconds_left": view.seconds_left,
            "expires_at": view.expires_at or row.expires_at,
        }
    )


async def _authorized(
    session: AsyncSession, provision_id: uuid.UUID, principal: Principal, permission: str
) -> tuple[Provision, Environment]:
    row = await ProvisioningService(session).get(provision_id)
    env = await authorized_environment(session, row.environment_id, principal, permission)
    return row, env


async def _start(session: AsyncSession, state: State, row: Provision) -> ProvisionOut:
    """Commit the run (the workflow's first activity reads it), then start its workflow; when
    Temporal cannot be reached, or the environment's previous workflow is still closing, it is
    recorded `failed` with the reason."""
    labels = await control.run_labels(session, row)  # what the Temporal UI shows of it
    await session.commit()
    try:
        await control.start_run(await state.temporal.client(), row, labels)
    except (Unavailable, Conflict) as exc:
        row.status, row.reason, row.finished_at = "failed", exc.message, utcnow()
        await session.commit()
        raise
    return ProvisionOut.model_validate(row)


@router.post(
    "/provision",
    response_model=ProvisionOut,
    status_code=202,
    summary="Provision an environment's stack (infrastructure:provision on the environment)",
)
async def provision(
    body: ProvisionIn,
    session: DbSession,
    state: State,
    principal: Principal = require("infrastructure:provision", ANY_SCOPE),
) -> ProvisionOut:
    env = await authorized_environment(
        session, body.environment_id, principal, "infrastructure:provision"
    )
    provider = await ProviderService(session).get(body.provider_id)
    row = await ProvisioningService(session).request(
        env,
        provider,
        ProvisionRequest(
            environment_id=env.id,
            provider_id=provider.id,
            team_id=body.team_id,
            cost_centre=body.cost_centre,
            service=body.service,
            tier=body.tier,
            region=body.region,
            ttl=body.ttl,
        ),
        principal,
    )
    return await _start(session, state, row)


@router.delete(
    "/resources/{resource_id}",
    response_model=ProvisionOut,
    status_code=202,
    summary="Destroy a resource and what depends on it, or its whole stack "
    "(infrastructure:provision)",
)
async def destroy_resource(
    resource_id: uuid.UUID,
    session: DbSession,
    state: State,
    scope: Literal["resource", "stack"] = Query(
        "resource", description="`stack`: destroy every resource of the resource's stack"
    ),
    principal: Principal = require("infrastructure:provision", ANY_SCOPE),
) -> ProvisionOut:
    resource, provider = await InventoryService(session).get(resource_id)
    if resource.environment_id is None or resource.stack is None:
        raise Conflict(
            f"{resource.name} is not managed by one of the platform's stacks; "
            "destroy it where it was created"
        )
    if resource.status != "active":
        raise Conflict(f"{resource.name} is {resource.status}")
    env = await authorized_environment(
        session, resource.environment_id, principal, "infrastructure:provision"
    )
    row = await ProvisioningService(session).request_destroy(
        env, provider, principal, resource=resource if scope == "resource" else None
    )
    return await _start(session, state, row)


@router.get("/provisions", response_model=PageOut[ProvisionOut], summary="List provisioning runs")
async def list_provisions(
    request: Request,
    session: DbSession,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None),
    environment_id: uuid.UUID | None = Query(None),
    status: str | None = Query(None, max_length=20),
    page: PageRequest = Depends(page_params),
) -> PageOut[ProvisionOut]:
    f = ProvisionFilter(
        Visibility.of(principal, "infrastructure:read"),
        org_id=org_id,
        environment_id=environment_id,
        status=status,
    )
    found = await ProvisioningService(session).search(f, page)
    return page_response(request, found, ProvisionOut.model_validate)


@router.get(
    "/provisions/{provision_id}",
    response_model=ProvisionDetailOut,
    summary="A provisioning run, with its live state while in flight",
)
async def get_provision(
    provision_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
) -> ProvisionDetailOut:
    row, _ = await _authorized(session, provision_id, principal, "infrastructure:read")
    await session.commit()
    return _detail(row, await control.live_view(await state.temporal.client(), row))


@router.get(
    "/provisions/{provision_id}/logs",
    summary="The run's log (the Pulumi engine's output) as text; `after` continues from a cursor",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def provision_logs(
    provision_id: uuid.UUID,
    session: DbSession,
    response: Response,
    after: int = Query(0, ge=0, description="The X-Log-Cursor of an earlier answer"),
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
) -> PlainTextResponse:
    row, _ = await _authorized(session, provision_id, principal, "infrastructure:read")
    service = ProvisioningService(session)
    out: list[str] = []
    while chunks := await service.log_chunks(row.id, after=after, limit=1000):
        out.extend(str(line.get("text", "")) for chunk in chunks for line in chunk.lines)
        after = chunks[-1].id
    return PlainTextResponse(
        "\n".join(out) + ("\n" if out else ""), headers={"X-Log-Cursor": str(after)}
    )


async def _decide(
    session: AsyncSession,
    state: State,
    provision_id: uuid.UUID,
    principal: Principal,
    decision: Literal["approve", "reject"],
    comment: str,
) -> ProvisionDetailOut:
    row, env = await _authorized(session, provision_id, principal, "infrastructure:read")
    who = await approver(session, principal, env, "infrastructure:approve")
    await session.commit()
    view = await control.decide(
        await state.temporal.client(),
        row,
        Decision(approver=who, decision=decision, comment=comment, via="api"),
    )
    await AuditService(session).record(
        f"provision.{decision}",
        "provision",
        row.id,
        after={"decision": decision, "comment": comment, "status": view.status},
    )
    return _detail(row, view)


@router.post(
    "/provisions/{provision_id}/approve",
    response_model=ProvisionDetailOut,
    summary="Approve (infrastructure:approve on the environment; not your own request)",
)
async def approve(
    provision_id: uuid.UUID,
    session: DbSession,
    state: State,
    body: DecisionIn | None = None,
    principal: Principal = require("infrastructure:approve", ANY_SCOPE),
) -> ProvisionDetailOut:
    comment = body.comment if body else ""
    return await _decide(session, state, provision_id, principal, "approve", comment)


@router.post(
    "/provisions/{provision_id}/reject",
    response_model=ProvisionDetailOut,
    summary="Reject with a comment (infrastructure:approve on the environment); it ends the run",
)
async def reject(
    provision_id: uuid.UUID,
    body: RejectIn,
    session: DbSession,
    state: State,
    principal: Principal = require("infrastructure:approve", ANY_SCOPE),
) -> ProvisionDetailOut:
    return await _decide(session, state, provision_id, principal, "reject", body.comment)


@router.post(
    "/provisions/{provision_id}/cancel",
    response_model=ProvisionDetailOut,
    summary="Cancel a run that has not started changing the stack (infrastructure:provision)",
)
async def cancel(
    provision_id: uuid.UUID,
    session: DbSession,
    state: State,
    body: CancelIn | None = None,
    principal: Principal = require("infrastructure:provision", ANY_SCOPE),
) -> ProvisionDetailOut:
    row, env = await _authorized(session, provision_id, principal, "infrastructure:read")
    authorize(principal, "infrastructure:provision", environment_resource(env))
    who = await approver(session, principal, env, "infrastructure:approve")
    reason = body.reason if body else ""
    await session.commit()
    view = await control.cancel(
        await state.temporal.client(),
        row,
        CancelRequest(user_id=principal.user_id, name=who.name, reason=reason),
    )
    await AuditService(session).record(
        "provision.cancel", "provision", row.id, after={"reason": reason}
    )
    return _detail(row, view)


@router.post(
    "/provisions/{provision_id}/extend",
    response_model=ProvisionOut,
    summary="Extend a preview environment's time to live (infrastructure:provision)",
)
async def extend(
    provision_id: uuid.UUID,
    body: ExtendIn,
    session: DbSession,
    state: State,
    principal: Principal = require("infrastructure:provision", ANY_SCOPE),
) -> ProvisionOut:
    row, env = await _authorized(session, provision_id, principal, "infrastructure:provision")
    if row.destroy_at is None or row.status != "succeeded":
        raise ValidationFailed.on("provision_id", "this run gave the environment no time to live")
    who = await approver(session, principal, env, "infrastructure:approve")
    before = row.destroy_at
    await session.commit()
    view = await control.extend(
        await state.temporal.client(),
        row,
        Extension(by=body.by, user_id=principal.user_id, name=who.name),
    )
    row.destroy_at = view.destroy_at
    await AuditService(session).record(
        "provision.extend",
        "provision",
        row.id,
        before={"destroy_at": before.isoformat()},
        after={"destroy_at": view.destroy_at.isoformat(), "by": str(body.by)},
    )
    return ProvisionOut.model_validate(row)
