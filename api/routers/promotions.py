"""Promotions: request one (`POST /environments/{id}/deploy`, `environments:deploy`) or a roll
back (`POST /environments/{id}/rollback`), list and read them (`promotions:read`, the live state
by query while in flight), approve or reject (`promotions:approve`; the workflow's validator
decides and answers at once), and cancel (`environments:deploy`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.approvals import CancelRequest, Decision, approval_count
from core.audit import AuditService
from core.catalog.services import authorized_service
from core.db.types import utcnow
from core.environments.approvers import environment_approver as approver
from core.environments.environments import authorized_environment, environment_resource
from core.errors import Unavailable
from core.identity.organizations import Visibility
from core.models.environments import Environment
from core.models.promotions import Promotion
from core.pagination import PageRequest
from core.promotions import control
from core.promotions.messages import PromotionKind, PromotionView
from core.promotions.promotions import PromotionFilter, PromotionService
from core.security.authorization import ANY_SCOPE, Principal, authorize

router = APIRouter(tags=["promotions"])


class DeployIn(BaseModel):
    """The branch is not the caller's to say: it is the version's provenance (the pipeline run
    that built it), so a body that still names one is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")
    service_id: uuid.UUID
    version: str = Field(max_length=100, examples=["1.4.2"])
    comment: str = Field("", max_length=2000, description="A note for the approvers")

    @model_validator(mode="before")
    @classmethod
    def _no_branch(cls, data: Any) -> Any:
        if isinstance(data, dict) and "branch" in data:
            raise PydanticCustomError(
                "branch_not_accepted",
                "branch is not accepted: it is read from the version's provenance (the "
                "pipeline run that built it; see the version's pipeline_run_id)",
            )
        return data


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_id: uuid.UUID
    version: str | None = Field(
        None, max_length=100, description="Default: the version that ran before the current one"
    )
    comment: str = Field("", max_length=2000)


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field("", max_length=2000)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field(min_length=1, max_length=2000, description="Why it is rejected")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class PromotionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    org_id: uuid.UUID
    environment_id: uuid.UUID
    service_id: uuid.UUID
    version_id: uuid.UUID
    version: str
    previous_version: str | None
    kind: str
    status: str
    reason: str | None
    requested_by: uuid.UUID | None
    branch: str | None = Field(description="From the version's provenance; null when unknown")
    git_sha: str | None = Field(description="The commit its pipeline run built")
    pipeline_run_id: uuid.UUID | None = Field(description="The pipeline run that built it")
    provenance: str = Field(
        description='Where the branch comes from, e.g. "main (from pipeline '
        'run …)" or "no provenance (…)"'
    )
    comment: str
    required_approvals: int
    decisions: list[dict[str, Any]]
    expires_at: datetime | None
    finished_at: datetime | None
    workflow_id: str
    created_at: datetime
    updated_at: datetime


class PromotionDetailOut(PromotionOut):
    approvals: int = Field(description="Distinct approvals so far")
    waiting_on: str | None = Field(None, description="Whose decision, or what, it waits for")
    seconds_left: float | None = Field(None, description="Before the approval request expires")
    wait_until: datetime | None = Field(None, description="Soak time or freeze window end")
    live: bool = Field(description="Whether the state came from the running workflow")


def _detail(row: Promotion, view: PromotionView | None) -> PromotionDetailOut:
    base = PromotionOut.model_validate(row).model_dump()
    approvals = approval_count(row.decisions)
    out = PromotionDetailOut(**base, approvals=approvals, live=view is not None)
    if view is None:
        return out
    return out.model_copy(
        update={
            "status": view.status,
            "reason": view.reason,
            "decisions": [d.model_dump(mode="json") for d in view.decisions],
            "approvals": view.approvals,
            "waiting_on": view.waiting_on,
            "seconds_left": view.seconds_left,
            "wait_until": view.wait_until,
            "expires_at": view.expires_at or row.expires_at,
        }
    )


async def _authorized(
    session: AsyncSession, promotion_id: uuid.UUID, principal: Principal, permission: str
) -> tuple[Promotion, Environment]:
    row = await PromotionService(session).get(promotion_id)
    env = await authorized_environment(session, row.environment_id, principal, permission)
    return row, env


async def _request(
    session: AsyncSession,
    state: State,
    env_id: uuid.UUID,
    principal: Principal,
    kind: PromotionKind,
    body: DeployIn | RollbackIn,
) -> PromotionOut:
    """Record the promotion, commit (the workflow's first activity reads it), then start its
    workflow; when Temporal cannot be reached it is recorded `failed` with the reason."""
    env = await authorized_environment(session, env_id, principal, "environments:deploy")
    service = await authorized_service(session, body.service_id, principal, "services:read")
    promotions = PromotionService(session)
    if isinstance(body, RollbackIn):
        target = await promotions.rollback_version(env, service, body.version)
    else:
        target = await promotions.version(service, body.version)
    row = await promotions.request(env, service, target, principal, kind=kind, comment=body.comment)
    await session.commit()
    try:
        await control.start_promotion(await state.temporal.client(), row, session=session)
    except Unavailable as exc:
        row.status, row.reason, row.finished_at = "failed", exc.message, utcnow()
        await session.commit()
        raise
    return PromotionOut.model_validate(row)


@router.post(
    "/environments/{env_id}/deploy",
    response_model=PromotionOut,
    status_code=202,
    summary="Promote a service version into this environment (environments:deploy)",
)
async def deploy(
    env_id: uuid.UUID,
    body: DeployIn,
    session: DbSession,
    state: State,
    principal: Principal = require("environments:deploy", ANY_SCOPE),
) -> PromotionOut:
    return await _request(session, state, env_id, principal, "promote", body)


@router.post(
    "/environments/{env_id}/rollback",
    response_model=PromotionOut,
    status_code=202,
    summary="Put a version that ran before back into this environment (environments:deploy)",
)
async def rollback(
    env_id: uuid.UUID,
    body: RollbackIn,
    session: DbSession,
    state: State,
    principal: Principal = require("environments:deploy", ANY_SCOPE),
) -> PromotionOut:
    return await _request(session, state, env_id, principal, "rollback", body)


@router.get("/promotions", response_model=PageOut[PromotionOut], summary="List promotions")
async def list_promotions(
    request: Request,
    session: DbSession,
    principal: Principal = require("promotions:read", ANY_SCOPE),
    environment_id: uuid.UUID | None = Query(None),
    service_id: uuid.UUID | None = Query(None),
    status: str | None = Query(None, max_length=20),
    kind: PromotionKind | None = Query(None),
    requested_by: uuid.UUID | None = Query(None),
    page: PageRequest = Depends(page_params),
) -> PageOut[PromotionOut]:
    f = PromotionFilter(
        Visibility.of(principal, "promotions:read"),
        environment_id=environment_id,
        service_id=service_id,
        status=status,
        kind=kind,
        requested_by=requested_by,
    )
    found = await PromotionService(session).search(f, page)
    return page_response(request, found, PromotionOut.model_validate)


@router.get(
    "/promotions/{promotion_id}",
    response_model=PromotionDetailOut,
    summary="A promotion, with its live state while in flight",
)
async def get_promotion(
    promotion_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("promotions:read", ANY_SCOPE),
) -> PromotionDetailOut:
    row, _ = await _authorized(session, promotion_id, principal, "promotions:read")
    await session.commit()
    return _detail(row, await control.live_view(await state.temporal.client(), row))


async def _decide(
    session: AsyncSession,
    state: State,
    promotion_id: uuid.UUID,
    principal: Principal,
    decision: Literal["approve", "reject"],
    comment: str,
) -> PromotionDetailOut:
    row, env = await _authorized(session, promotion_id, principal, "promotions:read")
    who = await approver(session, principal, env)
    await session.commit()
    view = await control.decide(
        await state.temporal.client(),
        row,
        Decision(approver=who, decision=decision, comment=comment, via="api"),
    )
    await AuditService(session).record(
        f"promotion.{decision}",
        "promotion",
        row.id,
        after={"decision": decision, "comment": comment, "via": "api", "status": view.status},
    )
    return _detail(row, view)


@router.post(
    "/promotions/{promotion_id}/approve",
    response_model=PromotionDetailOut,
    summary="Approve (promotions:approve on the environment; not your own request)",
)
async def approve(
    promotion_id: uuid.UUID,
    session: DbSession,
    state: State,
    body: DecisionIn | None = None,
    principal: Principal = require("promotions:approve", ANY_SCOPE),
) -> PromotionDetailOut:
    comment = body.comment if body else ""
    return await _decide(session, state, promotion_id, principal, "approve", comment)


@router.post(
    "/promotions/{promotion_id}/reject",
    response_model=PromotionDetailOut,
    summary="Reject with a comment (promotions:approve on the environment); it ends the promotion",
)
async def reject(
    promotion_id: uuid.UUID,
    body: RejectIn,
    session: DbSession,
    state: State,
    principal: Principal = require("promotions:approve", ANY_SCOPE),
) -> PromotionDetailOut:
    return await _decide(session, state, promotion_id, principal, "reject", body.comment)


@router.post(
    "/promotions/{promotion_id}/cancel",
    response_model=PromotionDetailOut,
    summary="Cancel a promotion that has not started deploying (environments:deploy)",
)
async def cancel(
    promotion_id: uuid.UUID,
    session: DbSession,
    state: State,
    body: CancelIn | None = None,
    principal: Principal = require("environments:deploy", ANY_SCOPE),
) -> PromotionDetailOut:
    row, env = await _authorized(session, promotion_id, principal, "promotions:read")
    authorize(principal, "environments:deploy", environment_resource(env))
    who = await approver(session, principal, env)
    reason = body.reason if body else ""
    await session.commit()
    view = await control.cancel(
        await state.temporal.client(),
        row,
        CancelRequest(user_id=principal.user_id, name=who.name, reason=reason),
    )
    await AuditService(session).record(
        "promotion.cancel", "promotion", row.id, after={"reason": reason}
    )
    return _detail(row, view)
